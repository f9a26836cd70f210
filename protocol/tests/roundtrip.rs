//! Property tests of the codec: every packet type, with every property present or absent, for
//! every protocol version, survives encode → decode unchanged, and `encoded_len` is exact. And
//! no input at all, random or a mutated valid frame, makes the decoder panic; whatever it
//! accepts re-encodes to a frame that decodes to the same packet.

use beamq_protocol::codec::{
    MAX_REMAINING_LENGTH, decode, decode_connect, encode, encode_publish, encoded_len,
    publish_encoded_len, reason_code_allowed,
};
use beamq_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(&VERSIONS[..])
}

/// Any UTF-8 string the spec allows (no U+0000), including multi-byte characters.
fn string() -> impl Strategy<Value = ByteString> {
    "[^\\x00]{0,12}".prop_map(ByteString::from)
}

/// A PUBLISH Topic Name: no wildcards [MQTT-3.3.2-2]; non-empty unless `allow_empty`.
fn topic(allow_empty: bool) -> impl Strategy<Value = ByteString> {
    let min = usize::from(!allow_empty);
    proptest::string::string_regex(&format!("[^\\x00+#]{{{min},12}}"))
        .expect("valid regex")
        .prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((string(), string()), 0..3)
}

fn nonzero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn subscription_id() -> impl Strategy<Value = u32> {
    1..=MAX_REMAINING_LENGTH as u32
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// A v5 reason code allowed in `t`.
fn reason(t: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|&rc| reason_code_allowed(t, rc))
        .collect();
    prop::sample::select(allowed)
}

/// `strategy` in v5, the default value before it (no properties on the older wire).
fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    v: ProtocolVersion,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if v.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(nonzero_u16()),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(string()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, am, ad, up)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(0..=1u8),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(string()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Connect> {
    let will = option::of(
        (
            string(),
            binary(),
            qos(),
            any::<bool>(),
            v5_only(v, will_properties()),
        )
            .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
                topic,
                payload,
                qos,
                retain,
                properties,
            }),
    );
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        will,
        option::of(string()),
        option::of(binary()),
        v5_only(v, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Before v5 a password needs a user name [MQTT-3.1.2-22].
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnackProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(nonzero_u16()),
            option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
            option::of(any::<bool>()),
            option::of(1..=u32::MAX),
            option::of(string()),
            option::of(any::<u16>()),
            option::of(string()),
            user_properties(),
        ),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
            option::of(string()),
            option::of(string()),
            option::of(string()),
            option::of(binary()),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs, up), (wsa, sia, ssa, ska, ri, sr, am, ad))| {
                ConnackProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Connack> {
    if v.is_v5() {
        (
            any::<bool>(),
            reason(PacketType::Connack),
            connack_properties(),
        )
            .prop_map(|(session_present, reason_code, properties)| Connack {
                session_present,
                reason_code,
                properties,
            })
            .boxed()
    } else {
        // 3.1 has no Session Present; 3.1.1 return codes are 0..=5.
        let sp = if v == ProtocolVersion::V3_1 {
            Just(false).boxed()
        } else {
            any::<bool>().boxed()
        };
        (sp, 0..=5u8)
            .prop_map(|(session_present, code)| Connack {
                session_present,
                reason_code: ReasonCode::from_v3_connack(code).unwrap_or_default(),
                properties: ConnackProperties::default(),
            })
            .boxed()
    }
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(0..=1u8),
        option::of(any::<u32>()),
        option::of(nonzero_u16()),
        option::of(string()),
        option::of(binary()),
        user_properties(),
        vec(subscription_id(), 0..3),
        option::of(string()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, si, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: si,
            content_type: ct,
        })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(v.is_v5()),
        nonzero_u16(),
        v5_only(v, publish_properties()),
        vec(any::<u8>(), 0..64).prop_map(Bytes::from),
    )
        .prop_map(
            |(qos, dup, retain, topic, id, properties, payload)| Publish {
                // DUP must be 0 on QoS 0 [MQTT-3.3.1-2].
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties,
                payload,
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(string()), user_properties()).prop_map(|(reason_string, user_properties)| {
        AckProperties {
            reason_string,
            user_properties,
        }
    })
}

