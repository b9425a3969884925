//! Hot reload: a new configuration replaces the running one atomically, or not at all.
//!
//! Guarantees: a reload parses and validates the whole file (JWKS included) exactly like
//! `check-config`; an invalid file changes nothing (the old configuration keeps serving; a log
//! line lists every error and `actguard_config_loads_total{result="failure"}` counts it). A
//! valid one builds a new [`Authorizer`] with empty caches, so nothing decided under the old
//! keys or rules is served afterwards; checks already running finish on the old one.
//! Revocations and the audit log are process-wide and carry over. Listeners, TLS, audit,
//! limits and `revocation.file` are bound at start: a reload that changes them applies its
//! decision rules and logs that those keys need a restart.
//!
//! Triggers: SIGHUP, and a change to the configuration file or any `jwks_file` it names
//! (polled).

use crate::config::AuditConfig;
use crate::config::{Config, ConfigErrors, Limits, Listeners};
use crate::decision::response::Answer;
use crate::decision::telemetry;
use crate::decision::{Authorizer, CheckError, Shared};
use crate::serve::grpc::CheckHandler;
use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// What is bound at start and needs a restart to change.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundSettings {
    pub listen: Listeners,
    pub audit: Option<AuditConfig>,
    pub limits: Limits,
    pub revocation_file: Option<PathBuf>,
    pub revocation_nats: Option<crate::config::NatsSettings>,
    pub admin: crate::config::AdminRights,
    pub budgets: Option<crate::config::BudgetSettings>,
}

impl BoundSettings {
    pub fn of(config: &Config) -> Self {
        Self {
            listen: config.listen.clone(),
            audit: config.audit.clone(),
            limits: config.limits,
            revocation_file: config.revocation_file.clone(),
            revocation_nats: config.revocation_nats.clone(),
            admin: config.admin.clone(),
            budgets: config.budgets.clone(),
        }
    }
}

/// The authorizer in force, swappable as a whole.
pub struct LiveAuthorizer {
    current: ArcSwap<Authorizer>,
    shared: Shared,
    /// Background refreshes of the current authorizer's remote key sets.
    refreshers: Mutex<Vec<JoinHandle<()>>>,
}

/// Fetches every remote key set of `authorizer` once, concurrently; the errors, if any.
pub async fn fetch_remote_keys(authorizer: &Authorizer) -> Vec<String> {
    let fetches: Vec<_> = authorizer
        .remote_issuers()
        .into_iter()
        .map(|remote| tokio::spawn(async move { remote.fetch().await }))
        .collect();
    let mut errors = Vec::new();
    for fetch in fetches {
        match fetch.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => errors.push(error),
            Err(error) => errors.push(error.to_string()),
        }
    }
    errors
}

impl LiveAuthorizer {
    pub fn new(authorizer: Authorizer, shared: Shared) -> Self {
        let live = Self {
            current: ArcSwap::from_pointee(authorizer),
            shared,
            refreshers: Mutex::new(Vec::new()),
        };
        live.restart_refreshers();
        live
    }

