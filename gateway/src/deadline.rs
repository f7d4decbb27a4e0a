//! The `grpc-timeout` request header, read so that a deadline can be passed
//! on to the pool node.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Returns the deadline a client set through `grpc-timeout`, if any.
///
/// The value is at most 8 digits followed by a unit: `H`, `M`, `S`, `m`
/// (milliseconds), `u` (microseconds) or `n` (nanoseconds). A malformed
/// value is ignored, as the gRPC over HTTP/2 protocol allows.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value such as `150m`.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let duration = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        metadata
    }

    #[test]
    fn parses_units() {
        assert_eq!(grpc_timeout(&with("2S")), Some(Duration::from_secs(2)));
        assert_eq!(
            grpc_timeout(&with("150m")),
            Some(Duration::from_millis(150))
        );
        assert_eq!(grpc_timeout(&with("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(&with("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn ignores_malformed() {
        for value in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(&with(value)), None, "{value:?}");
        }
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }
}
