//! Spec vectors for every packet in both layouts, and every malformed case the decoder must
//! reject, each asserting the exact error. Bodies are written out byte by byte from the spec's
//! figures; `frame` only prepends the fixed header.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::*;
use crate::error::DecodeError as E;
use crate::packet::*;
use crate::reason::ReasonCode;

const V31: ProtocolVersion = ProtocolVersion::V3_1;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// First byte, Remaining Length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn dec(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), version, u32::MAX)
}

fn err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    match dec(bytes, version) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02X?}, got {other:?}"),
    }
}

fn enc(p: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, version, &mut buf).expect("encodable");
    assert_eq!(
        encoded_len(p, version),
        Ok(buf.len()),
        "encoded_len of {p:?}"
    );
    buf.to_vec()
}

/// Every strict prefix of a valid frame is "need more" and leaves the buffer as it was.
fn assert_prefixes_need_more(bytes: &[u8], version: ProtocolVersion) {
    for i in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..i]);
        assert_eq!(
            decode(&mut buf, version, u32::MAX),
            Ok(None),
            "prefix of {i} bytes"
        );
        assert_eq!(&buf[..], &bytes[..i], "prefix of {i} bytes was touched");
    }
}

/// `bytes` decodes to `packet` (consuming exactly the frame), `packet` encodes to `bytes`, and
/// every prefix needs more input.
fn vector(bytes: &[u8], version: ProtocolVersion, packet: Packet) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(
        decode(&mut buf, version, u32::MAX),
        Ok(Some(packet.clone()))
    );
    assert!(buf.is_empty(), "frame not fully consumed");
    assert_eq!(enc(&packet, version), bytes, "encoding of {packet:?}");
    assert_prefixes_need_more(bytes, version);
}

/// `bytes` decodes to `packet`, but `packet` encodes to another (canonical) form.
fn decodes_to(bytes: &[u8], version: ProtocolVersion, packet: Packet) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(decode(&mut buf, version, u32::MAX), Ok(Some(packet)));
    assert!(buf.is_empty());
}

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

// ---------------------------------------------------------------------------------------------
// Fixed header

#[test]
fn packet_type_0_is_reserved() {
    assert_eq!(err(&[0x00, 0x00], V311), E::ReservedPacketType(0));
    assert_eq!(err(&[0x00], V5), E::ReservedPacketType(0));
}

#[test]
fn packet_type_15_is_reserved_before_v5() {
    assert_eq!(err(&[0xF0, 0x00], V311), E::ReservedPacketType(15));
    assert_eq!(err(&[0xF0, 0x00], V31), E::ReservedPacketType(15));
    assert_eq!(
        dec(&[0xF0, 0x00], V5),
        Ok(Some(Packet::Auth(Auth::default())))
    );
}

#[test]
fn fixed_header_flags_mqtt_2_2_2_1_and_2_and_5_0_mqtt_2_1_3_1() {
    let cases: &[(u8, &[u8])] = &[
        (0x11, &[]),                    // CONNECT
        (0x21, &[0, 0]),                // CONNACK
        (0x48, &[0, 1]),                // PUBACK
        (0x52, &[0, 1]),                // PUBREC
        (0x60, &[0, 1]),                // PUBREL must be 0b0010
        (0x63, &[0, 1]),                // PUBREL
        (0x71, &[0, 1]),                // PUBCOMP
        (0x80, &[0, 1, 0, 1, b'a', 0]), // SUBSCRIBE must be 0b0010
        (0x93, &[0, 1, 0]),             // SUBACK
        (0xA0, &[0, 1, 0, 1, b'a']),    // UNSUBSCRIBE must be 0b0010
        (0xB4, &[0, 1]),                // UNSUBACK
        (0xC1, &[]),                    // PINGREQ
        (0xD2, &[]),                    // PINGRESP
        (0xE8, &[]),                    // DISCONNECT
    ];
    for &(first, body) in cases {
        let f = frame(first, body);
        assert!(
            matches!(err(&f, V311), E::InvalidFixedHeaderFlags { flags, .. } if flags == first & 0x0F),
            "{first:#04X}"
        );
    }
    assert!(matches!(
        err(&frame(0xF1, &[]), V5),
        E::InvalidFixedHeaderFlags {
            packet: "AUTH",
            flags: 1
        }
    ));
}

#[test]
fn flags_are_rejected_from_the_first_byte_alone() {
    assert!(matches!(
        err(&[0x60], V311),
        E::InvalidFixedHeaderFlags { .. }
    ));
    assert_eq!(err(&[0x36], V311), E::InvalidQoS("PUBLISH"));
}

#[test]
fn mqtt_3_1_allows_dup_on_pubrel_subscribe_unsubscribe() {
    // 3.1 §2.1: these three carry QoS 1 and DUP on retransmission.
    let sub = frame(0x8A, &[0, 7, 0, 1, b'a', 1]);
    assert!(matches!(dec(&sub, V31), Ok(Some(Packet::Subscribe(_)))));
    assert!(matches!(
        err(&sub, V311),
        E::InvalidFixedHeaderFlags {
            packet: "SUBSCRIBE",
            flags: 0x0A
        }
    ));
    assert_eq!(
        dec(&frame(0x6A, &[0, 7]), V31),
        Ok(Some(Packet::Pubrel(PubAck::new(7))))
    );
    assert!(matches!(
        dec(&frame(0xAA, &[0, 7, 0, 1, b'a']), V31),
        Ok(Some(Packet::Unsubscribe(_)))
    ));
    // The QoS bits must still say 1.
    assert!(matches!(
        err(&frame(0x68, &[0, 7]), V31),
        E::InvalidFixedHeaderFlags { .. }
    ));
}

#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    assert_eq!(
        err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], V311),
        E::MalformedRemainingLength
    );
    // Known to be malformed as soon as the fourth byte has its continuation bit.
    assert_eq!(
        err(&[0x30, 0x80, 0x80, 0x80, 0x80], V311),
        E::MalformedRemainingLength
    );
}

