//! beamq-protocol: MQTT 3.1, 3.1.1 and 5.0 without I/O.
//!
//! This crate turns bytes into [`Packet`]s and back, checks every rule the spec puts on a single
//! packet, and (in [`session`]) runs the per-connection protocol state machine. It depends on
//! neither tokio nor ractor and never reads a clock: time comes in as an argument. That is what
//! lets it be fuzzed and tested as a plain function, the way rustls and quinn-proto are.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod packet;
pub mod reason;
pub mod session;
pub mod topic;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use reason::ReasonCode;
