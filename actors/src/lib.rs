//! beamq-actors: the broker's actors and the shared tables they work on.
//!
//! One actor per file, each with a header saying who supervises it, its restart type, who sends
//! it what and what it owns:
//! - [`client`]: one per MQTT client, holding its session; temporary child of `session_sup`;
//! - [`router`]: writes the route table for its share of the filters; permanent;
//! - [`registry`]: client id -> client actor, serializing takeovers; permanent;
//! - [`retainer`]: upkeep of the retained-message store; permanent;
//! - [`listener`]: accepts sockets for one endpoint; permanent;
//! - [`sys`]: publishes `$SYS` topics; permanent;
//! - [`cluster`]: membership and the bridge to other nodes (and the `NodeServer` of
//!   ractor_cluster); permanent.
//!
//! Not actors: [`connection`] (the socket task of a client), [`route_table`] and [`retained`]
//! (shared, read-mostly tables: the ETS analogue), [`broker`] (the context every actor shares),
//! [`link`] (the bounded way to reach a client), [`metrics`] and [`config`].

pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod link;
pub mod listener;
pub mod metrics;
pub mod registry;
pub mod retained;
pub mod retainer;
pub mod route_table;
pub mod router;
pub mod sys;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod transport;

pub use broker::Broker;
pub use config::Config;
