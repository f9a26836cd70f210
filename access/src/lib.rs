//! Access control for beamq, with no actor and no socket in it: the built-in password store,
//! the ACL, bans and flapping detection, per-client rate limits, SCRAM-SHA-256, JWT and the
//! HTTP authentication backend. The broker (`actors/`) calls into these at CONNECT and on
//! every PUBLISH/SUBSCRIBE; keeping them here lets each be tested as a function.

pub mod acl;
pub mod ban;
pub mod bucket;
pub mod http;
pub mod jwt;
pub mod password;
pub mod scram;
