//! Deciding on a CONNECT: client identifier rules, keep alive, session expiry and the CONNACK
//! properties the server advertises (3.1.1 §3.1-3.2, 5.0 §3.1-3.2).
//!
//! This runs before a client actor exists, so a refused CONNECT costs no actor.

use bytestring::ByteString;

use crate::packet::{Connack, ConnackProperties, Connect, ProtocolVersion, QoS};
use crate::reason::ReasonCode;
use crate::session::limits::Limits;
use crate::topic;

/// A CONNECT the server will accept, with the values the connection runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The client identifier in use (possibly assigned by the server).
    pub client_id: ByteString,
    /// True when the server assigned the identifier.
    pub assigned_client_id: bool,
    /// Keep alive in effect, seconds (0 = none).
    pub keep_alive: u16,
    /// Session expiry interval in effect, seconds (`u32::MAX` = never).
    pub session_expiry: u32,
    /// CONNACK properties to send (v5); Session Present is decided later.
    pub connack_properties: ConnackProperties,
}

/// A CONNECT the server refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The reason (mapped to a 3.1.1 return code for older clients).
    pub reason: ReasonCode,
    /// False when the spec says to close without CONNACK (3.1.1 [MQTT-3.1.4-1]).
    pub send_connack: bool,
}

impl Refused {
    fn connack(reason: ReasonCode) -> Refused {
        Refused {
            reason,
            send_connack: true,
        }
    }

    /// The CONNACK to send for this refusal: Session Present 0 [MQTT-3.2.2-6].
    pub fn to_connack(self) -> Connack {
        Connack {
            session_present: false,
            reason_code: self.reason,
            properties: ConnackProperties::default(),
        }
    }
}

/// Decides on a CONNECT. `assign_id` makes a fresh identifier for an empty one where the spec
/// allows it.
pub fn accept(
    connect: &Connect,
    limits: &Limits,
    assign_id: impl FnOnce() -> String,
) -> Result<Accepted, Refused> {
    let v5 = connect.protocol.is_v5();

    // v5 enhanced authentication is not offered: an Authentication Method we do not support is
    // refused with 0x8C [MQTT-4.12.0-1].
    if v5 && connect.properties.authentication_method.is_some() {
        return Err(Refused::connack(ReasonCode::BadAuthenticationMethod));
    }

    let (client_id, assigned_client_id) = client_identifier(connect, limits, assign_id)?;

    if let Some(will) = &connect.will {
        if topic::validate_name(&will.topic, limits.max_topic_levels).is_err() {
            return Err(if v5 {
                Refused::connack(ReasonCode::TopicNameInvalid)
            } else {
                // [MQTT-3.1.4-1]: a CONNECT that does not conform is closed without CONNACK.
                Refused {
                    reason: ReasonCode::TopicNameInvalid,
                    send_connack: false,
                }
            });
        }
        // [MQTT-3.3.2-14] the will becomes a PUBLISH, whose Response Topic must be a valid
        // Topic Name (v5 only: older wills have no properties).
        if will
            .properties
            .response_topic
            .as_deref()
            .is_some_and(|t| topic::validate_name(t, 0).is_err())
        {
            return Err(Refused::connack(ReasonCode::ProtocolError));
        }
        // [MQTT-3.2.2-12] a will QoS above Maximum QoS; [MQTT-3.2.2-13] will retain without
        // Retain Available.
        if will.qos > limits.max_qos {
            return Err(Refused::connack(ReasonCode::QoSNotSupported));
        }
        if will.retain && !limits.retain_available {
            return Err(Refused::connack(ReasonCode::RetainNotSupported));
        }
    }

    let mut props = ConnackProperties::default();

    let keep_alive = match limits.max_keepalive {
        0 => connect.keep_alive,
        max if connect.keep_alive == 0 || connect.keep_alive > max => {
            if !v5 {
                // 3.1.1 cannot tell the client another value; refusing is what Mosquitto does
                // with max_keepalive.
                return Err(Refused::connack(ReasonCode::ClientIdentifierNotValid));
            }
            // [MQTT-3.2.2-21] the client must use the Server Keep Alive it is given.
            props.server_keep_alive = Some(max);
            max
        }
        _ => connect.keep_alive,
    };

    let session_expiry = if v5 {
        let asked = connect.properties.session_expiry_interval.unwrap_or(0);
        let granted = asked.min(limits.max_session_expiry);
        if granted != asked {
            props.session_expiry_interval = Some(granted);
        }
        granted
    } else if connect.clean_start {
        0
    } else {
        limits.v3_session_expiry
    };

    if v5 {
        props.receive_maximum = Some(limits.receive_maximum);
        if limits.max_qos < QoS::ExactlyOnce {
            props.maximum_qos = Some(limits.max_qos);
        }
        if !limits.retain_available {
            props.retain_available = Some(false);
        }
        props.maximum_packet_size = Some(limits.max_packet_size);
        if assigned_client_id {
            props.assigned_client_identifier = Some(client_id.clone());
        }
        if limits.topic_alias_maximum > 0 {
            props.topic_alias_maximum = Some(limits.topic_alias_maximum);
        }
        if !limits.wildcard_subscription_available {
            props.wildcard_subscription_available = Some(false);
        }
        if !limits.subscription_identifiers_available {
            props.subscription_identifiers_available = Some(false);
        }
        if !limits.shared_subscription_available {
            props.shared_subscription_available = Some(false);
        }
        if connect.properties.request_response_information == Some(true) {
            if let Some(info) = &limits.response_information {
                props.response_information =
                    Some(ByteString::from(info.replace("{clientid}", &client_id)));
            }
        }
    } else {
        props = ConnackProperties::default();
    }

    Ok(Accepted {
        client_id,
        assigned_client_id,
        keep_alive,
        session_expiry,
        connack_properties: props,
    })
}

