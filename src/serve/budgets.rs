//! The budget ledger on Redis (issue #17): branch and session counters shared by every
//! sidecar of the fleet, checked and charged in one script so that under any concurrency no
//! more than a budget is ever allowed.
//!
//! Layout: one hash per session, `{key_prefix}{session}:{sid}` (the session is the root of the
//! token's branch lineage, 24 characters; `sid` is the token's `sid`, else its `jti`, so an
//! operator can find it). Fields: `s` (units the session spent), `b:{branch}` (units each
//! branch spent), `c` (when the hash was created, Redis time). The hash expires with the
//! latest-expiring token charged to it, and never later than `max_window` after it was
//! created: no key outlives its session, and no session keeps a budget forever.
//!
//! Failure: a charge that errors or takes longer than `budgets.redis.timeout` is
//! [`ChargeOutcome::Failed`] (UNAVAILABLE, so Envoy denies) unless `on_error: allow`, which
//! lets it through uncharged ([`ChargeOutcome::FailedOpen`]): logged, counted in
//! `actguard_budget_errors_total`. Readiness reports an unreachable ledger (not ready when
//! failing closed). Routes without a budget never reach this module.

use crate::config::{BudgetSettings, RedisTls};
use crate::decision::budget::{Charge, ChargeOutcome, Exhausted};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often readiness asks Redis while no budgeted request does.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Failed charges, by what happened with the request (`denied` or `allowed`).
pub const BUDGET_ERRORS: &str = "actguard_budget_errors_total";
/// Charges by outcome (`charged`, `branch_exhausted`, `session_exhausted`, `error`).
pub const BUDGET_CHARGES: &str = "actguard_budget_charges_total";
/// How long a charge took (seconds), Redis round trip included.
pub const BUDGET_CHARGE_DURATION: &str = "actguard_budget_charge_duration_seconds";

/// Checks both limits, then charges both counters, or charges nothing. KEYS[1]: the session's
/// hash. ARGV: branch field, cost, branch limit (-1: none), session limit (-1: none), when the
/// token stops being accepted (`exp` + leeway, Unix seconds), max_window (seconds), the
/// branch's limit field. The hash lives until then plus a minute (clock skew between Redis,
/// issuer and sidecars must not let it expire while the token is still accepted — a hash
/// that expired would start the branch again at zero), never past `max_window`. Returns
/// {0 charged | 1 branch spent | 2 session spent, branch units, session units}. The limits
/// charged under are kept beside the counters, for `actguard admin budgets`.
const CHARGE: &str = r"
local cost = tonumber(ARGV[2])
local branch_limit = tonumber(ARGV[3])
local session_limit = tonumber(ARGV[4])
local branch = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local session = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if branch_limit >= 0 and branch + cost > branch_limit then
  return {1, branch, session}
end
if session_limit >= 0 and session + cost > session_limit then
  return {2, branch, session}
end
local now = tonumber(redis.call('TIME')[1])
local created = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
if created == 0 then
  created = now
  redis.call('HSET', KEYS[1], 'c', now)
end
branch = redis.call('HINCRBY', KEYS[1], ARGV[1], cost)
session = redis.call('HINCRBY', KEYS[1], 's', cost)
redis.call('HSET', KEYS[1], ARGV[7], ARGV[3], 'L', ARGV[4])
local floor = math.max(tonumber(ARGV[5]), now) + 60
local deadline = math.max(floor, redis.call('EXPIRETIME', KEYS[1]))
deadline = math.min(deadline, created + tonumber(ARGV[6]))
if deadline <= now then
  deadline = now + 1
end
redis.call('EXPIREAT', KEYS[1], deadline)
return {0, branch, session}
";

/// Hash fields: `b:{branch}` a branch's units, `l:{branch}` the limit it was last charged
/// under, `L` the session's limit (-1: none); `s` and `c` as in the module docs.
pub const BRANCH_FIELD: &str = "b:";
pub const BRANCH_LIMIT_FIELD: &str = "l:";
pub const SESSION_LIMIT_FIELD: &str = "L";

/// The hash field of a branch's counter.
pub fn branch_field(branch: &str) -> String {
    format!("{BRANCH_FIELD}{branch}")
}

/// The session hash of a charge.
pub fn session_key(prefix: &str, session: &str, session_claim: &str) -> String {
    format!("{prefix}{session}:{session_claim}")
}

/// The Redis client for `settings`: TLS with the configured CA (and client certificate).
pub fn client(settings: &BudgetSettings) -> Result<redis::Client, String> {
    match &settings.tls {
        None => redis::Client::open(settings.url.as_str()).map_err(|error| error.to_string()),
        Some(tls) => tls_client(&settings.url, tls),
    }
}

fn tls_client(url: &str, tls: &RedisTls) -> Result<redis::Client, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert: Some(read(&tls.ca)?),
        },
    )
    .map_err(|error| error.to_string())
}

/// The fleet's budget counters, as one sidecar reaches them.
pub struct Ledger {
    connection: ConnectionManager,
    script: redis::Script,
    settings: BudgetSettings,
    /// The last charge or probe succeeded.
    healthy: AtomicBool,
    /// What went wrong last, for readiness (empty while healthy).
    last_error: std::sync::Mutex<String>,
    /// Unix seconds of the last logged error: at most one warning a second.
    last_logged: AtomicU64,
}

