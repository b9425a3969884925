//! SPIFFE identities, parsed once at the boundary.
//!
//! [`SpiffeId::parse`] accepts only the canonical form of the SPIFFE ID specification:
//! lowercase `spiffe` scheme, a trust domain of `[a-z0-9._-]`, a path of segments of
//! `[A-Za-z0-9._-]` with no empty, `.` or `..` segment and no trailing slash, and nothing else:
//! no percent-encoding, port, userinfo, query or fragment. A non-canonical spelling is an error,
//! never silently normalised, so two IDs are the same identity exactly when their strings are
//! equal.
//!
//! It does not check that the ID belongs to an allowed trust domain; callers do that with
//! [`SpiffeId::trust_domain`] against their configured set.

use std::fmt;

const SCHEME: &str = "spiffe://";
/// The SPIFFE spec caps a trust domain at 255 bytes and a whole ID at 2048.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const MAX_ID_LEN: usize = 2048;

/// Why a string is not a canonical SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiffeIdError {
    Empty,
    WrongScheme,
    EmptyTrustDomain,
    BadTrustDomainChar,
    TrustDomainTooLong,
    EmptySegment,
    DotSegment,
    TrailingSlash,
    BadPathChar,
    TooLong,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "is empty",
            Self::WrongScheme => "does not start with spiffe://",
            Self::EmptyTrustDomain => "has an empty trust domain",
            Self::BadTrustDomainChar => {
                "has a trust domain with characters other than lowercase letters, digits, '.', '-', '_' (no port or userinfo)"
            }
            Self::TrustDomainTooLong => "has a trust domain longer than 255 bytes",
            Self::EmptySegment => "has an empty path segment",
            Self::DotSegment => "has a '.' or '..' path segment",
            Self::TrailingSlash => "ends with '/'",
            Self::BadPathChar => {
                "has a path with characters other than letters, digits, '.', '-', '_' (no percent-encoding, query or fragment)"
            }
            Self::TooLong => "is longer than 2048 bytes",
        })
    }
}

impl std::error::Error for SpiffeIdError {}

fn is_trust_domain_char(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'_')
}

fn is_path_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_')
}

/// A trust domain name such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain {
    name: String,
}

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`, not `spiffe://example.org`).
    pub fn parse(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !name.bytes().all(is_trust_domain_char) {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    // `path` is empty or starts with '/'.
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if !segment.bytes().all(is_path_char) {
            return Err(SpiffeIdError::BadPathChar);
        }
    }
    Ok(())
}

/// A canonical SPIFFE ID. Built only by [`SpiffeId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID as received: canonical, so string equality is identity equality. Boxed
    /// (no spare capacity): cached tokens hold one per actor.
    id: Box<str>,
    /// Byte offset where the trust domain ends and the path (possibly empty) starts
    /// (IDs are at most `MAX_ID_LEN` bytes).
    trust_domain_end: u32,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID in canonical form (see the module docs).
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let trust_domain_len = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..trust_domain_len])?;
        validate_path(&rest[trust_domain_len..])?;
        let trust_domain_end =
            u32::try_from(SCHEME.len() + trust_domain_len).map_err(|_| SpiffeIdError::TooLong)?;
        Ok(Self {
            id: input.into(),
            trust_domain_end,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.trust_domain_end as usize]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end as usize..]
    }

    /// Whether this names a workload: an ID with a path. The trust domain's own ID
    /// (`spiffe://example.org`) is not one: X509-SVID §4.2 has a leaf's ID carry a non-root
    /// path, and an actor stands for a workload that once was a caller.
    pub fn is_workload(&self) -> bool {
        !self.path().is_empty()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// An entry of a route's `allow_callers`: one exact ID, or every ID under a path
/// (`spiffe://example.org/agent/*` matches `…/agent/x` and `…/agent/x/y`, not `…/agent`
/// nor `…/agents/x`; `spiffe://example.org/*` matches every ID of that trust domain that has a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerPattern {
    Exact(SpiffeId),
    Under {
        trust_domain: String,
        /// Empty or starting with '/', never ending with '/'.
        path_prefix: String,
    },
}

