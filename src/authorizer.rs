//! The decision pipeline of DESIGN.md, steps 1–7, first failure wins:
//! caller identity → route → bearer token → verified token → binding, chain, route rules.
//!
//! It owns two caches, both holding only *successes*, so a flood of bad certificates or
//! tokens costs CPU per request but can neither grow memory nor evict good entries:
//! - verified tokens, keyed by the SHA-256 of the token bytes, each entry expiring when the
//!   token does (plus leeway) and re-checked against the clock on every hit; binding, chain
//!   and route rules are re-run on every request, so the answer always reflects the caller,
//!   route and method at hand. A new configuration builds a new `Authorizer`, with empty
//!   caches, so nothing decided under old keys or rules survives a change.
//! - caller SPIFFE IDs, keyed by the SHA-256 of the URL-encoded certificate.

use crate::config::Config;
use crate::identity::{self, IdentitySource, PeerFacts};
use crate::path;
use crate::policy::{self, DelegationPolicy, Grant};
use crate::reason::{Denial, DenyReason};
use crate::response::{self, ResponseSettings};
use crate::routes::RouteTable;
use crate::spiffe::SpiffeId;
use crate::token::{self, VerifiedToken, Verifier};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use moka::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Digest = [u8; 32];

/// Bound on how long any entry may sit in a cache regardless of token lifetime.
const MAX_ENTRY_TTL: Duration = Duration::from_secs(3600);
const CERTIFICATE_CACHE_ENTRIES: u64 = 10_000;

fn sha256(bytes: &[u8]) -> Digest {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A cached verification, with how long it may live.
#[derive(Clone)]
struct CachedToken {
    token: Arc<VerifiedToken>,
    time_to_live: Duration,
}

struct UntilTokenExpiry;

impl moka::Expiry<Digest, CachedToken> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &CachedToken,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.time_to_live)
    }
}

/// Stands in for a header value that is not UTF-8: a `Bearer` credential with a character no
/// token may contain, so it is refused as `authorization_invalid`.
const NOT_UTF8: &str = "Bearer \u{fffd}";

/// The facts of one request, borrowed from the `CheckRequest`.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts<'a> {
    pub peer: PeerFacts<'a>,
    pub method: &'a str,
    pub host: &'a str,
    /// `:path` as received, query included.
    pub path: &'a str,
    /// Every `Authorization` header value.
    pub authorization: Vec<&'a str>,
    /// Names of request headers starting with `x-actguard-` (whatever the client sent under
    /// our prefix), so the allow response can remove those it does not set.
    pub prefixed_headers: Vec<&'a str>,
}

fn has_actguard_prefix(name: &str) -> bool {
    name.get(..response::HEADER_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(response::HEADER_PREFIX))
}

impl<'a> RequestFacts<'a> {
    /// Reads the facts Envoy sends. Missing parts read as empty and are denied downstream.
    pub fn from_check_request(request: &'a CheckRequest) -> Self {
        let attributes = request.attributes.as_ref();
        let source = attributes.and_then(|a| a.source.as_ref());
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let mut facts = RequestFacts {
            peer: PeerFacts {
                certificate: source.map_or("", |s| s.certificate.as_str()),
                principal: source.map_or("", |s| s.principal.as_str()),
                xfcc: None,
            },
            ..Default::default()
        };
        let Some(http) = http else {
            return facts;
        };
        facts.method = &http.method;
        facts.host = &http.host;
        facts.path = &http.path;
        if let Some(value) = http.headers.get("authorization") {
            facts.authorization.push(value);
        }
        facts.peer.xfcc = http
            .headers
            .get("x-forwarded-client-cert")
            .map(String::as_str);
        facts.prefixed_headers = http
            .headers
            .keys()
            .map(String::as_str)
            .filter(|name| has_actguard_prefix(name))
            .collect();
        // With `encode_raw_headers`, Envoy sends `header_map` instead of `headers`.
        if let Some(header_map) = &http.header_map {
            for header in &header_map.headers {
                // A value that is not UTF-8 cannot be a valid credential or XFCC; the
                // replacement keeps it present so it is denied as malformed, not as missing.
                let value = if header.raw_value.is_empty() {
                    header.value.as_str()
                } else {
                    std::str::from_utf8(&header.raw_value).unwrap_or(NOT_UTF8)
                };
                if header.key.eq_ignore_ascii_case("authorization") {
                    facts.authorization.push(value);
                } else if header.key.eq_ignore_ascii_case("x-forwarded-client-cert") {
                    facts.peer.xfcc = Some(value);
                } else if has_actguard_prefix(&header.key) {
                    facts.prefixed_headers.push(&header.key);
                }
            }
        }
        facts
    }
}