impl Ledger {
    /// A ledger on `settings`; it connects on first use and reconnects by itself, so a Redis
    /// that is down at start-up delays nothing but the budgeted requests (failed closed).
    pub fn new(settings: BudgetSettings) -> Result<Arc<Self>, String> {
        let client = client(&settings).map_err(|error| format!("budgets.redis: {error}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Each reconnection attempt is bounded; a request never waits for more than one.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| format!("budgets.redis: {error}"))?;
        Ok(Arc::new(Self {
            connection,
            script: redis::Script::new(CHARGE),
            healthy: AtomicBool::new(false),
            last_error: std::sync::Mutex::new("not yet reached".into()),
            last_logged: AtomicU64::new(0),
            settings,
        }))
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// Checks and charges `charge`, or charges nothing.
    pub async fn charge(&self, charge: &Charge) -> ChargeOutcome {
        let started = Instant::now();
        let limit = |limit: Option<u64>| limit.map_or(-1, |units| units as i64);
        let key = session_key(
            &self.settings.key_prefix,
            &charge.session,
            &charge.session_claim,
        );
        let mut invocation = self.script.key(key);
        invocation
            .arg(branch_field(&charge.branch))
            .arg(charge.cost)
            .arg(limit(charge.per_branch))
            .arg(limit(charge.per_session))
            .arg(charge.token_expires_at)
            .arg(self.settings.max_window.as_secs())
            .arg(format!("{BRANCH_LIMIT_FIELD}{}", charge.branch));
        let mut connection = self.connection.clone();
        let answered = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        metrics::histogram!(BUDGET_CHARGE_DURATION).record(started.elapsed().as_secs_f64());
        let outcome = match answered {
            Ok(Ok((0, branch, session))) => ChargeOutcome::Charged {
                branch_used: branch.max(0) as u64,
                session_used: session.max(0) as u64,
            },
            Ok(Ok((1, _, _))) => ChargeOutcome::Exhausted(Exhausted::Branch),
            Ok(Ok((2, _, _))) => ChargeOutcome::Exhausted(Exhausted::Session),
            Ok(Ok((code, _, _))) => self.failed(format!("the charge script answered {code}")),
            Ok(Err(error)) => self.failed(error.to_string()),
            Err(_) => self.failed(format!(
                "no answer within budgets.redis.timeout ({:?})",
                self.settings.timeout
            )),
        };
        let label = match &outcome {
            ChargeOutcome::Charged { .. } => {
                self.mark_healthy();
                "charged"
            }
            ChargeOutcome::Exhausted(Exhausted::Branch) => {
                self.mark_healthy();
                "branch_exhausted"
            }
            ChargeOutcome::Exhausted(Exhausted::Session) => {
                self.mark_healthy();
                "session_exhausted"
            }
            ChargeOutcome::Failed(_) | ChargeOutcome::FailedOpen(_) => "error",
        };
        metrics::counter!(BUDGET_CHARGES, "outcome" => label).increment(1);
        outcome
    }

    /// A charge that could not be made: logged (at most once a second), counted, remembered
    /// for readiness; allowed uncharged only with `on_error: allow`.
    fn failed(&self, error: String) -> ChargeOutcome {
        self.healthy.store(false, Ordering::SeqCst);
        let allowed = self.settings.allow_on_error;
        metrics::counter!(BUDGET_ERRORS, "request" => if allowed { "allowed" } else { "denied" })
            .increment(1);
        let now = crate::decision::token::unix_now().max(0) as u64;
        if self.last_logged.swap(now, Ordering::Relaxed) != now {
            if allowed {
                tracing::warn!(%error, "budget not charged: Redis failed; allowed uncharged (budgets.on_error: allow)");
            } else {
                tracing::warn!(%error, "budget not charged: Redis failed; denied (budgets.on_error: deny)");
            }
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = error.clone();
        }
        if allowed {
            ChargeOutcome::FailedOpen(error)
        } else {
            ChargeOutcome::Failed(error)
        }
    }

    fn mark_healthy(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }

    /// `Ok` while the ledger answers; else what went wrong (for `/readyz`).
    pub fn health(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::SeqCst) {
            return Ok(());
        }
        let last = self
            .last_error
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default();
        Err(format!(
            "budgets: Redis at {} unavailable: {last}",
            self.settings.url
        ))
    }

    /// One PING within the timeout; updates [`Self::health`].
    pub async fn probe(&self) {
        let mut connection = self.connection.clone();
        let ping = tokio::time::timeout(
            self.settings.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match ping {
            Ok(Ok(_)) => self.mark_healthy(),
            Ok(Err(error)) => self.note_probe_failure(error.to_string()),
            Err(_) => self.note_probe_failure(format!(
                "no answer to PING within budgets.redis.timeout ({:?})",
                self.settings.timeout
            )),
        }
    }

    fn note_probe_failure(&self, error: String) {
        self.healthy.store(false, Ordering::SeqCst);
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    /// Probes every `interval` until the process ends, so readiness follows Redis even
    /// while no budgeted request arrives.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            self.probe().await;
        }
    }
}

/// Charges a pending allow on `ledger`; without one (a configuration that lost its
/// `budgets`), the charge fails closed.
pub async fn charge_pending(
    ledger: Option<&Ledger>,
    pending: &crate::decision::PendingCharge,
) -> ChargeOutcome {
    match ledger {
        Some(ledger) => ledger.charge(pending.charge()).await,
        None => ChargeOutcome::Failed("no budget ledger is configured (budgets)".into()),
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("url", &self.settings.url)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