impl CallerPattern {
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        match input.strip_suffix("/*") {
            Some(base) => {
                let base = SpiffeId::parse(base)?;
                Ok(Self::Under {
                    trust_domain: base.trust_domain().to_owned(),
                    path_prefix: base.path().to_owned(),
                })
            }
            None => SpiffeId::parse(input).map(Self::Exact),
        }
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Under {
                trust_domain,
                path_prefix,
            } => {
                id.trust_domain() == trust_domain
                    && id
                        .path()
                        .strip_prefix(path_prefix.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_ids() {
        for input in [
            "spiffe://example.org",
            "spiffe://example.org/agent/scheduler",
            "spiffe://prod-1.example_org/ns/default/sa/Tool.v2",
        ] {
            let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(id.as_str(), input);
        }
        let id = SpiffeId::parse("spiffe://example.org/agent/x").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/agent/x");
    }

    #[test]
    fn rejects_each_non_canonical_form() {
        use SpiffeIdError::*;
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        let long_id = format!("spiffe://example.org/{}", "a".repeat(2048));
        let cases: &[(&str, &str, SpiffeIdError)] = &[
            ("empty", "", Empty),
            ("http scheme", "https://example.org/x", WrongScheme),
            ("uppercase scheme", "SPIFFE://example.org/x", WrongScheme),
            ("no trust domain", "spiffe:///x", EmptyTrustDomain),
            (
                "uppercase trust domain",
                "spiffe://Example.org/x",
                BadTrustDomainChar,
            ),
            ("port", "spiffe://example.org:443/x", BadTrustDomainChar),
            (
                "userinfo",
                "spiffe://user@example.org/x",
                BadTrustDomainChar,
            ),
            ("trust domain too long", &long_td, TrustDomainTooLong),
            ("empty segment", "spiffe://example.org//x", EmptySegment),
            ("dot segment", "spiffe://example.org/./x", DotSegment),
            ("dot-dot segment", "spiffe://example.org/a/../x", DotSegment),
            ("trailing slash", "spiffe://example.org/x/", TrailingSlash),
            ("root only", "spiffe://example.org/", TrailingSlash),
            (
                "percent-encoding",
                "spiffe://example.org/a%2Fb",
                BadPathChar,
            ),
            ("query", "spiffe://example.org/x?y=1", BadPathChar),
            ("fragment", "spiffe://example.org/x#y", BadPathChar),
            ("space", "spiffe://example.org/a b", BadPathChar),
            ("too long", &long_id, TooLong),
        ];
        for (name, input, expected) in cases {
            assert_eq!(SpiffeId::parse(input), Err(*expected), "case {name}");
        }
    }

    #[test]
    fn rule_ids_up_to_2048_bytes_parse_and_longer_ones_do_not() {
        // SPIFFE-ID §2.3: IDs up to 2048 bytes MUST be supported; the limit is exact.
        let prefix = "spiffe://example.org/";
        let of_length = |length: usize| format!("{prefix}{}", "a".repeat(length - prefix.len()));
        let longest = of_length(2048);
        assert_eq!(longest.len(), 2048);
        assert_eq!(
            SpiffeId::parse(&longest).map(|id| id.as_str().len()),
            Ok(2048)
        );
        assert_eq!(
            SpiffeId::parse(&of_length(2049)),
            Err(SpiffeIdError::TooLong)
        );
    }

    #[test]
    fn caller_pattern_glob_is_segment_aware() {
        let pattern = CallerPattern::parse("spiffe://example.org/agent/*").unwrap();
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        assert!(pattern.matches(&id("spiffe://example.org/agent/x")));
        assert!(pattern.matches(&id("spiffe://example.org/agent/x/y")));
        assert!(!pattern.matches(&id("spiffe://example.org/agent")));
        assert!(!pattern.matches(&id("spiffe://example.org/agents/x")));
        assert!(!pattern.matches(&id("spiffe://other.org/agent/x")));
        let whole_domain = CallerPattern::parse("spiffe://example.org/*").unwrap();
        assert!(whole_domain.matches(&id("spiffe://example.org/a")));
        assert!(!whole_domain.matches(&id("spiffe://example.org")));
        let exact = CallerPattern::parse("spiffe://example.org/agent/x").unwrap();
        assert!(exact.matches(&id("spiffe://example.org/agent/x")));
        assert!(!exact.matches(&id("spiffe://example.org/agent/x/y")));
        assert!(CallerPattern::parse("spiffe://example.org/a*").is_err());
    }
}
