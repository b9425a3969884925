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
//! ([`recent::callers`], [`recent::tokens`]), so the common case hashes neither.

use crate::decision::budget::{self, Charge, ChargeOutcome};
use crate::decision::cache::{self, CachedToken, Digest, DigestCache, MAX_ENTRY_TTL};
use crate::decision::facts::RequestFacts;
use crate::decision::identity::{self, IdentitySource, Svid};
use crate::decision::mcp::{self, McpCall};
use crate::decision::path;
use crate::decision::policy::{self, DelegationPolicy, Grant};
use crate::decision::reason::{Denial, DenyReason, Fault};
use crate::decision::recent;
use crate::decision::record::{AuditRecord, DecisionLog, NoDecisionLog};
use crate::decision::response::{self, Answer, ResponseSettings};
use crate::decision::revocation::{RevocationList, Revoked};
use crate::decision::routes::RouteTable;
use crate::decision::settings::DecisionSettings;
use crate::decision::spiffe::SpiffeId;
use crate::decision::telemetry::DecisionMetrics;
use crate::decision::token::{self, RemoteKeys, VerifiedToken, Verifier};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinguishes authorizers in the per-thread [`recent::tokens`].
static NEXT_AUTHORIZER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Decides requests for one configuration.
pub struct Authorizer {
    identity_sources: Vec<IdentitySource>,
    delegation: DelegationPolicy,
    routes: RouteTable,
    verifier: Verifier,
    response: Arc<ResponseSettings>,
    /// `None` when `cache.max_entries` is 0.
    token_cache: Option<DigestCache<CachedToken>>,
    certificate_cache: DigestCache<Svid>,
    shared: Shared,
    /// When this configuration (and its keys) was loaded: the JWKS age metric.
    created_at: Instant,
    /// The audit log and metric handles every decision is recorded in (a pending charge
    /// takes a clone; a plain check borrows it).
    recorder: Recorder,
    /// Tells this authorizer's entries in the per-thread [`recent::tokens`] from others'.
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
    /// Allowed by every rule, on a budgeted route: charge the ledger, then
    /// [`PendingCharge::settle`] gives the answer.
    Charge(Box<PendingCharge>),
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
    /// The revocation that cut the token (`token_revoked`).
    pub revoked: Option<Revoked>,
    /// The MCP method and tool, once the message was read (MCP routes).
    pub mcp: Option<McpCall>,
    /// What an allow on a budgeted route is to be charged (issue #17).
    pub charge: Option<Charge>,
    /// What the budget had to do with the outcome, for the audit record: `branch` or
    /// `session` (spent), `unavailable` (the ledger could not answer).
    pub budget: Option<&'static str>,
    /// False once a shadow route (`enforce: false`) was selected: a denial is then answered
    /// with an allow that carries no identity ([`Evaluation::shadowed`]).
    pub enforced: bool,
    /// The route's `forward_token`, once a route was selected (for a shadow allow).
    pub forward_token: bool,
}

impl Evaluation {
    /// The denial a shadow route answers with an allow: a denial on a route with `enforce:
    /// false` that is not a fault (issuer keys or revocations unavailable stay faults: an
    /// internal fault never allows).
    pub fn shadowed(&self) -> Option<&Denial> {
        match &self.outcome {
            Err(denial) if !self.enforced && !denial.reason.is_fault() => Some(denial),
            _ => None,
        }
    }
}

/// A decision as [`Authorizer::evaluate_and_record`] leaves it.
// The final evaluation stays inline: it is every check's path, and boxing it would cost each
// an allocation; the rare pending charge is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Decided {
    /// Final and recorded.
    Recorded(Evaluation),
    /// Allowed by every rule on a budgeted route; nothing recorded until it is settled.
    Pending(Box<PendingCharge>),
}

