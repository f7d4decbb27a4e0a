//! A pool node as membership records it.

use serde::{Deserialize, Serialize};

use crate::input::check_node_id;
use crate::ring::MAX_WEIGHT;

/// Whether a pool node takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Serving,
    Draining,
}

/// A registered pool node. This is the JSON value stored under the node's
/// membership key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable node id; the only property of a node that placement hashes.
    pub id: String,
    /// Address gateways dial, as `host:port`.
    pub address: String,
    /// Relative capacity, 1 to 100; scales the node's points on the ring.
    pub weight: u32,
    pub state: NodeState,
    /// Release of the software the node runs.
    pub version: String,
    /// Random id of the process registered under this id, so that a node
    /// can tell a restarted process from the one that held a claim before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
}

/// A membership value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMember {
    #[error("value is not a member record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("node id in the value is {found:?} but the key names {expected:?}")]
    IdMismatch { expected: String, found: String },
    #[error("{0}")]
    Id(#[from] crate::input::InvalidInput),
    #[error("weight {0} is out of range 1..={MAX_WEIGHT}")]
    Weight(u32),
    #[error("address {0:?} is not host:port")]
    Address(String),
}

impl Member {
    /// Parses and checks a membership value stored under `key_id`.
    pub fn decode(key_id: &str, value: &[u8]) -> Result<Member, InvalidMember> {
        let member: Member = serde_json::from_slice(value)?;
        if member.id != key_id {
            return Err(InvalidMember::IdMismatch {
                expected: key_id.to_owned(),
                found: member.id,
            });
        }
        member.check()?;
        Ok(member)
    }

    /// Checks the id, weight and address.
    pub fn check(&self) -> Result<(), InvalidMember> {
        check_node_id(&self.id)?;
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return Err(InvalidMember::Weight(self.weight));
        }
        if !is_host_port(&self.address) {
            return Err(InvalidMember::Address(self.address.clone()));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member always serializes")
    }
}

/// Returns whether `address` is `host:port` with a DNS name or IPv4
/// address as host, or `[v6]:port`, and a port other than 0.
pub fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    if !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    is_dns_name(host)
}

/// Returns whether `host` is a DNS name (which includes dotted IPv4
/// addresses): labels of 1 to 63 ASCII letters, digits and hyphens, not
/// starting or ending with a hyphen, 253 bytes at most.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            address: "127.0.0.1:7001".to_owned(),
            weight: 1,
            state: NodeState::Serving,
            version: "0.1.0".to_owned(),
            incarnation: "5f0c2a7d9e4b1836".to_owned(),
        }
    }

    #[test]
    fn decode_round_trip() {
        let original = member("pool-1");
        assert_eq!(
            Member::decode("pool-1", &original.encode()).unwrap(),
            original
        );
    }

    #[test]
    fn decode_rejects_bad_values() {
        assert!(matches!(
            Member::decode("pool-1", b"{not json"),
            Err(InvalidMember::Json(_))
        ));
        assert!(matches!(
            Member::decode("pool-2", &member("pool-1").encode()),
            Err(InvalidMember::IdMismatch { .. })
        ));
        let mut heavy = member("pool-1");
        heavy.weight = 0;
        assert!(matches!(
            Member::decode("pool-1", &heavy.encode()),
            Err(InvalidMember::Weight(0))
        ));
        let mut nowhere = member("pool-1");
        nowhere.address = "localhost".to_owned();
        assert!(matches!(
            Member::decode("pool-1", &nowhere.encode()),
            Err(InvalidMember::Address(_))
        ));
    }

    #[test]
    fn host_port_forms() {
        assert!(is_host_port("127.0.0.1:80"));
        assert!(is_host_port("[::1]:7001"));
        assert!(is_host_port("pool-0.pools.voca.svc:7001"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port("127.0.0.1:0"));
        assert!(!is_host_port("http://a:1"));
        assert!(!is_host_port(":80"));
        assert!(!is_host_port("exa mple:1"));
        assert!(!is_host_port("::1:80"));
        assert!(!is_host_port("[::1:1"));
        assert!(!is_host_port("[zz]:1"));
        assert!(!is_host_port("-host:1"));
        assert!(!is_host_port("host..name:1"));
        assert!(is_host_port("localhost:50051"));
    }
}