#[test]
fn incomplete_remaining_length_needs_more() {
    for bytes in [&[0x30][..], &[0x30, 0x80], &[0x30, 0xFF, 0xFF, 0xFF]] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V311, u32::MAX), Ok(None));
        assert_eq!(&buf[..], bytes);
    }
    // The largest Remaining Length is fine; the body just has not arrived.
    assert_eq!(dec(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], V5), Ok(None));
}

#[test]
fn packet_too_large_is_detected_from_the_fixed_header_alone() {
    // Remaining Length 200 (0xC8 0x01): the packet is 203 bytes, none of the body is here.
    let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
    assert_eq!(
        decode(&mut buf, V311, 100),
        Err(E::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
    // The limit counts the fixed header: a 4-byte PINGREQ... a 2-byte PINGREQ fits 2, not 1.
    assert_eq!(
        decode(&mut BytesMut::from(&[0xC0, 0x00][..]), V5, 2),
        Ok(Some(Packet::Pingreq))
    );
    assert_eq!(
        decode(&mut BytesMut::from(&[0xC0, 0x00][..]), V5, 1),
        Err(E::PacketTooLarge { size: 2, max: 1 })
    );
    assert_eq!(
        decode_connect(&mut BytesMut::from(&[0x10, 0x7F][..]), 64),
        Err(E::PacketTooLarge { size: 129, max: 64 })
    );
}

#[test]
fn two_frames_in_one_buffer_decode_one_at_a_time() {
    let mut bytes = frame(0x30, &[0, 1, b'a', b'x']);
    bytes.extend_from_slice(&[0xC0, 0x00]);
    bytes.extend_from_slice(&[0x40, 0x02]); // start of a third, incomplete frame
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        decode(&mut buf, V311, u32::MAX),
        Ok(Some(Packet::Publish(_)))
    ));
    assert_eq!(decode(&mut buf, V311, u32::MAX), Ok(Some(Packet::Pingreq)));
    assert_eq!(decode(&mut buf, V311, u32::MAX), Ok(None));
    assert_eq!(&buf[..], &[0x40, 0x02]);
    buf.extend_from_slice(&[0x00, 0x09]);
    assert_eq!(
        decode(&mut buf, V311, u32::MAX),
        Ok(Some(Packet::Puback(PubAck::new(9))))
    );
    assert!(buf.is_empty());
}

#[test]
fn fields_running_past_the_remaining_length_are_malformed() {
    // PUBLISH whose topic claims 5 bytes with 2 left.
    assert!(matches!(
        err(&frame(0x30, &[0, 5, b'a', b'b']), V311),
        E::Malformed("PUBLISH", _)
    ));
    // QoS 1 PUBLISH with half a packet identifier.
    assert!(matches!(
        err(&frame(0x32, &[0, 1, b'a', 0]), V311),
        E::Malformed("PUBLISH", _)
    ));
    // PUBACK with one byte.
    assert!(matches!(err(&frame(0x40, &[0]), V311), E::Malformed(..)));
}

// ---------------------------------------------------------------------------------------------
// CONNECT

fn connect_311() -> Connect {
    Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: s("c1"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

#[test]
fn connect_3_1_1_minimal() {
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', // protocol name
        4,    // level
        0x02, // clean session
        0, 60, // keep alive
        0, 2, b'c', b'1', // client id
    ];
    let bytes = frame(0x10, &body);
    assert_eq!(bytes[..2], [0x10, 14]);
    vector(&bytes, V311, Packet::Connect(Box::new(connect_311())));
    // decode_connect and decode() with any version read the same packet.
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode_connect(&mut buf, u32::MAX), Ok(Some(connect_311())));
    assert!(buf.is_empty());
    assert!(matches!(dec(&bytes, V5), Ok(Some(Packet::Connect(_)))));
}