/// What recording a decision needs: kept by the authorizer, and by a pending charge (which
/// may outlive the configuration it was decided under).
#[derive(Clone)]
struct Recorder {
    audit: Arc<dyn DecisionLog>,
    metrics: Arc<DecisionMetrics>,
}

/// The request values the audit record names.
struct Recorded<'a> {
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
}

/// An allow waiting for its budget to be charged. It owns what the answer and the record
/// need, so the charge can be awaited without holding the request or the configuration.
pub struct PendingCharge {
    evaluation: Evaluation,
    request_id: Box<str>,
    method: Box<str>,
    path: Box<str>,
    client_removals: Vec<String>,
    /// On a `tools/call`: the tool rule's metric label (`None`: unlisted).
    tool_label: Option<Option<Box<str>>>,
    started: Instant,
    recorder: Recorder,
    response: Arc<ResponseSettings>,
}

impl PendingCharge {
    /// What to charge.
    pub fn charge(&self) -> &Charge {
        self.evaluation
            .charge
            .as_ref()
            .expect("a pending charge has a charge")
    }

    /// The final evaluation once the ledger answered, recorded: charged (or the ledger failed
    /// under `budgets.on_error: allow`) stays the grant; a spent budget is `budget_exhausted`;
    /// a failed ledger is `budgets_unavailable`.
    pub fn settle_evaluation(self, outcome: ChargeOutcome) -> (Evaluation, Vec<String>) {
        let Self {
            mut evaluation,
            request_id,
            method,
            path,
            client_removals,
            tool_label,
            started,
            recorder,
            response: _,
        } = self;
        match outcome {
            ChargeOutcome::Charged { .. } => {}
            ChargeOutcome::Exhausted(which) => {
                let mut denial = which.denial();
                denial.json_rpc = evaluation.mcp.is_some();
                evaluation.budget = Some(which.name());
                evaluation.outcome = Err(denial);
            }
            ChargeOutcome::FailedOpen(_) => evaluation.budget = Some("unavailable"),
            ChargeOutcome::Failed(_) => {
                let mut denial = Denial::new(
                    DenyReason::BudgetsUnavailable,
                    "the budget could not be charged",
                );
                denial.json_rpc = evaluation.mcp.is_some();
                evaluation.budget = Some("unavailable");
                evaluation.outcome = Err(denial);
            }
        }
        recorder.record(
            &Recorded {
                request_id: &request_id,
                method: &method,
                path: &path,
            },
            &evaluation,
            tool_label.as_ref().map(|label| label.as_deref()),
            started.elapsed(),
        );
        (evaluation, client_removals)
    }

    /// [`Self::settle_evaluation`] as the gRPC server answers it: a failed ledger is a fault
    /// (UNAVAILABLE, so Envoy denies).
    pub fn settle(self, outcome: ChargeOutcome) -> Result<Answer, CheckError> {
        let response = Arc::clone(&self.response);
        let (evaluation, client_removals) = self.settle_evaluation(outcome);
        match evaluation.outcome {
            Err(denial) if denial.reason == DenyReason::BudgetsUnavailable => {
                Err(CheckError::Fault(Fault::BudgetsUnavailable))
            }
            Ok(grant) => Ok(Answer::Allow {
                grant,
                client_removals,
            }),
            Err(denial) => Ok(response::answer(Err(denial), &[], &response)),
        }
    }
}