/// Decides requests for one configuration.
pub struct Authorizer {
    identity_sources: Vec<IdentitySource>,
    delegation: DelegationPolicy,
    routes: RouteTable,
    verifier: Verifier,
    response: ResponseSettings,
    /// `None` when `cache.max_entries` is 0.
    token_cache: Option<Cache<Digest, CachedToken>>,
    certificate_cache: Cache<Digest, SpiffeId>,
}

impl Authorizer {
    pub fn new(config: Config) -> Self {
        let cache = config.cache;
        let token_cache = (cache.max_entries > 0).then(|| {
            // One weigher bounds both: each entry weighs at least max_bytes / max_entries, so
            // there can be no more than max_entries, and the weights never sum past max_bytes.
            let floor = (cache.max_bytes / cache.max_entries).max(1);
            Cache::builder()
                .max_capacity(cache.max_bytes)
                .weigher(move |_key: &Digest, value: &CachedToken| {
                    let estimate = (value.token.approximate_size() + 64) as u64;
                    u32::try_from(estimate.max(floor)).unwrap_or(u32::MAX)
                })
                .expire_after(UntilTokenExpiry)
                .build()
        });
        Self {
            identity_sources: config.identity_sources,
            delegation: config.delegation,
            routes: config.routes,
            verifier: Verifier::new(
                config.issuers,
                config.local_identity.as_str().to_owned(),
                config.leeway,
                config.max_token_bytes,
            ),
            response: config.response,
            token_cache,
            certificate_cache: Cache::builder()
                .max_capacity(CERTIFICATE_CACHE_ENTRIES)
                .time_to_live(MAX_ENTRY_TTL)
                .build(),
        }
    }

    /// Answers one `CheckRequest`.
    pub fn check(&self, request: &CheckRequest) -> CheckResponse {
        let facts = RequestFacts::from_check_request(request);
        let outcome = self.decide(&facts, token::unix_now());
        match &outcome {
            Ok(grant) => tracing::debug!(
                caller = %grant.actor, route = %grant.route, chain = %grant.chain.join(","),
                "allow"
            ),
            Err(denial) => {
                tracing::debug!(reason = denial.reason.code(), method = facts.method, "deny")
            }
        }
        response::check_response(&outcome, &facts.prefixed_headers, &self.response)
    }

    /// Runs the pipeline on request facts at time `now` (Unix seconds).
    pub fn decide(&self, facts: &RequestFacts<'_>, now: i64) -> Result<Grant, Denial> {
        let caller = identity::caller_identity(&self.identity_sources, &facts.peer, |pem| {
            self.caller_from_certificate(pem)
        })?;
        if !self.delegation.allows_trust_domain(caller.trust_domain()) {
            return Err(Denial::new(
                DenyReason::CallerTrustDomainDenied,
                "the caller's trust domain is not allowed",
            ));
        }
        let normalized = path::normalize(facts.path)
            .map_err(|error| Denial::new(DenyReason::PathInvalid, error.description()))?;
        let route = self
            .routes
            .select(facts.method, facts.host, &normalized)
            .ok_or_else(|| Denial::new(DenyReason::NoRoute, "no route matches the request"))?;
        let bearer = token::bearer_token(&facts.authorization)?;
        let verified = self.verified_token(bearer, now)?;
        policy::authorize(&self.delegation, &caller, route, &verified)
    }

    fn caller_from_certificate(&self, url_encoded_pem: &str) -> Result<SpiffeId, Denial> {
        let key = sha256(url_encoded_pem.as_bytes());
        if let Some(id) = self.certificate_cache.get(&key) {
            return Ok(id);
        }
        let id = identity::spiffe_id_from_certificate(url_encoded_pem)?;
        self.certificate_cache.insert(key, id.clone());
        Ok(id)
    }

    fn verified_token(&self, bearer: &str, now: i64) -> Result<Arc<VerifiedToken>, Denial> {
        let Some(cache) = &self.token_cache else {
            return self.verifier.verify(bearer, now).map(Arc::new);
        };
        let key = sha256(bearer.as_bytes());
        if let Some(hit) = cache.get(&key) {
            if self.verifier.is_unexpired(&hit.token, now) {
                return Ok(hit.token);
            }
            cache.invalidate(&key);
            return Err(Denial::new(
                DenyReason::TokenExpired,
                "the token has expired",
            ));
        }
        let token = Arc::new(self.verifier.verify(bearer, now)?);
        let time_to_live =
            Duration::from_secs(self.verifier.remaining_lifetime(&token, now)).min(MAX_ENTRY_TTL);
        cache.insert(
            key,
            CachedToken {
                token: Arc::clone(&token),
                time_to_live,
            },
        );
        Ok(token)
    }

    /// Number of cached verified tokens (after pending evictions run). For tests and metrics.
    pub fn cached_token_count(&self) -> u64 {
        self.token_cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }
}
