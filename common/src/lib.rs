//! Shared parts of the Voca mesh: the rules for ids and text, the
//! consistent-hash ring, and pool node membership.

pub mod grpc;
pub mod input;
pub mod member;
pub mod membership;
pub mod process;
pub mod ring;

pub use member::{Member, NodeState};
pub use membership::{MembershipError, RingHandle};
pub use ring::{vendor_position, Ring, RingParams};
