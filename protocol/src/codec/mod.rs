//! The MQTT wire format, as plain functions from bytes to [`Packet`]s and back.
//!
//! Sans-I/O: the caller owns the socket and the buffer. [`decode()`] looks at the front of a
//! `BytesMut` the caller keeps appending to; an incomplete frame is `Ok(None)` and stays in the
//! buffer untouched, so a read that is cancelled half-way loses nothing. A complete frame is split
//! off and frozen once, and every string and binary field of the packet is a slice of it.
//!
//! One decoder serves 3.1, 3.1.1 and 5.0: the caller passes the version negotiated by CONNECT
//! (which [`decode_connect`] reads with its own version), and the decoder enforces every rule the
//! spec states for a single packet, returning a typed [`DecodeError`] for each. Rules that need
//! connection state (topic aliases, packet-id reuse, who may send what) belong to the state
//! machine.
//!
//! Layout: `read` is a bounds-checked cursor over a frame, `properties` holds the v5 property
//! tables and the one generic property reader and writer, `decode` and `encode` do the packets.

mod decode;
mod encode;
mod properties;
mod read;

#[cfg(test)]
mod tests;

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};
use crate::packet::{Connect, Packet, ProtocolVersion, Publish};

pub use decode::reason_code_allowed;

/// The largest Remaining Length a Variable Byte Integer can express (§1.5.5, §2.1.4).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: more bytes are needed; `buf` is unchanged.
/// - `Ok(Some(p))`: the frame's bytes were removed from `buf`; `p`'s strings and binary fields
///   share the frame's memory.
/// - `Err(e)`: the stream is broken and the connection must be closed (after a v5 DISCONNECT
///   with [`DecodeError::reason_code`]). Do not decode from `buf` again: how much of it was
///   consumed is unspecified.
///
/// `max_packet_size` limits the whole packet (fixed header included); a frame over it is
/// rejected as soon as its fixed header is readable, before the body arrives. Pass `u32::MAX`
/// for no limit beyond the protocol's own. `version` selects the 3.x or 5.0 layouts; a CONNECT
/// is decoded by its own protocol level whatever `version` says.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    decode::decode(buf, version, max_packet_size)
}

/// Decodes the first packet of a server-side connection, which must be CONNECT [MQTT-3.1.0-1];
/// anything else is [`DecodeError::FirstPacketNotConnect`], reported from the first byte alone.
/// Same buffer contract as [`decode()`].
///
/// The protocol name and level are checked before the rest of the packet, so a client speaking
/// an unknown level gets [`DecodeError::UnsupportedProtocolLevel`] (and can be answered with
/// CONNACK 0x01 / 0x84) even if the rest of its CONNECT is laid out differently.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    decode::decode_connect(buf, max_packet_size)
}

/// Appends the encoding of `packet` for `version` to `buf`, reserving the space once.
///
/// Before v5 properties are left out and reason codes mapped to 3.1.1 return codes
/// ([`ReasonCode::to_v3_connack`](crate::ReasonCode::to_v3_connack),
/// [`ReasonCode::to_v3_suback`](crate::ReasonCode::to_v3_suback)); v5 acknowledgements use the
/// short forms when the reason is Success and there are no properties. A CONNECT is encoded for
/// its own `protocol`. On error nothing is written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let plan = encode::plan(packet, version)?;
    encode::write(packet, version, &plan, buf);
    Ok(())
}

/// The exact number of bytes [`encode()`] would append, for Maximum Packet Size checks before
/// sending. Fails exactly when `encode` would.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    Ok(encode::plan(packet, version)?.total())
}

/// [`encode()`] for a PUBLISH without wrapping it in a [`Packet`]: the broker's hot path, where
/// the message is shared and only borrowed.
pub fn encode_publish(
    publish: &Publish,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let plan = encode::publish_plan(publish, version)?;
    buf.reserve(plan.total());
    encode::write_publish(publish, version, &plan, buf);
    Ok(())
}

/// Bytes the Variable Byte Integer encoding of `v` takes (1 to 4; `v` at most 268,435,455).
pub fn varint_len(v: usize) -> usize {
    encode::varint_len(v)
}

/// Appends `v` as a Variable Byte Integer (for tools that write frames by hand, like the load
/// generator).
pub fn put_varint(buf: &mut BytesMut, v: usize) {
    encode::put_varint(buf, v)
}

/// [`encoded_len`] for a PUBLISH.
pub fn publish_encoded_len(
    publish: &Publish,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    Ok(encode::publish_plan(publish, version)?.total())
}
