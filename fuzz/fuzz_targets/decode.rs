//! Feeds arbitrary bytes to the decoder for each protocol version and to `decode_connect`.
//! Nothing may panic, and every packet the decoder accepts must re-encode (with an exact
//! `encoded_len`) to a frame that decodes to the same packet.

#![no_main]

use beamq_protocol::codec::{decode, decode_connect, encode, encoded_len};
use beamq_protocol::{BytesMut, DecodeError, Packet, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// A small limit, so the size check runs against real frames too.
const SMALL_LIMIT: u32 = 64;

fn round_trip(p: &Packet, v: ProtocolVersion) {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).expect("a decoded packet must encode");
    assert_eq!(encoded_len(p, v), Ok(buf.len()), "encoded_len for {p:?}");
    let again = decode(&mut buf, v, u32::MAX)
        .expect("a re-encoded packet must decode")
        .expect("a re-encoded packet is a whole frame");
    assert!(buf.is_empty(), "re-encoded frame not fully consumed");
    assert_eq!(&again, p, "round trip changed the packet");
}

fuzz_target!(|data: &[u8]| {
    for v in VERSIONS {
        // Every frame in the input, as a reader would decode a socket buffer.
        let mut buf = BytesMut::from(data);
        while let Ok(Some(p)) = decode(&mut buf, v, u32::MAX) {
            round_trip(&p, v);
        }

        // With a limit: whatever is accepted fits in it.
        let mut buf = BytesMut::from(data);
        let before = buf.len();
        match decode(&mut buf, v, SMALL_LIMIT) {
            Ok(Some(_)) => assert!(before - buf.len() <= SMALL_LIMIT as usize),
            Ok(None) => assert_eq!(buf.len(), before, "need-more must not consume"),
            Err(DecodeError::PacketTooLarge { size, max }) => {
                assert!(size > max as usize);
            }
            Err(_) => {}
        }
    }

    let mut buf = BytesMut::from(data);
    if let Ok(Some(c)) = decode_connect(&mut buf, u32::MAX) {
        let v = c.protocol;
        round_trip(&Packet::Connect(Box::new(c)), v);
    }
});