#[test]
fn connect_3_1_1_with_will_user_and_password() {
    let body = [
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0b1110_1100, // user, password, will retain, will QoS 1, will flag
        0,
        10, // keep alive
        0,
        0, // empty client id: allowed here, the state machine decides
        0,
        3,
        b'w',
        b'/',
        b't', // will topic
        0,
        2,
        0xFF,
        0x00, // will payload (binary)
        0,
        1,
        b'u', // user name
        0,
        3,
        1,
        2,
        3, // password
    ];
    let c = Connect {
        protocol: V311,
        clean_start: false,
        keep_alive: 10,
        client_id: s(""),
        will: Some(LastWill {
            topic: s("w/t"),
            payload: b(&[0xFF, 0x00]),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(b(&[1, 2, 3])),
        properties: ConnectProperties::default(),
    };
    vector(&frame(0x10, &body), V311, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_3_1_mqisdp() {
    let body = [
        0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 30, 0, 1, b'x',
    ];
    let c = Connect {
        protocol: V31,
        keep_alive: 30,
        client_id: s("x"),
        ..connect_311()
    };
    vector(&frame(0x10, &body), V31, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_5_with_properties_and_will_properties() {
    let body = [
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0b0100_0110, // password (allowed without user name in v5), will, clean start
        0,
        0,  // keep alive
        14, // properties length
        0x11,
        0,
        0,
        0,
        120, // session expiry interval
        0x21,
        0,
        20, // receive maximum
        0x26,
        0,
        1,
        b'k',
        0,
        0, // user property k=""
        0,
        2,
        b'i',
        b'd', // client id
        5,    // will properties length
        0x18,
        0,
        0,
        0,
        5, // will delay interval
        0,
        1,
        b't', // will topic
        0,
        0, // will payload
        0,
        2,
        b'p',
        b'w', // password
    ];
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 0,
        client_id: s("id"),
        will: Some(LastWill {
            topic: s("t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..Default::default()
            },
        }),
        username: None,
        password: Some(b(b"pw")),
        properties: ConnectProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(20),
            user_properties: vec![(s("k"), s(""))],
            ..Default::default()
        },
    };
    let bytes = frame(0x10, &body);
    // The encoder writes properties in its own order, so check decode, then the round trip.
    decodes_to(&bytes, V5, Packet::Connect(Box::new(c.clone())));
    let again = enc(&Packet::Connect(Box::new(c.clone())), V5);
    assert_eq!(again.len(), bytes.len());
    decodes_to(&again, V5, Packet::Connect(Box::new(c)));
    assert_prefixes_need_more(&bytes, V5);
}

fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    body.extend_from_slice(rest);
    frame(0x10, &body)
}

#[test]
fn connect_invalid_protocol_name_mqtt_3_1_2_1() {
    assert_eq!(
        err(&connect_body(b"MQTX", 4, 2, &[0, 0]), V311),
        E::InvalidProtocolName
    );
    assert_eq!(
        err(&connect_body(b"mqtt", 4, 2, &[0, 0]), V311),
        E::InvalidProtocolName
    );
}

#[test]
fn connect_unsupported_level_is_reported_whatever_follows_mqtt_3_1_2_2() {
    // Level 6 followed by bytes in no known layout: the level is still what is reported.
    let f = frame(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 6, 0xFF, 0xFF, 0xFF]);
    assert_eq!(err(&f, V311), E::UnsupportedProtocolLevel(6));
    assert_eq!(
        decode_connect(&mut BytesMut::from(&f[..]), u32::MAX),
        Err(E::UnsupportedProtocolLevel(6))
    );
    // Name and level that do not belong together.
    assert_eq!(
        err(&connect_body(b"MQTT", 3, 2, &[0, 0]), V311),
        E::UnsupportedProtocolLevel(3)
    );
    assert_eq!(
        err(&connect_body(b"MQIsdp", 4, 2, &[0, 0]), V311),
        E::UnsupportedProtocolLevel(4)
    );
    // Nothing after the level at all.
    assert_eq!(
        err(&frame(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 7]), V5),
        E::UnsupportedProtocolLevel(7)
    );
}

#[test]
fn connect_reserved_flag_mqtt_3_1_2_3() {
    assert!(matches!(
        err(&connect_body(b"MQTT", 4, 0x03, &[0, 0]), V311),
        E::ReservedBitsSet(_)
    ));
    assert!(matches!(
        err(&connect_body(b"MQTT", 5, 0x03, &[0, 0, 0]), V5),
        E::ReservedBitsSet(_)
    ));
}

#[test]
fn connect_will_qos_3_is_invalid() {
    let will = [0, 0, 0, 1, b't', 0, 0];
    assert_eq!(
        err(&connect_body(b"MQTT", 4, 0b0001_1110, &will), V311),
        E::InvalidQoS("will")
    );
}

#[test]
fn connect_will_qos_and_retain_need_the_will_flag_mqtt_3_1_2_13_15() {
    for flags in [0b0000_1010, 0b0001_0010, 0b0010_0010] {
        assert!(
            matches!(
                err(&connect_body(b"MQTT", 4, flags, &[0, 0]), V311),
                E::ReservedBitsSet(_)
            ),
            "{flags:#010b}"
        );
    }
}

#[test]
fn connect_password_without_user_name_mqtt_3_1_2_22() {
    let rest = [0, 0, 0, 1, b'p'];
    assert_eq!(
        err(&connect_body(b"MQTT", 4, 0x42, &rest), V311),
        E::PasswordWithoutUsername
    );
    assert_eq!(
        err(&connect_body(b"MQIsdp", 3, 0x42, &rest), V31),
        E::PasswordWithoutUsername
    );
    // v5 allows it (§3.1.2.9).
    let v5 = connect_body(b"MQTT", 5, 0x42, &[0, 0, 0, 0, 1, b'p']);
    assert!(matches!(dec(&v5, V5), Ok(Some(Packet::Connect(c))) if c.password.is_some()));
}

#[test]
fn connect_leftover_or_missing_bytes_are_malformed() {
    assert!(matches!(
        err(&connect_body(b"MQTT", 4, 0x02, &[0, 0, 9]), V311),
        E::Malformed("CONNECT", _)
    ));
    // User name flag but no user name.
    assert!(matches!(
        err(&connect_body(b"MQTT", 4, 0x82, &[0, 0]), V311),
        E::Malformed("CONNECT", _)
    ));
}

#[test]
fn connect_strings_must_be_valid_utf8_without_nul_mqtt_1_5_4() {
    assert_eq!(
        err(&connect_body(b"MQTT", 4, 0x02, &[0, 1, 0]), V311),
        E::InvalidUtf8("client identifier")
    );
    assert_eq!(
        err(&connect_body(b"MQTT", 4, 0x02, &[0, 1, 0xC0]), V311),
        E::InvalidUtf8("client identifier")
    );
}

#[test]
fn connect_v5_property_rules() {
    // Topic Alias (0x23) is not a CONNECT property.
    assert_eq!(
        err(&connect_body(b"MQTT", 5, 0x02, &[3, 0x23, 0, 1, 0, 0]), V5),
        E::InvalidProperty {
            packet: "CONNECT",
            id: 0x23
        }
    );
    // Session Expiry Interval twice.
    let dup = [10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2, 0, 0];
    assert_eq!(
        err(&connect_body(b"MQTT", 5, 0x02, &dup), V5),
        E::DuplicateProperty {
            packet: "CONNECT",
            id: 0x11
        }
    );
    // Receive Maximum 0.
    assert_eq!(
        err(&connect_body(b"MQTT", 5, 0x02, &[3, 0x21, 0, 0, 0, 0]), V5),
        E::InvalidPropertyValue { id: 0x21 }
    );
    // Session Expiry Interval is not a will property.
    let will = [0, 0, 5, 0x11, 0, 0, 0, 1, 0, 1, b't', 0, 0];
    assert_eq!(
        err(
            &connect_body(b"MQTT", 5, 0x06, &{
                let mut v = vec![0];
                v.extend_from_slice(&will);
                v
            }),
            V5
        ),
        E::InvalidProperty {
            packet: "CONNECT will properties",
            id: 0x11
        }
    );
}

#[test]
fn decode_connect_rejects_anything_else_first_mqtt_3_1_0_1() {
    let mut buf = BytesMut::from(&[0x30][..]);
    assert_eq!(
        decode_connect(&mut buf, u32::MAX),
        Err(E::FirstPacketNotConnect("PUBLISH"))
    );
    assert_eq!(
        decode_connect(&mut BytesMut::from(&[0xF0, 0][..]), u32::MAX),
        Err(E::FirstPacketNotConnect("AUTH"))
    );
    assert_eq!(
        decode_connect(&mut BytesMut::from(&[0x00][..]), u32::MAX),
        Err(E::ReservedPacketType(0))
    );
    assert_eq!(decode_connect(&mut BytesMut::new(), u32::MAX), Ok(None));
    // Every prefix of a CONNECT needs more.
    let bytes = connect_body(b"MQTT", 4, 0x02, &[0, 1, b'c']);
    for i in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..i]);
        assert_eq!(decode_connect(&mut buf, u32::MAX), Ok(None));
        assert_eq!(buf.len(), i);
    }
}