impl Recorder {
    /// Records one final decision in metrics, the audit log and the debug log. `tool_label`
    /// is `Some` for a `tools/call` (the rule's label, or `None` for an unlisted tool).
    fn record(
        &self,
        facts: &Recorded<'_>,
        evaluation: &Evaluation,
        tool_label: Option<Option<&str>>,
        latency: Duration,
    ) {
        let denied = evaluation.outcome.as_ref().err().map(|d| d.reason);
        // A shadow route's denial was answered with an allow: counted as one, and apart.
        let answered = match evaluation.shadowed() {
            Some(denial) => {
                self.metrics
                    .record_shadow_deny(evaluation.route_index, denial.reason);
                None
            }
            None => denied,
        };
        self.metrics
            .record_decision(answered, evaluation.route_index, latency);
        if let Some(label) = tool_label {
            self.metrics
                .record_tool_call(evaluation.route_index, label, answered.is_none());
        }
        let reason = denied.map(DenyReason::code);
        let token = evaluation.token.as_deref();
        // The record is built only when the audit log keeps it (on, and not sampled out).
        let audit = &self.audit;
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
                scopes: token.map_or(&[], VerifiedToken::scopes),
                route: evaluation.route.as_deref(),
                method: facts.method,
                path: facts.path,
                reason,
                jti: token.and_then(VerifiedToken::jti),
                sid: token.and_then(VerifiedToken::sid),
                branch: token.map(VerifiedToken::branch),
                revoked: evaluation
                    .revoked
                    .as_ref()
                    .map(|revoked| (revoked.kind.name(), revoked.value.as_str())),
                mcp: evaluation
                    .mcp
                    .as_ref()
                    .map(|call| (&*call.method, call.tool.as_deref())),
                budget: evaluation.budget,
                // A fault on a shadow route was a deny like anywhere else: `enforced: false`
                // marks only what was answered with an allow (and allows there).
                enforced: evaluation.enforced
                    || (evaluation.outcome.is_err() && evaluation.shadowed().is_none()),
                latency,
            });
        }
        tracing::debug!(
            caller = evaluation.caller.as_ref().map(SpiffeId::as_str),
            route = evaluation.route.as_deref(),
            reason = reason.unwrap_or("allow"),
            "decision"
        );
    }
}

impl Authorizer {
    pub fn new(config: DecisionSettings) -> Self {
        Self::with_shared(config, Shared::default())
    }