fn client_identifier(
    connect: &Connect,
    limits: &Limits,
    assign_id: impl FnOnce() -> String,
) -> Result<(ByteString, bool), Refused> {
    let id = &connect.client_id;
    if id.len() > limits.max_client_id_len {
        return Err(Refused::connack(ReasonCode::ClientIdentifierNotValid));
    }
    if !id.is_empty() {
        return Ok((id.clone(), false));
    }
    match connect.protocol {
        // 3.1 requires 1..=23 characters: an empty one is "identifier rejected".
        ProtocolVersion::V3_1 => Err(Refused::connack(ReasonCode::ClientIdentifierNotValid)),
        // [MQTT-3.1.3-8] an empty id with CleanSession 0 is refused with return code 2;
        // [MQTT-3.1.3-6] with CleanSession 1 the server assigns one.
        ProtocolVersion::V3_1_1 if !connect.clean_start => {
            Err(Refused::connack(ReasonCode::ClientIdentifierNotValid))
        }
        // v5 [MQTT-3.1.3-6, MQTT-3.1.3-7]: assign one and return it in CONNACK.
        _ => Ok((ByteString::from(assign_id()), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ConnectProperties, LastWill, WillProperties};
    use bytes::Bytes;

    fn connect(protocol: ProtocolVersion, id: &str, clean: bool) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 30,
            client_id: ByteString::from(id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    fn assign() -> String {
        "auto-1".to_string()
    }

    #[test]
    fn empty_id_v311_clean_gets_an_internal_id() {
        // [MQTT-3.1.3-6]
        let a = accept(
            &connect(ProtocolVersion::V3_1_1, "", true),
            &Limits::default(),
            assign,
        )
        .expect("accepted");
        assert_eq!(&*a.client_id, "auto-1");
        assert!(a.assigned_client_id);
        // Not told to a 3.1.1 client: no properties at all.
        assert_eq!(a.connack_properties, ConnackProperties::default());
    }

    #[test]
    fn empty_id_v311_persistent_is_refused_with_rc2() {
        // [MQTT-3.1.3-8]
        let r = accept(
            &connect(ProtocolVersion::V3_1_1, "", false),
            &Limits::default(),
            assign,
        )
        .expect_err("refused");
        assert_eq!(r.reason.to_v3_connack(), 2);
        assert!(r.send_connack);
    }

    #[test]
    fn empty_id_v5_is_assigned_and_returned() {
        // [MQTT-3.2.2-16]
        let a = accept(
            &connect(ProtocolVersion::V5, "", false),
            &Limits::default(),
            assign,
        )
        .expect("accepted");
        assert_eq!(
            a.connack_properties.assigned_client_identifier.as_deref(),
            Some("auto-1")
        );
    }

    #[test]
    fn keepalive_cap() {
        let limits = Limits {
            max_keepalive: 10,
            ..Limits::default()
        };
        let a = accept(&connect(ProtocolVersion::V5, "c", true), &limits, assign).expect("ok");
        assert_eq!(a.keep_alive, 10);
        assert_eq!(a.connack_properties.server_keep_alive, Some(10));
        let r = accept(
            &connect(ProtocolVersion::V3_1_1, "c", true),
            &limits,
            assign,
        );
        assert!(r.is_err());
    }

    #[test]
    fn v3_session_expiry_follows_clean_session() {
        let limits = Limits::default();
        let a = accept(
            &connect(ProtocolVersion::V3_1_1, "c", true),
            &limits,
            assign,
        )
        .expect("ok");
        assert_eq!(a.session_expiry, 0);
        let a = accept(
            &connect(ProtocolVersion::V3_1_1, "c", false),
            &limits,
            assign,
        )
        .expect("ok");
        assert_eq!(a.session_expiry, limits.v3_session_expiry);
    }

    #[test]
    fn v5_session_expiry_is_capped_and_announced() {
        let limits = Limits {
            max_session_expiry: 100,
            ..Limits::default()
        };
        let mut c = connect(ProtocolVersion::V5, "c", false);
        c.properties.session_expiry_interval = Some(1000);
        let a = accept(&c, &limits, assign).expect("ok");
        assert_eq!(a.session_expiry, 100);
        assert_eq!(a.connack_properties.session_expiry_interval, Some(100));
    }

    #[test]
    fn will_with_wildcard_topic_is_refused() {
        let mut c = connect(ProtocolVersion::V5, "c", true);
        c.will = Some(LastWill {
            topic: ByteString::from("a/#"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        let r = accept(&c, &Limits::default(), assign).expect_err("refused");
        assert_eq!(r.reason, ReasonCode::TopicNameInvalid);
        c.protocol = ProtocolVersion::V3_1_1;
        let r = accept(&c, &Limits::default(), assign).expect_err("refused");
        assert!(!r.send_connack);
    }

    #[test]
    fn unsupported_auth_method_is_0x8c() {
        let mut c = connect(ProtocolVersion::V5, "c", true);
        c.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-1"));
        let r = accept(&c, &Limits::default(), assign).expect_err("refused");
        assert_eq!(r.reason, ReasonCode::BadAuthenticationMethod);
    }
}
