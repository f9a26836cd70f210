//! The per-connection protocol state machine and the session it carries.
//!
//! - [`connect`] decides on a CONNECT (identifier, keep alive, expiry, CONNACK properties);
//! - [`channel`] runs the packet exchange of one client: QoS handshakes in both directions,
//!   topic aliases, flow control (Receive Maximum, Maximum Packet Size, a write budget), the
//!   bounded queue, retained messages owed after SUBSCRIBE;
//! - [`state`] is the session that outlives connections and moves on takeover;
//! - [`message`] is the application message shared by all its subscribers.

pub mod channel;
pub mod connect;
pub mod limits;
pub mod message;
pub mod state;

#[cfg(test)]
mod tests;

pub use channel::{Channel, Dispatcher, Effect, Violation};
pub use connect::{Accepted, Refused};
pub use limits::{DropPolicy, Limits};
pub use message::{Delivery, Message, MessageProperties, ShareRef};
pub use state::{DropReason, Inflight, Phase, RetainedCursor, SessionState, Subscription};
