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
//!
//! In front of each, every worker thread remembers its last few certificates and tokens
//! ([`recent_callers`], [`recent_tokens`]), so the common case hashes neither.

use crate::decision::identity::{self, IdentitySource, PeerFacts};
use crate::decision::path;
use crate::decision::policy::{self, DelegationPolicy, Grant};
use crate::decision::reason::{Denial, DenyReason, Fault};
use crate::decision::record::{AuditRecord, DecisionLog, NoDecisionLog};
use crate::decision::response::{self, Answer, ResponseSettings};
use crate::decision::revocation::RevocationList;
use crate::decision::routes::RouteTable;
use crate::decision::settings::DecisionSettings;
use crate::decision::spiffe::SpiffeId;
use crate::decision::telemetry::DecisionMetrics;
use crate::decision::token::{self, RemoteKeys, VerifiedToken, Verifier};
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

/// The last few peer certificates each worker thread saw, compared byte for byte: a tool is
/// called by a handful of agents, so most checks find their caller here without hashing the
/// ~1 KB certificate or touching the shared cache. Safe across reloads and authorizers: the
/// SPIFFE ID is a pure function of the certificate bytes (only successes are remembered).
mod recent_callers {
    use crate::decision::spiffe::SpiffeId;
    use std::cell::RefCell;

    const SLOTS: usize = 4;
    /// Larger certificates are not remembered (bounds the memory per thread).
    const MAX_CERTIFICATE_BYTES: usize = 8 * 1024;

    #[derive(Default)]
    struct Recent {
        slots: [Option<(Box<str>, SpiffeId)>; SLOTS],
        next: usize,
    }

    thread_local! {
        static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
    }

    pub(super) fn get(certificate: &str) -> Option<SpiffeId> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                recent
                    .slots
                    .iter()
                    .flatten()
                    .find(|(seen, _)| **seen == *certificate)
                    .map(|(_, id)| id.clone())
            })
            .ok()
            .flatten()
    }

    pub(super) fn remember(certificate: &str, id: &SpiffeId) {
        if certificate.len() > MAX_CERTIFICATE_BYTES {
            return;
        }
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                let slot = recent.next;
                recent.slots[slot] = Some((certificate.into(), id.clone()));
                recent.next = (slot + 1) % SLOTS;
            }
        });
    }
}

/// The last few bearer tokens each worker thread verified or found in the token cache, compared
/// in constant time: an agent reuses its token for many calls, so most checks find it here
/// without the SHA-256 of the token or a lookup in the shared cache. An entry belongs to one
/// [`Authorizer`] (a reload builds a new one, so nothing crosses a configuration) and lives no
/// longer than its token-cache entry would; a hit is re-checked exactly like a cache hit (key
/// still published, token unexpired), and revocation and the policy run on every request.
///
/// Outside `cache.max_bytes`: at most 4 tokens of ≤ 8 KiB and their verifications per worker
/// thread. Hits here do not reach the shared cache, so its eviction policy does not see how hot
/// these tokens are; one evicted there is still served here until its entry would have expired.
mod recent_tokens {
    use crate::decision::token::VerifiedToken;
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::time::Instant;

    const SLOTS: usize = 4;
    /// Larger tokens are not remembered (bounds the memory per thread).
    const MAX_TOKEN_BYTES: usize = 8 * 1024;

    struct Entry {
        owner: u64,
        token: Box<[u8]>,
        verified: Arc<VerifiedToken>,
        /// When the token-cache entry it came from expires.
        expires_at: Instant,
    }

    #[derive(Default)]
    struct Recent {
        slots: [Option<Entry>; SLOTS],
        next: usize,
    }

    thread_local! {
        static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
    }

    /// Equal contents, in time that depends only on the lengths (aws-lc's `CRYPTO_memcmp`): a
    /// cached token is another caller's secret, and an early exit would time how much of it a
    /// guess got right.
    fn same(a: &[u8], b: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
    }

