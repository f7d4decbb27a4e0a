//! The pool node: it registers on the ring, loads the characters of the
//! vendors routed to it, and answers their customers.

pub mod agents;
pub mod history;
pub mod rebalance;
pub mod server;
pub mod service;

pub use voca_storage::{hot, store};

pub use server::{start, MembershipConfig, PoolNodeConfig, RunningPoolNode};
