//! The vendor registry: the control plane that creates, changes, lists and
//! erases vendors, over the `voca.v1.VendorRegistry` gRPC API.
//!
//! A vendor's metadata lives in PostgreSQL ([`db`]), or in an embedded
//! SQLite file for the quickstart. Its files live in the character store,
//! and what pool nodes share about it lives in Redis. The [`Registrar`]
//! keeps the three consistent. No table stores which pool node serves a
//! vendor: every gateway, pool node and the registry compute the owner from
//! the consistent-hash ring.

pub mod db;
pub mod error;
pub mod registrar;
pub mod repository;
pub mod request;
pub mod server;
pub mod service;
pub mod template;

pub use db::{Database, DatabaseConfig, DbError, SqliteDatabase};
pub use registrar::Registrar;
pub use repository::VendorRepository;