    pub(super) fn get(owner: u64, token: &str, now: Instant) -> Option<Arc<VerifiedToken>> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let mut found = None;
                for entry in recent.slots.iter().flatten() {
                    if entry.owner == owner
                        && same(&entry.token, token.as_bytes())
                        && now < entry.expires_at
                    {
                        found = Some(Arc::clone(&entry.verified));
                    }
                }
                found
            })
            .ok()
            .flatten()
    }

    pub(super) fn remember(
        owner: u64,
        token: &str,
        verified: &Arc<VerifiedToken>,
        expires_at: Instant,
    ) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                // A free slot, or one of a replaced configuration, before the oldest of ours:
                // entries of an old configuration are not kept alive longer than needed.
                let free = recent
                    .slots
                    .iter()
                    .position(|slot| slot.as_ref().is_none_or(|entry| entry.owner != owner));
                let slot = free.unwrap_or(recent.next);
                recent.slots[slot] = Some(Entry {
                    owner,
                    token: token.as_bytes().into(),
                    verified: Arc::clone(verified),
                    expires_at,
                });
                if free.is_none() {
                    recent.next = (slot + 1) % SLOTS;
                }
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn remembered_tokens_match_only_in_full() {
            assert!(same(b"header.payload.sig", b"header.payload.sig"));
            assert!(!same(b"header.payload.sig", b"header.payload.sih"));
            assert!(!same(b"header.payload.sig", b"header.payload.sig2"));
            assert!(!same(b"", b"a"));
        }

        #[test]
        fn remembered_token_is_forgotten_when_its_cache_entry_expires_and_kept_per_owner() {
            let verified = Arc::new(VerifiedToken::from_claims_for_tests(
                &serde_json::json!({ "sub": "user:alice" }),
            ));
            let now = Instant::now();
            remember(u64::MAX, "a.b.c", &verified, now + Duration::from_secs(1));
            assert!(get(u64::MAX, "a.b.c", now).is_some());
            assert!(get(u64::MAX, "a.b.c", now + Duration::from_secs(1)).is_none());
            assert!(
                get(u64::MAX - 1, "a.b.c", now).is_none(),
                "another authorizer"
            );
            assert!(get(u64::MAX, "a.b.", now).is_none());
        }
    }
}

/// Distinguishes authorizers in the per-thread [`recent_tokens`].
static NEXT_AUTHORIZER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What one entry costs the cache itself beyond the token: moka's bookkeeping for an entry with
/// per-entry expiry (~300 bytes in 7 allocations, measured with a counting allocator), the key
/// and the allocator's per-allocation overhead. Counted so `cache.max_bytes` bounds real memory.
const CACHE_ENTRY_OVERHEAD: usize = 400;

/// A cached verification, with how long it may live.
#[derive(Clone)]
struct CachedToken {
    token: Arc<VerifiedToken>,
    /// When the entry expires: the token's expiry (plus leeway), at most [`MAX_ENTRY_TTL`].
    expires_at: Instant,
}

struct UntilTokenExpiry;

impl moka::Expiry<Digest, CachedToken> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &CachedToken,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

/// Stands in for a header value that is not UTF-8: a `Bearer` credential with a character no
/// token may contain, so it is refused as `authorization_invalid`.
const NOT_UTF8: &str = "Bearer \u{fffd}";

/// The facts of one request, borrowed from the `CheckRequest`.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts<'a> {
    pub peer: PeerFacts<'a>,
    /// Envoy's request id (`x-request-id`), for the audit log.
    pub request_id: &'a str,
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
        facts.request_id = &http.id;
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
    shared: Shared,
    /// When this configuration (and its keys) was loaded: the JWKS age metric.
    created_at: Instant,
    metrics: DecisionMetrics,
    /// Tells this authorizer's entries in the per-thread [`recent_tokens`] from others'.
    id: u64,
}

/// What outlives a configuration: kept across reloads, handed to each new `Authorizer`.
#[derive(Clone)]
pub struct Shared {
    pub audit: Arc<dyn DecisionLog>,
    pub revocations: Arc<RevocationList>,
}

