//! Transports a client can connect over, below MQTT: TLS (rustls, mutual TLS), WebSocket and
//! secure WebSocket, and the PROXY protocol header a load balancer puts in front of any of them.
//! Each yields a byte stream that `connection::serve` runs MQTT on.

pub mod proxy;
pub mod tls;
pub mod ws;
