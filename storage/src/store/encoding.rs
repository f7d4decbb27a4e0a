//! Content encodings of stored objects: none, or zstd with
//! `Content-Encoding: zstd`.

use std::io::Read;

/// Encoding of an object's stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Zstd,
}

/// Parses a `Content-Encoding` header. `aws-chunked` describes only the
/// upload, and S3 is meant to drop it, but some servers keep it, so it is
/// ignored like `identity`.
pub(super) fn parse_content_encoding(header: Option<&str>) -> Result<Encoding, String> {
    let mut encoding = Encoding::Identity;
    let tokens = header
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty());
    for token in tokens {
        if token.eq_ignore_ascii_case("identity") || token.eq_ignore_ascii_case("aws-chunked") {
            continue;
        }
        if token.eq_ignore_ascii_case("zstd") && encoding == Encoding::Identity {
            encoding = Encoding::Zstd;
            continue;
        }
        return Err(format!(
            "Content-Encoding {:?} is not supported; store the object uncompressed or \
             compressed once with zstd and Content-Encoding: zstd",
            header.unwrap_or_default()
        ));
    }
    Ok(encoding)
}

/// Failure to decompress zstd data.
#[derive(Debug, thiserror::Error)]
pub(super) enum ZstdError {
    #[error("it decompresses to more than {limit} bytes, the limit for this file")]
    TooLarge { limit: u64 },
    #[error("invalid zstd data: {0}")]
    Invalid(#[from] std::io::Error),
}

/// zstd level for stored objects: fast to write, and text compresses well.
const ZSTD_LEVEL: i32 = 3;

/// Compresses data for storing with `Content-Encoding: zstd`.
pub(super) fn encode_zstd(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::encode_all(bytes, ZSTD_LEVEL)
}

/// Decompresses zstd data, stopping after `limit` bytes of output so that
/// a small object cannot expand without bound.
pub(super) fn decode_zstd(compressed: &[u8], limit: u64) -> Result<Vec<u8>, ZstdError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
    let mut decoded = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut decoded)?;
    if decoded.len() as u64 > limit {
        return Err(ZstdError::TooLarge { limit });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_KNOWLEDGE_FILE_BYTES;

    #[test]
    fn encoded_objects_decode() {
        let text = "Sourdough loaf: £4.20. ".repeat(100);
        let compressed = encode_zstd(text.as_bytes()).unwrap();
        assert!(compressed.len() < text.len() / 4);
        assert_eq!(
            decode_zstd(&compressed, MAX_KNOWLEDGE_FILE_BYTES).unwrap(),
            text.as_bytes()
        );
    }

    #[test]
    fn zstd_round_trip() {
        let text = b"Sourdough loaf: \xc2\xa34.20\n".repeat(100);
        let compressed = zstd::encode_all(&text[..], 3).unwrap();
        assert!(compressed.len() < text.len());
        assert_eq!(decode_zstd(&compressed, 1 << 20).unwrap(), text);
        let exact = u64::try_from(text.len()).unwrap();
        assert_eq!(decode_zstd(&compressed, exact).unwrap(), text);
    }

    #[test]
    fn zstd_bomb_stops_at_limit() {
        // 64 MiB of zeros compress to a few kilobytes.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        let error = decode_zstd(&bomb, MAX_KNOWLEDGE_FILE_BYTES).unwrap_err();
        assert!(matches!(error, ZstdError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("8388608"), "{error}");
    }

    #[test]
    fn zstd_rejects_other_data() {
        let error = decode_zstd(b"plain text, not zstd", 1024).unwrap_err();
        assert!(matches!(error, ZstdError::Invalid(_)), "{error}");
        let mut truncated = zstd::encode_all(&b"hello world"[..], 3).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(decode_zstd(&truncated, 1024).is_err());
    }

    #[test]
    fn content_encodings() {
        assert_eq!(parse_content_encoding(None), Ok(Encoding::Identity));
        assert_eq!(parse_content_encoding(Some("")), Ok(Encoding::Identity));
        assert_eq!(
            parse_content_encoding(Some("identity")),
            Ok(Encoding::Identity)
        );
        assert_eq!(parse_content_encoding(Some("zstd")), Ok(Encoding::Zstd));
        assert_eq!(parse_content_encoding(Some("ZSTD")), Ok(Encoding::Zstd));
        assert_eq!(
            parse_content_encoding(Some("aws-chunked, zstd")),
            Ok(Encoding::Zstd)
        );
        for unsupported in ["gzip", "br", "zstd, zstd", "zstd, gzip"] {
            let error = parse_content_encoding(Some(unsupported)).unwrap_err();
            assert!(error.contains("not supported"), "{unsupported}: {error}");
        }
    }
}