impl Default for Shared {
    /// No audit log, an empty revocation list.
    fn default() -> Self {
        Self {
            audit: Arc::new(NoDecisionLog),
            revocations: Arc::default(),
        }
    }
}

/// Why a check has no response yet.
pub enum CheckError {
    /// Answer with a gRPC error (Envoy denies).
    Fault(Fault),
    /// Await this remote key set's unknown-kid refetch, then check again without retry.
    RetryAfterRefetch(Arc<RemoteKeys>),
}

/// Everything known about one decision: the outcome, and what the pipeline had learned by
/// then (for the audit log and metrics; a deny after verification still names the chain).
pub struct Evaluation {
    pub outcome: Result<Grant, Denial>,
    pub caller: Option<SpiffeId>,
    pub route: Option<Arc<str>>,
    /// The route's index in the table (for its metric handles).
    pub route_index: Option<usize>,
    pub token: Option<Arc<VerifiedToken>>,
}

impl Authorizer {
    pub fn new(config: DecisionSettings) -> Self {
        Self::with_shared(config, Shared::default())
    }

    /// An authorizer that audits to, and consults the revocations of, `shared`.
    pub fn with_shared(config: DecisionSettings, shared: Shared) -> Self {
        let cache = config.cache;
        let token_cache = (cache.max_entries > 0).then(|| {
            // One weigher bounds both: each entry weighs at least max_bytes / max_entries, so
            // there can be no more than max_entries, and the weights never sum past max_bytes.
            // Rounded up and kept within a u32 weight, with the capacity trimmed to match, so
            // neither bound can be exceeded by rounding (max_bytes ≥ 1, max_entries ≥ 1 here).
            let floor = cache
                .max_bytes
                .div_ceil(cache.max_entries)
                .clamp(1, u64::from(u32::MAX));
            Cache::builder()
                .max_capacity(cache.max_bytes.min(floor.saturating_mul(cache.max_entries)))
                .weigher(move |_key: &Digest, value: &CachedToken| {
                    let estimate = (value.token.approximate_size() + CACHE_ENTRY_OVERHEAD) as u64;
                    u32::try_from(estimate.max(floor)).unwrap_or(u32::MAX)
                })
                .expire_after(UntilTokenExpiry)
                .build()
        });
        let metrics = DecisionMetrics::new(config.routes.iter().map(|route| &route.name));
        Self {
            metrics,
            id: NEXT_AUTHORIZER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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
            shared,
            created_at: Instant::now(),
        }
    }

    pub fn created_at(&self) -> Instant {
        self.created_at
    }

    /// Where this configuration reads the caller's identity from, in order.
    pub fn identity_sources(&self) -> &[IdentitySource] {
        &self.identity_sources
    }

