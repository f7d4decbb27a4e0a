//! The gateway: it serves the public API and forwards each call to the pool
//! node that owns the vendor on the consistent-hash ring.

pub mod deadline;
pub mod registry;
pub mod routes;
pub mod server;
pub mod service;

pub use server::{start, GatewayConfig, RunningGateway};
pub use voca_common::membership::RingSource;