    /// Replaces the background refreshes with those of the current authorizer.
    fn restart_refreshers(&self) {
        let Ok(mut refreshers) = self.refreshers.lock() else {
            return;
        };
        for old in refreshers.drain(..) {
            old.abort();
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for remote in self.current.load().remote_issuers() {
            refreshers.push(tokio::spawn(remote.refresh_forever()));
        }
    }

    /// Stops the background refreshes (shutdown).
    pub fn stop_refreshers(&self) {
        if let Ok(mut refreshers) = self.refreshers.lock() {
            for old in refreshers.drain(..) {
                old.abort();
            }
        }
    }

    /// The authorizer to use for one decision.
    pub fn current(&self) -> Arc<Authorizer> {
        self.current.load_full()
    }

    /// Loads `file`, fetches its remote keys, and swaps it in; on any error nothing changes.
    pub async fn reload(&self, file: &Path, running: &BoundSettings) -> Result<(), ConfigErrors> {
        let config = match Config::from_file(file) {
            Ok(config) => config,
            Err(errors) => {
                telemetry::record_config_load(false);
                tracing::error!(
                    file = %file.display(),
                    errors = %errors.to_string().replace('\n', "; "),
                    "configuration reload rejected; the previous configuration keeps serving"
                );
                return Err(errors);
            }
        };
        let next = BoundSettings::of(&config);
        let restart_only: Vec<&str> = [
            ("listen", next.listen != running.listen),
            ("audit", next.audit != running.audit),
            ("limits", next.limits != running.limits),
            (
                "revocation.file",
                next.revocation_file != running.revocation_file,
            ),
            (
                "revocation.nats",
                next.revocation_nats != running.revocation_nats,
            ),
            ("admin", next.admin != running.admin),
            ("budgets", next.budgets != running.budgets),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart_only.is_empty() {
            tracing::warn!(keys = ?restart_only, "these keys changed but take effect only after a restart");
        }
        let next = Authorizer::with_shared(config.decision, self.shared.clone());
        // Remote keys of the new configuration before it serves: never swap in an issuer with
        // no keys.
        let fetch_errors = fetch_remote_keys(&next).await;
        if !fetch_errors.is_empty() {
            telemetry::record_config_load(false);
            tracing::error!(
                errors = %fetch_errors.join("; "),
                "configuration reload rejected: its issuer keys could not be fetched"
            );
            return Err(ConfigErrors(
                fetch_errors
                    .into_iter()
                    .map(|message| crate::config::ConfigError {
                        path: "issuers".into(),
                        message,
                    })
                    .collect(),
            ));
        }
        self.current.store(Arc::new(next));
        self.restart_refreshers();
        telemetry::record_config_load(true);
        tracing::info!(file = %file.display(), "configuration reloaded");
        Ok(())
    }
}

impl CheckHandler for LiveAuthorizer {
    fn check(&self, request: &CheckRequest, may_retry: bool) -> Result<CheckResponse, CheckError> {
        self.current.load().check(request, may_retry)
    }

    fn answer(&self, request: &CheckRequest, may_retry: bool) -> Result<Answer, CheckError> {
        self.current.load().answer(request, may_retry)
    }
}

/// Files whose change triggers a reload: the configuration and every JWKS file it names.
fn watched_files(file: &Path) -> Vec<PathBuf> {
    let mut files = vec![file.to_owned()];
    if let Ok(config) = Config::from_file(file) {
        files.extend(config.jwks_files);
    }
    files
}

/// What a file's change is told by: its modification time and its length (two writes within
/// the file system's timestamp granularity still differ in length, mostly).
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// The files a configuration depends on (itself and every JWKS file it names) and their stamps,
/// read at one moment: what [`watch`] compares against.
pub struct Baseline {
    files: Vec<PathBuf>,
    /// `None` for a file not stamped yet: it counts as changed at the next check.
    seen: Vec<Option<Stamp>>,
}

impl Baseline {
    /// The stamps of `file` and its JWKS files now. Taken before the configuration is loaded,
    /// a change made while it loads is a change, not the baseline.
    pub fn of(file: &Path) -> Self {
        let files = watched_files(file);
        let seen = stamps(&files).into_iter().map(Some).collect();
        Self { files, seen }
    }
}

/// Polls the configuration and its JWKS files every `interval`, reloading when one differs from
/// `baseline`. What triggered a reload is the next baseline, read before the reload (which may
/// wait on an issuer's keys): a change made meanwhile causes one more reload instead of being
/// taken as the baseline; a file the new configuration names first counts as changed once.
pub async fn watch(
    live: Arc<LiveAuthorizer>,
    file: PathBuf,
    running: BoundSettings,
    interval: Duration,
    baseline: Baseline,
) {
    let Baseline {
        mut files,
        mut seen,
    } = baseline;
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = stamps(&files);
        if now
            .iter()
            .zip(&seen)
            .all(|(now, seen)| Some(now) == seen.as_ref())
        {
            continue;
        }
        let before: std::collections::HashMap<PathBuf, Stamp> =
            files.into_iter().zip(now).collect();
        let _ = live.reload(&file, &running).await;
        files = watched_files(&file);
        seen = files.iter().map(|path| before.get(path).cloned()).collect();
    }
}