fn pub_ack(v: ProtocolVersion, t: PacketType) -> impl Strategy<Value = PubAck> {
    let rc = if v.is_v5() {
        reason(t).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (nonzero_u16(), rc, v5_only(v, ack_properties())).prop_map(
        |(packet_id, reason_code, properties)| PubAck {
            packet_id,
            reason_code,
            properties,
        },
    )
}

fn subscription_options(v: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if v.is_v5() {
        (
            qos(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(RetainHandling::SendAtSubscribe),
                Just(RetainHandling::SendAtSubscribeIfNew),
                Just(RetainHandling::DoNotSend)
            ],
        )
            .prop_map(
                |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
            )
            .boxed()
    } else {
        qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..Default::default()
            })
            .boxed()
    }
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let props = (option::of(subscription_id()), user_properties()).prop_map(
        |(subscription_identifier, user_properties)| SubscribeProperties {
            subscription_identifier,
            user_properties,
        },
    );
    (
        nonzero_u16(),
        vec((string(), subscription_options(v)), 1..4),
        v5_only(v, props),
    )
        .prop_map(|(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters,
            properties,
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Suback> {
    let rc = if v.is_v5() {
        reason(PacketType::Suback).boxed()
    } else {
        prop::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (nonzero_u16(), vec(rc, 1..5), v5_only(v, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| Suback {
            packet_id,
            reason_codes,
            properties,
        },
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    (
        nonzero_u16(),
        vec(string(), 1..4),
        v5_only(v, user_properties()),
    )
        .prop_map(|(packet_id, filters, user_properties)| Unsubscribe {
            packet_id,
            filters,
            user_properties,
        })
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Unsuback> {
    if v.is_v5() {
        (
            nonzero_u16(),
            vec(reason(PacketType::Unsuback), 1..5),
            ack_properties(),
        )
            .prop_map(|(packet_id, reason_codes, properties)| Unsuback {
                packet_id,
                reason_codes,
                properties,
            })
            .boxed()
    } else {
        nonzero_u16()
            .prop_map(|packet_id| Unsuback {
                packet_id,
                reason_codes: vec![],
                properties: AckProperties::default(),
            })
            .boxed()
    }
}

fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Disconnect> {
    if !v.is_v5() {
        return Just(Disconnect::default()).boxed();
    }
    let props = (
        option::of(any::<u32>()),
        option::of(string()),
        user_properties(),
        option::of(string()),
    )
        .prop_map(|(sei, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        });
    (reason(PacketType::Disconnect), props)
        .prop_map(|(reason_code, properties)| Disconnect {
            reason_code,
            properties,
        })
        .boxed()
}

fn auth() -> impl Strategy<Value = Auth> {
    let props = (
        option::of(string()),
        option::of(binary()),
        option::of(string()),
        user_properties(),
    )
        .prop_map(|(am, ad, rs, up)| AuthProperties {
            authentication_method: am,
            authentication_data: ad,
            reason_string: rs,
            user_properties: up,
        });
    (reason(PacketType::Auth), props).prop_map(|(reason_code, properties)| Auth {
        reason_code,
        properties,
    })
}

/// Any packet valid in `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut options = vec![
        connect(v)
            .prop_map(|c| Packet::Connect(Box::new(c)))
            .boxed(),
        connack(v).prop_map(Packet::Connack).boxed(),
        publish(v).prop_map(Packet::Publish).boxed(),
        pub_ack(v, PacketType::Puback)
            .prop_map(Packet::Puback)
            .boxed(),
        pub_ack(v, PacketType::Pubrec)
            .prop_map(Packet::Pubrec)
            .boxed(),
        pub_ack(v, PacketType::Pubrel)
            .prop_map(Packet::Pubrel)
            .boxed(),
        pub_ack(v, PacketType::Pubcomp)
            .prop_map(Packet::Pubcomp)
            .boxed(),
        subscribe(v).prop_map(Packet::Subscribe).boxed(),
        suback(v).prop_map(Packet::Suback).boxed(),
        unsubscribe(v).prop_map(Packet::Unsubscribe).boxed(),
        unsuback(v).prop_map(Packet::Unsuback).boxed(),
        Just(Packet::Pingreq).boxed(),
        Just(Packet::Pingresp).boxed(),
        disconnect(v).prop_map(Packet::Disconnect).boxed(),
    ];
    if v.is_v5() {
        options.push(auth().prop_map(Packet::Auth).boxed());
    }
    prop::strategy::Union::new(options).boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

/// Encodes, checks `encoded_len`, decodes, and checks the buffer is fully consumed.
fn round_trip(p: &Packet, v: ProtocolVersion) -> Result<Packet, TestCaseError> {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(encoded_len(p, v), Ok(buf.len()));
    let decoded = decode(&mut buf, v, u32::MAX)
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?
        .ok_or_else(|| TestCaseError::fail("decode wanted more bytes"))?;
    prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(decoded)
}

/// Feeds `bytes` to the decoder; whatever it accepts must re-encode to a frame that decodes to
/// the same packet.
fn decode_never_panics(bytes: &[u8], v: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    // Decode until the buffer is exhausted, an error, or "need more".
    while let Ok(Some(p)) = decode(&mut buf, v, u32::MAX) {
        let again = round_trip(&p, v)?;
        prop_assert_eq!(again, p);
    }
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some(c)) = decode_connect(&mut buf, u32::MAX) {
        let p = Packet::Connect(Box::new(c));
        let again = round_trip(&p, v)?;
        prop_assert_eq!(again, p);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_packet_round_trips((v, p) in versioned_packet()) {
        let decoded = round_trip(&p, v)?;
        prop_assert_eq!(decoded, p);
    }

    #[test]
    fn publish_fast_path_matches_encode((v, p) in version().prop_flat_map(|v| publish(v).prop_map(move |p| (v, p)))) {
        let mut fast = BytesMut::new();
        encode_publish(&p, v, &mut fast).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(publish_encoded_len(&p, v), Ok(fast.len()));
        let mut slow = BytesMut::new();
        encode(&Packet::Publish(p), v, &mut slow).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn connect_round_trips_through_decode_connect(c in version().prop_flat_map(connect)) {
        let p = Packet::Connect(Box::new(c.clone()));
        let mut buf = BytesMut::new();
        encode(&p, c.protocol, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_connect(&mut buf, u32::MAX), Ok(Some(c)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_prefix_needs_more((v, p) in versioned_packet()) {
        let mut full = BytesMut::new();
        encode(&p, v, &mut full).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for i in 0..full.len() {
            let mut buf = BytesMut::from(&full[..i]);
            prop_assert_eq!(decode(&mut buf, v, u32::MAX), Ok(None));
            prop_assert_eq!(&buf[..], &full[..i]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), v in version()) {
        decode_never_panics(&bytes, v)?;
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_first_byte_never_panic(
        first in prop::sample::select(vec![
            0x10u8, 0x20, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0,
            0xC0, 0xD0, 0xE0, 0xF0,
        ]),
        body in vec(any::<u8>(), 0..64),
        v in version(),
    ) {
        // A plausible header so the body parsers, not the header check, see the noise.
        let mut bytes = vec![first, body.len() as u8];
        bytes.extend_from_slice(&body);
        decode_never_panics(&bytes, v)?;
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = buf.to_vec();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        decode_never_panics(&bytes, v)?;
    }
}
