//! The `beamq` node: configuration loading, logging, the application supervision tree and its
//! shutdown. The binary (`main.rs`) is a thin CLI over this library, and the integration tests
//! start nodes through it in-process.

pub mod admin;
pub mod config;
pub mod logging;
pub mod node;

pub use node::{Node, NodeError};