    /// The process-wide revocation list this authorizer consults.
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.shared.revocations
    }

    /// Trusted issuers and how many keys each has (for readiness and metrics).
    pub fn issuer_key_counts(&self) -> Vec<(String, usize)> {
        self.verifier.issuer_key_counts()
    }

    /// Issuers that cannot verify anything: readiness is false while any exist.
    pub fn issuers_without_keys(&self) -> Vec<String> {
        self.issuer_key_counts()
            .into_iter()
            .filter(|(_, keys)| *keys == 0)
            .map(|(issuer, _)| issuer)
            .collect()
    }

    pub fn response_settings(&self) -> &ResponseSettings {
        &self.response
    }

    /// Answers one `CheckRequest`. With `may_retry`, a token whose `kid` is unknown to a
    /// remote issuer that may refetch now returns [`CheckError::RetryAfterRefetch`] (nothing is
    /// recorded): the caller awaits the refetch and asks again without `may_retry`.
    pub fn check(
        &self,
        request: &CheckRequest,
        may_retry: bool,
    ) -> Result<CheckResponse, CheckError> {
        self.answer(request, may_retry).map(Answer::into_response)
    }

    /// [`Authorizer::check`] as the gRPC server sends it: an allow is encoded straight from
    /// its grant ([`Answer::Allow`]).
    pub fn answer(&self, request: &CheckRequest, may_retry: bool) -> Result<Answer, CheckError> {
        let facts = RequestFacts::from_check_request(request);
        let evaluation = self
            .evaluate_and_record(&facts, may_retry)
            .map_err(CheckError::RetryAfterRefetch)?;
        if let Err(denial) = &evaluation.outcome
            && denial.reason == DenyReason::IssuerKeysUnavailable
        {
            return Err(CheckError::Fault(Fault::KeysUnavailable));
        }
        Ok(response::answer(
            evaluation.outcome,
            &facts.prefixed_headers,
            &self.response,
        ))
    }

    /// Decides now and records the decision in metrics, the audit log and the debug log —
    /// unless (with `may_retry`) an unknown `kid` should first be refetched, in which case the
    /// remote key set to refetch is returned and nothing is recorded.
    pub fn evaluate_and_record(
        &self,
        facts: &RequestFacts<'_>,
        may_retry: bool,
    ) -> Result<Evaluation, Arc<RemoteKeys>> {
        let started = Instant::now();
        let evaluation = self.evaluate(facts, token::unix_now());
        if may_retry
            && let Err(denial) = &evaluation.outcome
            && denial.reason == DenyReason::TokenKeyUnknown
            && let Some(remote) = token::bearer_token(&facts.authorization)
                .ok()
                .and_then(|bearer| self.verifier.remote_issuer_of(bearer))
            && remote.may_refetch()
        {
            return Err(remote);
        }
        let latency = started.elapsed();
        let denied = evaluation.outcome.as_ref().err().map(|d| d.reason);
        self.metrics
            .record_decision(denied, evaluation.route_index, latency);
        let reason = denied.map(DenyReason::code);
        let token = evaluation.token.as_deref();
        // The record is built only when the audit log keeps it (on, and not sampled out).
        let audit = &self.shared.audit;
        if audit.keeps(reason.is_none()) {
            audit.write(&AuditRecord {
                request_id: facts.request_id,
                caller: evaluation.caller.as_ref().map(SpiffeId::as_str),
                subject: token.map(VerifiedToken::subject),
                chain: token.map_or_else(Vec::new, |token| {
                    token
                        .actors()
                        .iter()
                        .rev()
                        .filter_map(|a| a.subject())
                        .collect()
                }),
                route: evaluation.route.as_deref(),
                method: facts.method,
                path: facts.path,
                reason,
                jti: token.and_then(VerifiedToken::jti),
                sid: token.and_then(VerifiedToken::sid),
                latency,
            });
        }
        tracing::debug!(
            caller = evaluation.caller.as_ref().map(SpiffeId::as_str),
            route = evaluation.route.as_deref(),
            reason = reason.unwrap_or("allow"),
            "decision"
        );
        Ok(evaluation)
    }

    /// Remote key sets, for the runtime to fetch before readiness and refresh afterwards.
    pub fn remote_issuers(&self) -> Vec<Arc<RemoteKeys>> {
        self.verifier.remote_issuers()
    }

    /// Runs the pipeline on request facts at time `now` (Unix seconds).
    pub fn decide(&self, facts: &RequestFacts<'_>, now: i64) -> Result<Grant, Denial> {
        self.evaluate(facts, now).outcome
    }

    /// Runs the pipeline, keeping what each step learned.
    pub fn evaluate(&self, facts: &RequestFacts<'_>, now: i64) -> Evaluation {
        let mut evaluation = Evaluation {
            outcome: Err(Denial::new(DenyReason::NoRoute, "")),
            caller: None,
            route: None,
            route_index: None,
            token: None,
        };
        evaluation.outcome = self.run_pipeline(facts, now, &mut evaluation);
        evaluation
    }

    fn run_pipeline(
        &self,
        facts: &RequestFacts<'_>,
        now: i64,
        learned: &mut Evaluation,
    ) -> Result<Grant, Denial> {
        let caller = identity::caller_identity(&self.identity_sources, &facts.peer, |pem| {
            self.caller_from_certificate(pem)
        })?;
        let caller = learned.caller.insert(caller);
        if !self.delegation.allows_trust_domain(caller.trust_domain()) {
            return Err(Denial::new(
                DenyReason::CallerTrustDomainDenied,
                "the caller's trust domain is not allowed",
            ));
        }
        let normalized = path::normalize(facts.path)
            .map_err(|error| Denial::new(DenyReason::PathInvalid, error.description()))?;
        let (index, route) = self
            .routes
            .select_indexed(facts.method, facts.host, &normalized)
            .ok_or_else(|| Denial::new(DenyReason::NoRoute, "no route matches the request"))?;
        learned.route = Some(Arc::clone(&route.name));
        learned.route_index = Some(index);
        // Checked to be token68 unless it is byte for byte a token this thread has seen pass.
        let bearer = token::bearer_credential(&facts.authorization)?;
        let verified = learned.token.insert(self.verified_token(bearer, now)?);
        // Revocation right after verification: a revoked token is 401 even where a later step
        // would also deny, and a cached verification is cut at once.
        if self
            .shared
            .revocations
            .matching(verified, caller.as_str(), now)
            .is_some()
        {
            return Err(Denial::new(
                DenyReason::TokenRevoked,
                "the token has been revoked",
            ));
        }
        policy::authorize(&self.delegation, caller, route, verified)
    }

    fn caller_from_certificate(&self, url_encoded_pem: &str) -> Result<SpiffeId, Denial> {
        if let Some(id) = recent_callers::get(url_encoded_pem) {
            return Ok(id);
        }
        let key = sha256(url_encoded_pem.as_bytes());
        let id = match self.certificate_cache.get(&key) {
            Some(id) => id,
            None => {
                let id = identity::spiffe_id_from_certificate(url_encoded_pem)?;
                self.certificate_cache.insert(key, id.clone());
                id
            }
        };
        recent_callers::remember(url_encoded_pem, &id);
        Ok(id)
    }

    fn verified_token(&self, bearer: &str, now: i64) -> Result<Arc<VerifiedToken>, Denial> {
        let Some(cache) = &self.token_cache else {
            token::check_token68(bearer)?;
            return self.verifier.verify(bearer, now).map(Arc::new);
        };
        let clock = Instant::now();
        if let Some(token) = recent_tokens::get(self.id, bearer, clock)
            && self.verifier.key_still_published(&token)
            && self.verifier.is_unexpired(&token, now)
        {
            self.metrics.record_cache_lookup(true);
            return Ok(token);
        }
        // Otherwise the shared cache decides, as if this thread had never seen the token.
        token::check_token68(bearer)?;
        let key = sha256(bearer.as_bytes());
        let hit = cache.get(&key);
        self.metrics.record_cache_lookup(hit.is_some());
        if let Some(hit) = hit {
            // A key removed from (or replaced in) the issuer's JWKS invalidates at once.
            if !self.verifier.key_still_published(&hit.token) {
                cache.invalidate(&key);
                return self.verify_and_cache(cache, key, bearer, now, clock);
            }
            if self.verifier.is_unexpired(&hit.token, now) {
                recent_tokens::remember(self.id, bearer, &hit.token, hit.expires_at);
                return Ok(hit.token);
            }
            cache.invalidate(&key);
            return Err(Denial::new(
                DenyReason::TokenExpired,
                "the token has expired",
            ));
        }
        self.verify_and_cache(cache, key, bearer, now, clock)
    }

    fn verify_and_cache(
        &self,
        cache: &Cache<Digest, CachedToken>,
        key: Digest,
        bearer: &str,
        now: i64,
        clock: Instant,
    ) -> Result<Arc<VerifiedToken>, Denial> {
        let token = Arc::new(self.verifier.verify(bearer, now)?);
        let time_to_live =
            Duration::from_secs(self.verifier.remaining_lifetime(&token, now)).min(MAX_ENTRY_TTL);
        let expires_at = clock + time_to_live;
        cache.insert(
            key,
            CachedToken {
                token: Arc::clone(&token),
                expires_at,
            },
        );
        recent_tokens::remember(self.id, bearer, &token, expires_at);
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
