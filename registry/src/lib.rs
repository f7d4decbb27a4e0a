//! Vendor registry service. So far it contains the PostgreSQL storage layer
//! ([`db`]) for vendor metadata, and the mesh still reads vendors straight
//! from the character store.
//!
//! No table stores which pool node serves a vendor: every gateway and pool
//! node computes the owner from the consistent-hash ring.

pub mod db;
pub mod template;

pub use db::{Database, DatabaseConfig, DbError};