    /// An authorizer that audits to, and consults the revocations of, `shared`.
    pub fn with_shared(config: DecisionSettings, shared: Shared) -> Self {
        let token_cache = cache::token_cache(config.cache);
        let metrics = Arc::new(DecisionMetrics::new(
            config.routes.iter().map(|route| &route.name),
        ));
        let budget_claims = config
            .routes
            .iter()
            .filter_map(|route| route.budget.as_ref()?.claim.clone())
            .collect();
        Self {
            recorder: Recorder {
                audit: Arc::clone(&shared.audit),
                metrics,
            },
            id: NEXT_AUTHORIZER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            identity_sources: config.identity_sources,
            delegation: config.delegation,
            routes: config.routes,
            verifier: Verifier::new(
                config.issuers,
                config.local_identity.as_str().to_owned(),
                config.leeway,
                config.max_token_bytes,
            )
            .requiring_access_token_typ(config.require_access_token_typ)
            .with_branch_claim(config.branch_claim)
            .with_budget_claims(budget_claims),
            response: Arc::new(config.response),
            token_cache,
            certificate_cache: cache::certificate_cache(),
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

    /// The routes of this configuration, in order.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
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
    /// its grant ([`Answer::Allow`]). An allow on a budgeted route is
    /// [`CheckError::Charge`]: the caller charges the ledger and settles.
    pub fn answer(&self, request: &CheckRequest, may_retry: bool) -> Result<Answer, CheckError> {
        let facts = RequestFacts::from_check_request(request);
        let evaluation = match self
            .evaluate_and_record(&facts, may_retry)
            .map_err(CheckError::RetryAfterRefetch)?
        {
            Decided::Recorded(evaluation) => evaluation,
            Decided::Pending(pending) => return Err(CheckError::Charge(pending)),
        };
        if let Err(denial) = &evaluation.outcome {
            match denial.reason {
                DenyReason::IssuerKeysUnavailable => {
                    return Err(CheckError::Fault(Fault::KeysUnavailable));
                }
                DenyReason::RevocationsUnavailable => {
                    return Err(CheckError::Fault(Fault::RevocationsUnavailable));
                }
                _ => {}
            }
        }
        if evaluation.shadowed().is_some() {
            return Ok(Answer::Message(response::shadow_allow(
                &evaluation,
                &facts.prefixed_headers,
            )));
        }
        Ok(response::answer(
            evaluation.outcome,
            &facts.prefixed_headers,
            &self.response,
        ))
    }

    /// Decides now and records the decision in metrics, the audit log and the debug log —
    /// unless (with `may_retry`) an unknown `kid` should first be refetched, in which case the
    /// remote key set to refetch is returned and nothing is recorded. An allow on a budgeted
    /// route is returned [`Decided::Pending`], recorded when it is settled.
    pub fn evaluate_and_record(
        &self,
        facts: &RequestFacts<'_>,
        may_retry: bool,
    ) -> Result<Decided, Arc<RemoteKeys>> {
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
        let tool_label = evaluation
            .mcp
            .as_ref()
            .filter(|call| call.tool.is_some())
            .map(|call| {
                evaluation
                    .route_index
                    .and_then(|index| self.routes.get(index))
                    .and_then(|route| route.mcp.as_ref())
                    .zip(call.rule)
                    .and_then(|(rules, rule)| rules.tools.get(rule))
                    .map(|rule| rule.label.as_str())
            });
        if evaluation.outcome.is_ok() && evaluation.charge.is_some() {
            return Ok(Decided::Pending(Box::new(PendingCharge {
                tool_label: tool_label.map(|label| label.map(Into::into)),
                request_id: facts.request_id.into(),
                method: facts.method.into(),
                path: facts.path.into(),
                client_removals: response::client_removals(&facts.prefixed_headers),
                evaluation,
                started,
                recorder: self.recorder.clone(),
                response: Arc::clone(&self.response),
            })));
        }
        self.recorder.record(
            &Recorded {
                request_id: facts.request_id,
                method: facts.method,
                path: facts.path,
            },
            &evaluation,
            tool_label,
            started.elapsed(),
        );
        Ok(Decided::Recorded(evaluation))
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
            revoked: None,
            mcp: None,
            charge: None,
            budget: None,
            enforced: true,
            forward_token: false,
        };
        evaluation.outcome = self.run_pipeline(facts, now, &mut evaluation);
        // On an MCP route every denial is also a JSON-RPC error, so the MCP client shows it.
        if let Err(denial) = &mut evaluation.outcome
            && evaluation
                .route_index
                .and_then(|index| self.routes.get(index))
                .is_some_and(|route| route.mcp.is_some())
        {
            denial.json_rpc = true;
        }
        evaluation
    }

    fn run_pipeline(
        &self,
        facts: &RequestFacts<'_>,
        now: i64,
        learned: &mut Evaluation,
    ) -> Result<Grant, Denial> {
        let caller = identity::caller_identity(&self.identity_sources, &facts.peer, now, |pem| {
            self.caller_from_certificate(pem)
        })?;
        let caller = learned.caller.insert(caller);
        if !self.delegation.allows_trust_domain(caller.trust_domain()) {
            return Err(Denial::new(
                DenyReason::CallerTrustDomainDenied,
                "the caller's trust domain is not allowed",
            ));
        }
        if facts.ambiguous {
            return Err(Denial::new(
                DenyReason::PathInvalid,
                "the request to check is described by more than one header",
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
        learned.enforced = route.enforce;
        learned.forward_token = route.forward_token;
        // Checked to be token68 unless it is byte for byte a token this thread has seen pass.
        let bearer = token::bearer_credential(&facts.authorization)?;
        let verified = learned.token.insert(self.verified_token(bearer, now)?);
        // Revocation right after verification: a revoked token is 401 even where a later step
        // would also deny, and a cached verification is cut at once. A list that cannot be
        // shown to hold every revocation in force (fleet mode, stale) decides nothing.
        if !self.shared.revocations.is_current() {
            return Err(Denial::new(
                DenyReason::RevocationsUnavailable,
                "revocations are not confirmed current",
            ));
        }
        if let Some(revoked) = self
            .shared
            .revocations
            .matching(verified, caller.as_str(), now)
        {
            learned.revoked = Some(revoked);
            return Err(Denial::new(
                DenyReason::TokenRevoked,
                "the token has been revoked",
            ));
        }
        let grant = policy::authorize(&self.delegation, caller, route, verified)?;
        // Budgets are charged last, only for requests every other step allowed: what to
        // charge is known now, the charge itself is the caller's (it awaits the ledger).
        let Some(rules) = &route.mcp else {
            learned.charge = budget::charge_for(route, verified, self.verifier.leeway());
            return Ok(grant);
        };
        // The message is read only once every other rule allowed: a caller that may not use
        // the route learns nothing about its tools, and costs no parse.
        let message = mcp::parse_message(facts.body(), rules.max_body_bytes)?;
        mcp::authorize(
            rules,
            &message,
            caller,
            verified,
            &mcp::RouteContext {
                route_scopes: &route.require_scopes,
                depth_limit: self.delegation.depth_limit(route),
                location: self.verifier.audience(),
            },
            &mut learned.mcp,
        )?;
        learned.charge = budget::charge_for(route, verified, self.verifier.leeway());
        Ok(match &learned.mcp {
            Some(call) => grant.with_mcp(call.clone()),
            None => grant,
        })
    }

    /// The certificate's SVID, cached: the validity period is applied by the caller on every
    /// check, hit or miss.
    fn caller_from_certificate(&self, url_encoded_pem: &str) -> Result<Svid, Denial> {
        if let Some(svid) = recent::callers::get(url_encoded_pem) {
            return Ok(svid);
        }
        let key = cache::sha256(url_encoded_pem.as_bytes());
        let svid = match self.certificate_cache.get(&key) {
            Some(svid) => svid,
            None => {
                let svid = identity::spiffe_id_from_certificate(url_encoded_pem)?;
                self.certificate_cache.insert(key, svid.clone());
                svid
            }
        };
        recent::callers::remember(url_encoded_pem, &svid);
        Ok(svid)
    }

    fn verified_token(&self, bearer: &str, now: i64) -> Result<Arc<VerifiedToken>, Denial> {
        let Some(cache) = &self.token_cache else {
            token::check_token68(bearer)?;
            return self.verifier.verify(bearer, now).map(Arc::new);
        };
        let clock = Instant::now();
        if let Some(token) = recent::tokens::get(self.id, bearer, clock)
            && self.verifier.key_still_published(&token)
            && self.verifier.is_unexpired(&token, now)
        {
            self.recorder.metrics.record_cache_lookup(true);
            return Ok(token);
        }
        // Otherwise the shared cache decides, as if this thread had never seen the token.
        token::check_token68(bearer)?;
        let key = cache::sha256(bearer.as_bytes());
        let hit = cache.get(&key);
        self.recorder.metrics.record_cache_lookup(hit.is_some());
        if let Some(hit) = hit {
            // A key removed from (or replaced in) the issuer's JWKS invalidates at once.
            if !self.verifier.key_still_published(&hit.token) {
                cache.invalidate(&key);
                return self.verify_and_cache(cache, key, bearer, now, clock);
            }
            if self.verifier.is_unexpired(&hit.token, now) {
                recent::tokens::remember(self.id, bearer, &hit.token, hit.expires_at);
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
        cache: &DigestCache<CachedToken>,
        key: Digest,
        bearer: &str,
        now: i64,
        clock: Instant,
    ) -> Result<Arc<VerifiedToken>, Denial> {
        let token = Arc::new(self.verifier.verify(bearer, now)?);
        // The lineage before the cache weighs the entry, so its bytes are counted.
        token.branch_lineage();
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
        recent::tokens::remember(self.id, bearer, &token, expires_at);
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