// ---------------------------------------------------------------------------------------------
// CONNACK

#[test]
fn connack_3_1_1() {
    vector(
        &[0x20, 0x02, 0x01, 0x00],
        V311,
        Packet::Connack(Connack {
            session_present: true,
            ..Default::default()
        }),
    );
    vector(
        &[0x20, 0x02, 0x00, 0x05],
        V311,
        Packet::Connack(Connack {
            reason_code: ReasonCode::NotAuthorized,
            ..Default::default()
        }),
    );
    assert_eq!(
        err(&[0x20, 0x02, 0x00, 0x06], V311),
        E::InvalidReasonCode {
            packet: "CONNACK",
            code: 6
        }
    );
    assert!(matches!(
        err(&[0x20, 0x02, 0x02, 0x00], V311),
        E::ReservedBitsSet(_)
    ));
    assert!(matches!(
        err(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
        E::Malformed(..)
    ));
}

#[test]
fn connack_v3_encoding_maps_reason_codes() {
    let c = Packet::Connack(Connack {
        reason_code: ReasonCode::ServerBusy,
        properties: ConnackProperties {
            maximum_qos: Some(QoS::AtLeastOnce),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(enc(&c, V311), [0x20, 0x02, 0x00, 0x03]);
}

#[test]
fn connack_3_1_has_no_session_present() {
    // The byte is reserved and unused in 3.1.
    decodes_to(
        &[0x20, 0x02, 0x07, 0x00],
        V31,
        Packet::Connack(Connack::default()),
    );
    let c = Packet::Connack(Connack {
        session_present: true,
        ..Default::default()
    });
    assert_eq!(enc(&c, V31), [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn connack_5() {
    vector(
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        V5,
        Packet::Connack(Connack::default()),
    );
    let body = [
        0x01, 0x87, // session present, Not authorized
        7,    // properties
        0x24, 0x01, // maximum QoS 1
        0x1F, 0, 2, b'n', b'o', // reason string
    ];
    vector(
        &frame(0x20, &body),
        V5,
        Packet::Connack(Connack {
            session_present: true,
            reason_code: ReasonCode::NotAuthorized,
            properties: ConnackProperties {
                maximum_qos: Some(QoS::AtLeastOnce),
                reason_string: Some(s("no")),
                ..Default::default()
            },
        }),
    );
    // 0x04 is a DISCONNECT reason, 0x03 is not defined at all.
    for code in [0x04, 0x03, 0x8B] {
        assert_eq!(
            err(&[0x20, 0x03, 0x00, code, 0x00], V5),
            E::InvalidReasonCode {
                packet: "CONNACK",
                code
            }
        );
    }
    // v5 CONNACK always has a property length.
    assert!(matches!(
        err(&[0x20, 0x02, 0x00, 0x00], V5),
        E::Malformed(..)
    ));
    assert_eq!(
        err(&frame(0x20, &[0, 0, 2, 0x24, 2]), V5),
        E::InvalidPropertyValue { id: 0x24 }
    );
}

// ---------------------------------------------------------------------------------------------
// PUBLISH

fn publish(qos: QoS, topic: &'static str, id: Option<u16>, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s(topic),
        packet_id: id,
        properties: PublishProperties::default(),
        payload: b(payload),
    }
}

#[test]
fn publish_3_1_1_qos0_and_qos1() {
    vector(
        &[0x30, 0x07, 0, 3, b'a', b'/', b'b', b'h', b'i'],
        V311,
        Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
    );
    let mut p = publish(QoS::AtLeastOnce, "a", Some(10), b"");
    p.dup = true;
    p.retain = true;
    vector(&[0x3B, 0x05, 0, 1, b'a', 0, 10], V311, Packet::Publish(p));
    vector(
        &[0x34, 0x05, 0, 1, b'a', 0xFF, 0xFF],
        V311,
        Packet::Publish(publish(QoS::ExactlyOnce, "a", Some(0xFFFF), b"")),
    );
}

#[test]
fn publish_5_with_properties() {
    let body = [
        0, 1, b't', // topic
        0, 1,  // packet id
        12, // properties
        0x01, 1, // payload format indicator
        0x23, 0, 3, // topic alias
        0x0B, 5, // subscription identifier
        0x0B, 0x80, 0x01, // subscription identifier 128 (repeats are allowed here)
        0x02, 0, // start of message expiry... (truncated: see below)
    ];
    // The last property above is deliberately cut: the block runs past its length.
    assert!(matches!(err(&frame(0x32, &body), V5), E::Malformed(..)));
    let body = [
        0, 1, b't', 0, 1, 10, 0x01, 1, 0x23, 0, 3, 0x0B, 5, 0x0B, 0x80, 0x01, b'x',
    ];
    let mut p = publish(QoS::AtLeastOnce, "t", Some(1), b"x");
    p.properties = PublishProperties {
        payload_format_indicator: Some(1),
        topic_alias: Some(3),
        subscription_identifiers: vec![5, 128],
        ..Default::default()
    };
    vector(&frame(0x32, &body), V5, Packet::Publish(p));
    // Empty properties.
    vector(
        &[0x30, 0x05, 0, 1, b'a', 0, b'z'],
        V5,
        Packet::Publish(publish(QoS::AtMostOnce, "a", None, b"z")),
    );
}

#[test]
fn publish_qos_3_is_invalid_mqtt_3_3_1_4() {
    assert_eq!(
        err(&[0x36, 0x03, 0, 1, b'a'], V311),
        E::InvalidQoS("PUBLISH")
    );
    assert_eq!(err(&[0x36, 0x03, 0, 1, b'a'], V5), E::InvalidQoS("PUBLISH"));
}

#[test]
fn publish_dup_on_qos_0_is_malformed_mqtt_3_3_1_2() {
    for v in [V31, V311, V5] {
        assert!(matches!(
            err(&[0x38, 0x04, 0, 1, b'a', 0], v),
            E::Malformed("PUBLISH", _)
        ));
    }
}

#[test]
fn publish_topic_with_wildcards_is_invalid_mqtt_3_3_2_2() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+"] {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic);
        body.push(0);
        assert_eq!(err(&frame(0x30, &body), V5), E::InvalidTopicName);
        assert_eq!(
            err(&frame(0x30, &body[..body.len() - 1]), V311),
            E::InvalidTopicName
        );
    }
}

#[test]
fn publish_empty_topic_only_in_v5() {
    assert_eq!(err(&[0x30, 0x02, 0, 0], V311), E::InvalidTopicName);
    assert_eq!(err(&[0x30, 0x02, 0, 0], V31), E::InvalidTopicName);
    // v5: a Topic Alias stands for it.
    let mut p = publish(QoS::AtMostOnce, "", None, b"");
    p.properties.topic_alias = Some(1);
    vector(&[0x30, 0x06, 0, 0, 3, 0x23, 0, 1], V5, Packet::Publish(p));
}

#[test]
fn publish_topic_with_nul_or_bad_utf8() {
    assert_eq!(
        err(&[0x30, 0x04, 0, 2, b'a', 0], V311),
        E::InvalidUtf8("topic name")
    );
    assert_eq!(
        err(&[0x30, 0x05, 0, 3, 0xED, 0xA0, 0x80], V311),
        E::InvalidUtf8("topic name")
    );
}

#[test]
fn publish_packet_id_0_is_invalid_mqtt_2_3_1_1() {
    assert_eq!(
        err(&[0x32, 0x05, 0, 1, b'a', 0, 0], V311),
        E::InvalidPacketId("PUBLISH")
    );
}

#[test]
fn publish_v5_property_rules() {
    // Session Expiry Interval is not a PUBLISH property.
    assert_eq!(
        err(&frame(0x30, &[0, 1, b'a', 5, 0x11, 0, 0, 0, 1]), V5),
        E::InvalidProperty {
            packet: "PUBLISH",
            id: 0x11
        }
    );
    assert_eq!(
        err(&frame(0x30, &[0, 1, b'a', 3, 0x23, 0, 0]), V5),
        E::InvalidPropertyValue { id: 0x23 }
    );
    assert_eq!(
        err(&frame(0x30, &[0, 1, b'a', 6, 0x23, 0, 1, 0x23, 0, 2]), V5),
        E::DuplicateProperty {
            packet: "PUBLISH",
            id: 0x23
        }
    );
}

#[test]
fn publish_decoding_is_zero_copy() {
    let bytes = frame(0x30, b"\x00\x03a/bpayload");
    let mut buf = BytesMut::from(&bytes[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V311, u32::MAX) else {
        panic!("not a publish");
    };
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
    assert!(range.contains(&(p.topic.as_bytes().as_ptr() as usize)));
    assert_eq!(&p.payload[..], b"payload");
}

#[test]
fn publish_encoding_checks() {
    let mut p = publish(QoS::AtLeastOnce, "a", None, b"");
    let mut buf = BytesMut::new();
    assert_eq!(
        encode_publish(&p, V311, &mut buf),
        Err(EncodeError::PacketIdMismatch)
    );
    p.packet_id = Some(0);
    assert_eq!(
        publish_encoded_len(&p, V311),
        Err(EncodeError::PacketIdMismatch)
    );
    let q = publish(QoS::AtMostOnce, "a", Some(1), b"");
    assert_eq!(
        encode_publish(&q, V5, &mut buf),
        Err(EncodeError::PacketIdMismatch)
    );
    let long = Publish {
        topic: ByteString::from("t".repeat(65_536)),
        ..publish(QoS::AtMostOnce, "", None, b"")
    };
    assert_eq!(
        encode_publish(&long, V311, &mut buf),
        Err(EncodeError::FieldTooLong("topic name"))
    );
    assert!(buf.is_empty(), "nothing is written on error");
    // v3 leaves properties off.
    let mut with_props = publish(QoS::AtMostOnce, "a", None, b"x");
    with_props.properties.message_expiry_interval = Some(9);
    assert_eq!(
        enc(&Packet::Publish(with_props.clone()), V311),
        [0x30, 0x04, 0, 1, b'a', b'x']
    );
    assert_eq!(
        enc(&Packet::Publish(with_props.clone()), V5),
        [0x30, 0x0A, 0, 1, b'a', 5, 0x02, 0, 0, 0, 9, b'x']
    );
    // The fast path writes exactly what encode() does.
    let mut fast = BytesMut::new();
    encode_publish(&with_props, V5, &mut fast).expect("encodable");
    assert_eq!(publish_encoded_len(&with_props, V5), Ok(fast.len()));
    assert_eq!(&fast[..], &enc(&Packet::Publish(with_props), V5)[..]);
}

#[test]
fn large_publish_uses_a_multi_byte_remaining_length() {
    let payload: &'static [u8] = Box::leak(vec![7u8; 20_000].into_boxed_slice());
    let p = Packet::Publish(publish(QoS::AtMostOnce, "big", None, payload));
    let bytes = enc(&p, V5);
    // 2 + 3 topic + 1 property length + 20,000 = 20,006 = 0xA6 0x9C 0x01.
    assert_eq!(bytes[..4], [0x30, 0xA6, 0x9C, 0x01]);
    decodes_to(&bytes, V5, p);
}

// ---------------------------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP

fn ack_packet(first: u8, a: PubAck) -> Packet {
    match first >> 4 {
        4 => Packet::Puback(a),
        5 => Packet::Pubrec(a),
        6 => Packet::Pubrel(a),
        _ => Packet::Pubcomp(a),
    }
}

#[test]
fn acks_3_1_1() {
    for first in [0x40, 0x50, 0x62, 0x70] {
        vector(
            &[first, 2, 0x12, 0x34],
            V311,
            ack_packet(first, PubAck::new(0x1234)),
        );
        assert!(matches!(err(&[first, 3, 0, 1, 0], V311), E::Malformed(..)));
        assert!(matches!(err(&[first, 0], V311), E::Malformed(..)));
        assert!(matches!(
            err(&[first, 2, 0, 0], V311),
            E::InvalidPacketId(_)
        ));
    }
    // A v5 reason is dropped on the 3.1.1 wire.
    let a = ack_packet(0x40, PubAck::with_reason(1, ReasonCode::QuotaExceeded));
    assert_eq!(enc(&a, V311), [0x40, 2, 0, 1]);
}

#[test]
fn acks_5_short_and_long_forms_mqtt_3_4_2() {
    for first in [0x40, 0x50, 0x62, 0x70] {
        // Remaining Length 2: Success, no properties.
        vector(&[first, 2, 0, 7], V5, ack_packet(first, PubAck::new(7)));
        // Remaining Length 4 with an empty property block means the same.
        decodes_to(
            &[first, 4, 0, 7, 0, 0],
            V5,
            ack_packet(first, PubAck::new(7)),
        );
        assert_eq!(
            err(&[first, 2, 0, 0], V5),
            E::InvalidPacketId(PacketType::from_u8(first >> 4).map_or("", |t| t.name()))
        );
    }
    // Remaining Length 3: a reason code and no property length.
    vector(
        &[0x40, 3, 0, 7, 0x10],
        V5,
        Packet::Puback(PubAck::with_reason(7, ReasonCode::NoMatchingSubscribers)),
    );
    vector(
        &[0x62, 3, 0, 7, 0x92],
        V5,
        Packet::Pubrel(PubAck::with_reason(7, ReasonCode::PacketIdentifierNotFound)),
    );
    // With properties.
    let a = PubAck {
        packet_id: 7,
        reason_code: ReasonCode::Success,
        properties: AckProperties {
            reason_string: Some(s("r")),
            user_properties: vec![],
        },
    };
    vector(
        &[0x50, 8, 0, 7, 0, 4, 0x1F, 0, 1, b'r'],
        V5,
        Packet::Pubrec(a),
    );
}

#[test]
fn acks_5_reason_codes_per_packet() {
    // PUBREL and PUBCOMP only allow 0x00 and 0x92.
    for first in [0x62, 0x70] {
        for code in [0x10, 0x80, 0x91] {
            assert!(matches!(
                err(&[first, 3, 0, 1, code], V5),
                E::InvalidReasonCode { code: c, .. } if c == code
            ));
        }
    }
    // PUBACK and PUBREC do not allow 0x92, nor the undefined 0x05.
    for first in [0x40, 0x50] {
        for code in [0x92, 0x05, 0x8E] {
            assert!(matches!(
                err(&[first, 3, 0, 1, code], V5),
                E::InvalidReasonCode { code: c, .. } if c == code
            ));
        }
        for code in [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
            assert!(dec(&[first, 3, 0, 1, code], V5).is_ok(), "{code:#04X}");
        }
    }
    assert_eq!(
        err(&frame(0x40, &[0, 1, 0, 3, 0x21, 0, 1]), V5),
        E::InvalidProperty {
            packet: "PUBACK",
            id: 0x21
        }
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE / SUBACK

#[test]
fn subscribe_3_1_1() {
    let body = [0, 10, 0, 3, b'a', b'/', b'b', 1, 0, 1, b'#', 2];
    let sub = Subscribe {
        packet_id: 10,
        filters: vec![
            (
                s("a/b"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            ),
            (
                s("#"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            ),
        ],
        properties: SubscribeProperties::default(),
    };
    vector(&frame(0x82, &body), V311, Packet::Subscribe(sub));
}

#[test]
fn subscribe_5_options_and_properties() {
    let body = [
        0, 1, // packet id
        5, 0x0B, 0x7F, 0x26, 0, 0, // properties: subscription id 127 ... (user property cut)
    ];
    assert!(matches!(err(&frame(0x82, &body), V5), E::Malformed(..)));
    let body = [
        0,
        1,
        2,
        0x0B,
        0x7F, // subscription identifier 127
        0,
        1,
        b'x',
        0b0010_1101, // qos 1, no local, retain as published, retain handling 2
    ];
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![(
            s("x"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        properties: SubscribeProperties {
            subscription_identifier: Some(127),
            user_properties: vec![],
        },
    };
    vector(&frame(0x82, &body), V5, Packet::Subscribe(sub.clone()));
    // On the 3.1.1 wire only the QoS remains.
    assert_eq!(
        enc(&Packet::Subscribe(sub), V311),
        frame(0x82, &[0, 1, 0, 1, b'x', 1])
    );
}

#[test]
fn subscribe_without_filters_mqtt_3_8_3_3() {
    assert_eq!(
        err(&frame(0x82, &[0, 1]), V311),
        E::NoTopicFilters("SUBSCRIBE")
    );
    assert_eq!(
        err(&frame(0x82, &[0, 1, 0]), V5),
        E::NoTopicFilters("SUBSCRIBE")
    );
}

#[test]
fn subscribe_options_reserved_bits() {
    // v5 bits 6-7 [MQTT-3.8.3-5].
    for opts in [0x40, 0x80] {
        assert!(matches!(
            err(&frame(0x82, &[0, 1, 0, 0, 1, b'a', opts]), V5),
            E::ReservedBitsSet(_)
        ));
    }
    // 3.1.1 bits 2-7 [MQTT-3.8.3-4 in 3.1.1].
    for opts in [0x04, 0x08, 0x10, 0x80] {
        assert!(matches!(
            err(&frame(0x82, &[0, 1, 0, 1, b'a', opts]), V311),
            E::ReservedBitsSet(_)
        ));
    }
}

#[test]
fn subscribe_qos_3_and_retain_handling_3() {
    assert_eq!(
        err(&frame(0x82, &[0, 1, 0, 1, b'a', 3]), V311),
        E::InvalidQoS("subscription options")
    );
    assert_eq!(
        err(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 3]), V5),
        E::InvalidQoS("subscription options")
    );
    assert_eq!(
        err(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x30]), V5),
        E::InvalidRetainHandling
    );
}

#[test]
fn subscribe_filters_are_not_validated_here() {
    // "a/#/b" is an invalid filter; SUBACK 0x8F answers it, not a closed connection.
    let f = frame(0x82, &[0, 1, 0, 5, b'a', b'/', b'#', b'/', b'b', 0]);
    assert!(matches!(dec(&f, V311), Ok(Some(Packet::Subscribe(_)))));
}

#[test]
fn subscribe_missing_options_byte_or_bad_packet_id() {
    assert!(matches!(
        err(&frame(0x82, &[0, 1, 0, 1, b'a']), V311),
        E::Malformed(..)
    ));
    assert_eq!(
        err(&frame(0x82, &[0, 0, 0, 1, b'a', 0]), V311),
        E::InvalidPacketId("SUBSCRIBE")
    );
}

#[test]
fn subscribe_identifier_rules() {
    assert_eq!(
        err(&frame(0x82, &[0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]), V5),
        E::InvalidPropertyValue { id: 0x0B }
    );
    assert_eq!(
        err(
            &frame(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]),
            V5
        ),
        E::DuplicateProperty {
            packet: "SUBSCRIBE",
            id: 0x0B
        }
    );
    // The largest identifier, 268,435,455, in four bytes.
    let f = frame(
        0x82,
        &[0, 1, 5, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, b'a', 0],
    );
    assert!(matches!(
        dec(&f, V5),
        Ok(Some(Packet::Subscribe(s))) if s.properties.subscription_identifier == Some(268_435_455)
    ));
}

#[test]
fn suback_3_1_1() {
    let sa = Suback {
        packet_id: 10,
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
        properties: AckProperties::default(),
    };
    vector(&[0x90, 6, 0, 10, 0, 1, 2, 0x80], V311, Packet::Suback(sa));
    assert_eq!(
        err(&[0x90, 3, 0, 10, 3], V311),
        E::InvalidReasonCode {
            packet: "SUBACK",
            code: 3
        }
    );
    assert!(matches!(err(&[0x90, 2, 0, 10], V311), E::Malformed(..)));
    // Any v5 failure is 0x80 on the 3.1.1 wire.
    let sa = Suback {
        packet_id: 1,
        reason_codes: vec![ReasonCode::TopicFilterInvalid, ReasonCode::GrantedQoS1],
        properties: AckProperties::default(),
    };
    assert_eq!(enc(&Packet::Suback(sa), V311), [0x90, 4, 0, 1, 0x80, 1]);
}

#[test]
fn suback_5() {
    let sa = Suback {
        packet_id: 10,
        reason_codes: vec![
            ReasonCode::TopicFilterInvalid,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
        properties: AckProperties::default(),
    };
    vector(&[0x90, 5, 0, 10, 0, 0x8F, 0xA2], V5, Packet::Suback(sa));
    assert_eq!(
        err(&[0x90, 4, 0, 10, 0, 0x11], V5),
        E::InvalidReasonCode {
            packet: "SUBACK",
            code: 0x11
        }
    );
    assert!(matches!(err(&[0x90, 3, 0, 10, 0], V5), E::Malformed(..)));
}

// ---------------------------------------------------------------------------------------------
// UNSUBSCRIBE / UNSUBACK

#[test]
fn unsubscribe_both_versions() {
    let u = Unsubscribe {
        packet_id: 3,
        filters: vec![s("a/+"), s("b")],
        user_properties: vec![],
    };
    vector(
        &frame(0xA2, &[0, 3, 0, 3, b'a', b'/', b'+', 0, 1, b'b']),
        V311,
        Packet::Unsubscribe(u.clone()),
    );
    let u5 = Unsubscribe {
        user_properties: vec![(s("a"), s("b"))],
        ..u
    };
    vector(
        &frame(
            0xA2,
            &[
                0, 3, 7, 0x26, 0, 1, b'a', 0, 1, b'b', 0, 3, b'a', b'/', b'+', 0, 1, b'b',
            ],
        ),
        V5,
        Packet::Unsubscribe(u5),
    );
}

#[test]
fn unsubscribe_rules_mqtt_3_10_3_2() {
    assert_eq!(
        err(&frame(0xA2, &[0, 3]), V311),
        E::NoTopicFilters("UNSUBSCRIBE")
    );
    assert_eq!(
        err(&frame(0xA2, &[0, 3, 0]), V5),
        E::NoTopicFilters("UNSUBSCRIBE")
    );
    assert_eq!(
        err(&frame(0xA2, &[0, 3, 3, 0x1F, 0, 0, 0, 1, b'a']), V5),
        E::InvalidProperty {
            packet: "UNSUBSCRIBE",
            id: 0x1F
        }
    );
    assert_eq!(
        err(&frame(0xA2, &[0, 0, 0, 1, b'a']), V311),
        E::InvalidPacketId("UNSUBSCRIBE")
    );
}

#[test]
fn unsuback_both_versions() {
    vector(
        &[0xB0, 2, 0, 5],
        V311,
        Packet::Unsuback(Unsuback {
            packet_id: 5,
            reason_codes: vec![],
            properties: AckProperties::default(),
        }),
    );
    assert!(matches!(err(&[0xB0, 3, 0, 5, 0], V311), E::Malformed(..)));
    let u = Unsuback {
        packet_id: 5,
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        properties: AckProperties::default(),
    };
    vector(
        &[0xB0, 5, 0, 5, 0, 0x00, 0x11],
        V5,
        Packet::Unsuback(u.clone()),
    );
    // Before v5 the codes have no place on the wire.
    assert_eq!(enc(&Packet::Unsuback(u), V311), [0xB0, 2, 0, 5]);
    assert_eq!(
        err(&[0xB0, 4, 0, 5, 0, 0x01], V5),
        E::InvalidReasonCode {
            packet: "UNSUBACK",
            code: 0x01
        }
    );
    assert!(matches!(err(&[0xB0, 3, 0, 5, 0], V5), E::Malformed(..)));
}

// ---------------------------------------------------------------------------------------------
// PINGREQ, PINGRESP, DISCONNECT, AUTH

#[test]
fn ping_has_no_body() {
    for v in [V31, V311, V5] {
        vector(&[0xC0, 0], v, Packet::Pingreq);
        vector(&[0xD0, 0], v, Packet::Pingresp);
        assert!(matches!(err(&[0xC0, 1, 0], v), E::Malformed("PINGREQ", _)));
        assert!(matches!(err(&[0xD0, 1, 0], v), E::Malformed("PINGRESP", _)));
    }
}

#[test]
fn disconnect_3_1_1() {
    vector(&[0xE0, 0], V311, Packet::Disconnect(Disconnect::default()));
    assert!(matches!(err(&[0xE0, 1, 0], V311), E::Malformed(..)));
    // A v5 reason is dropped on the 3.1.1 wire.
    let d = Packet::Disconnect(Disconnect::new(ReasonCode::ServerShuttingDown));
    assert_eq!(enc(&d, V311), [0xE0, 0]);
}

#[test]
fn disconnect_5_forms_mqtt_3_14_2() {
    vector(&[0xE0, 0], V5, Packet::Disconnect(Disconnect::default()));
    decodes_to(&[0xE0, 1, 0], V5, Packet::Disconnect(Disconnect::default()));
    decodes_to(
        &[0xE0, 2, 0, 0],
        V5,
        Packet::Disconnect(Disconnect::default()),
    );
    // The reason-only form is read; the encoder writes the full form with Property Length 0.
    decodes_to(
        &[0xE0, 1, 0x04],
        V5,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
    );
    vector(
        &[0xE0, 2, 0x04, 0],
        V5,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
    );
    let d = Disconnect {
        reason_code: ReasonCode::Success,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            ..Default::default()
        },
    };
    vector(
        &[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 0],
        V5,
        Packet::Disconnect(d),
    );
    for code in [0x84, 0x01, 0x18] {
        assert_eq!(
            err(&[0xE0, 1, code], V5),
            E::InvalidReasonCode {
                packet: "DISCONNECT",
                code
            }
        );
    }
    assert_eq!(
        err(&[0xE0, 4, 0, 2, 0x24, 0], V5),
        E::InvalidProperty {
            packet: "DISCONNECT",
            id: 0x24
        }
    );
}

#[test]
fn auth_5() {
    vector(&[0xF0, 0], V5, Packet::Auth(Auth::default()));
    let a = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(&[1, 2])),
            ..Default::default()
        },
    };
    vector(
        &frame(
            0xF0,
            &[
                0x18, 13, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M', 0x16, 0, 2, 1, 2,
            ],
        ),
        V5,
        Packet::Auth(a),
    );
    // Reason only: written in full by the encoder, read either way.
    let re = Packet::Auth(Auth {
        reason_code: ReasonCode::ReAuthenticate,
        ..Default::default()
    });
    decodes_to(&[0xF0, 1, 0x19], V5, re.clone());
    assert_eq!(enc(&re, V5), [0xF0, 2, 0x19, 0]);
    assert_eq!(
        err(&[0xF0, 1, 0x01], V5),
        E::InvalidReasonCode {
            packet: "AUTH",
            code: 1
        }
    );
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&Packet::Auth(Auth::default()), V311, &mut buf),
        Err(EncodeError::NotInVersion("AUTH"))
    );
    assert_eq!(
        encoded_len(&Packet::Auth(Auth::default()), V31),
        Err(EncodeError::NotInVersion("AUTH"))
    );
}

#[test]
fn encode_appends_to_what_is_in_the_buffer() {
    let mut buf = BytesMut::from(&b"xx"[..]);
    encode(&Packet::Pingreq, V311, &mut buf).expect("encodable");
    encode(&Packet::Puback(PubAck::new(1)), V311, &mut buf).expect("encodable");
    assert_eq!(&buf[..], &[b'x', b'x', 0xC0, 0, 0x40, 2, 0, 1]);
}

#[test]
fn reason_code_tables() {
    // Spot checks against the spec tables.
    assert!(reason_code_allowed(PacketType::Connack, ReasonCode::Banned));
    assert!(!reason_code_allowed(
        PacketType::Connack,
        ReasonCode::GrantedQoS1
    ));
    assert!(reason_code_allowed(
        PacketType::Disconnect,
        ReasonCode::SessionTakenOver
    ));
    assert!(!reason_code_allowed(
        PacketType::Disconnect,
        ReasonCode::Banned
    ));
    assert!(!reason_code_allowed(
        PacketType::Publish,
        ReasonCode::Success
    ));
    let count = |t| {
        ReasonCode::ALL
            .iter()
            .filter(|&&rc| reason_code_allowed(t, rc))
            .count()
    };
    assert_eq!(count(PacketType::Connack), 22);
    assert_eq!(count(PacketType::Puback), 9);
    assert_eq!(count(PacketType::Pubrel), 2);
    assert_eq!(count(PacketType::Suback), 12);
    assert_eq!(count(PacketType::Unsuback), 7);
    assert_eq!(count(PacketType::Disconnect), 29);
    assert_eq!(count(PacketType::Auth), 3);
}
