//! A bounds-checked cursor over one frame's body.
//!
//! The decoder only ever sees a complete frame (the fixed header told it how long the frame is),
//! so running out of bytes here is never "need more input": it means a field claims more bytes
//! than the Remaining Length left for it, which is a Malformed Packet. Every read returns a
//! typed error instead of panicking, and strings and binary fields are `Bytes` slices of the
//! frame, so nothing is copied.

use bytes::{Buf, Bytes};
use bytestring::ByteString;

use crate::error::DecodeError;

/// Reads big-endian integers, variable byte integers, UTF-8 strings and binary data from a
/// frame body. `ctx` names the packet in error messages.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
    ctx: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, ctx: &'static str) -> Reader {
        Reader { buf, pos: 0, ctx }
    }

    /// The packet name this reader reports errors against.
    pub(crate) fn ctx(&self) -> &'static str {
        self.ctx
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn short(&self) -> DecodeError {
        DecodeError::Malformed(self.ctx, "field runs past the remaining length")
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.short());
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A Variable Byte Integer (§1.5.5): at most four bytes. A fourth byte with its continuation
    /// bit set is malformed, not a request for more input, because the frame is complete.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let rest = &self.buf[self.pos..];
        match read_varint(rest) {
            VarInt::Value(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(self.short()),
            VarInt::TooLong => Err(DecodeError::Malformed(
                self.ctx,
                "variable byte integer longer than four bytes",
            )),
        }
    }

    /// A length-prefixed slice (Binary Data, §1.5.6), shared with the frame.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        if self.remaining() < len {
            return Err(self.short());
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// A UTF-8 Encoded String (§1.5.4): well-formed UTF-8 (which already excludes the encoded
    /// surrogates U+D800..U+DFFF) and no U+0000 [MQTT-1.5.4-1, MQTT-1.5.4-2].
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        to_string(raw, field)
    }

    /// Everything left: the PUBLISH payload, or the list part of SUBACK/UNSUBACK.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// Everything left, consuming the reader: the PUBLISH payload without a reference-count
    /// round trip.
    pub(crate) fn into_rest(self) -> Bytes {
        let mut buf = self.buf;
        buf.advance(self.pos);
        buf
    }

    /// Splits off the next `len` bytes as their own reader (a property block).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader, DecodeError> {
        if self.remaining() < len {
            return Err(self.short());
        }
        let sub = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(Reader::new(sub, self.ctx))
    }

    /// Fails when bytes are left after the last field: lengths inside the packet must agree
    /// with the Remaining Length.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                self.ctx,
                "bytes left over after the last field",
            ))
        }
    }
}

/// Validates a UTF-8 Encoded String held in `raw` without copying it.
fn to_string(raw: Bytes, field: &'static str) -> Result<ByteString, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::InvalidUtf8(field));
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8(field))
}

/// Whether `b` holds U+0000, `+` or `#`: the bytes a PUBLISH topic must not contain. Topics are
/// scanned on every PUBLISH, so this tests eight bytes at a time (the classic "has a zero byte"
/// word trick, once per searched byte) instead of one.
pub(crate) fn has_nul_or_wildcard(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Nonzero exactly when some byte of `x` is zero.
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI != 0;
    let plus = LO * u64::from(b'+');
    let hash = LO * u64::from(b'#');
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if has_zero(x) || has_zero(x ^ plus) || has_zero(x ^ hash) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| matches!(c, 0 | b'+' | b'#'))
}

/// Outcome of reading a Variable Byte Integer from a slice that may be incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and the number of bytes it took.
    Value(u32, usize),
    /// The slice ended while the continuation bit was still set.
    Incomplete,
    /// A fourth byte had its continuation bit set [MQTT-1.5.5-1 allows at most four].
    TooLong,
}

/// Reads a Variable Byte Integer. Non-minimal encodings (`0x80 0x00`) are accepted: the spec
/// asks senders to be minimal but a receiver loses nothing by tolerating them.
pub(crate) fn read_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return VarInt::Value(value, i + 1);
        }
    }
    VarInt::TooLong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_from_the_spec_table() {
        // §1.5.5 table: the first and last value of each length.
        let cases: &[(&[u8], u32)] = &[
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            assert_eq!(read_varint(bytes), VarInt::Value(*value, bytes.len()));
        }
    }

    #[test]
    fn varint_incomplete_and_too_long() {
        assert_eq!(read_varint(&[]), VarInt::Incomplete);
        assert_eq!(read_varint(&[0x80]), VarInt::Incomplete);
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF]), VarInt::Incomplete);
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF, 0x80]), VarInt::TooLong);
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::TooLong
        );
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8_mqtt_1_5_4() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, b'a', 0]), "T");
        assert_eq!(r.string("s"), Err(DecodeError::InvalidUtf8("s")));
        // An encoded surrogate (U+D800 as ED A0 80) is not well-formed UTF-8 [MQTT-1.5.4-1].
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]), "T");
        assert_eq!(r.string("s"), Err(DecodeError::InvalidUtf8("s")));
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', b'/', b'b']), "T");
        assert_eq!(r.string("s").as_deref(), Ok("a/b"));
        assert!(r.is_empty());
    }

    #[test]
    fn word_scan_finds_every_position() {
        for len in 0..20 {
            assert!(!has_nul_or_wildcard(&vec![b'a'; len]));
            for pos in 0..len {
                for bad in [0u8, b'+', b'#'] {
                    let mut v = vec![b'a'; len];
                    v[pos] = bad;
                    assert!(has_nul_or_wildcard(&v), "{len} {pos} {bad}");
                }
            }
        }
        // Bytes next to the searched ones, and high bytes, are not matches.
        assert!(!has_nul_or_wildcard(
            b"\x01\x2A\x2C\x22\x24\xFF\x80\x81\xAB\xA3"
        ));
    }

    #[test]
    fn reads_past_the_end_are_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a']), "T");
        assert!(matches!(r.string("s"), Err(DecodeError::Malformed("T", _))));
        let mut r = Reader::new(Bytes::from_static(&[1]), "T");
        assert!(matches!(r.u16(), Err(DecodeError::Malformed("T", _))));
    }
}
