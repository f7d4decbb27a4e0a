//! End-to-end tests of the mesh: real etcd, real gateway and pool node
//! processes, and real clients (grpcurl, a Python grpcio client).

mod chaos;
mod characters;
mod clients;
mod errors;
mod failover;
mod gateway;
mod membership;
mod registry;
mod registry_db;
mod routing;
mod shared_state;
mod storage;
