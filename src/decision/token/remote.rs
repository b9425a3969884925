//! Keys fetched over HTTPS: `issuers[].jwks_uri`, or OIDC discovery
//! (`{issuer}/.well-known/openid-configuration` → `jwks_uri`).
//!
//! Guarantees:
//! - only `https://` unless the issuer sets `insecure_http: true` (local testing only); server
//!   certificates checked against `ca_file` alone when set, else the platform roots;
//! - every fetch has a timeout and a response size limit; a response that is not a valid JWKS
//!   (or a discovery document naming another issuer) never replaces the keys in use;
//! - refreshed every `refresh_interval`, sooner when `Cache-Control: max-age` says so; a failed
//!   refresh retries with exponential backoff and keeps the last good keys for up to
//!   `max_stale`, after which the issuer has no usable keys (checks for it fail closed with
//!   gRPC UNAVAILABLE, readiness is false);
//! - an unknown `kid` triggers at most one refetch per `unknown_kid_cooldown`; concurrent
//!   requests wait for that one fetch instead of starting their own.

use super::keys::KeySet;
use crate::decision::telemetry;
use arc_swap::ArcSwapOption;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest refresh interval `Cache-Control: max-age` can ask for.
const MIN_MAX_AGE_REFRESH: Duration = Duration::from_secs(10);

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    Uri(String),
    /// `{issuer}/.well-known/openid-configuration`.
    Discovery,
}

/// One remote issuer's fetch settings, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub issuer: String,
    pub location: JwksLocation,
    /// Trust only this bundle for the issuer's HTTPS (default: platform roots).
    pub ca_file: Option<PathBuf>,
    pub insecure_http: bool,
    pub refresh_interval: Duration,
    pub max_stale: Duration,
    pub unknown_kid_cooldown: Duration,
    pub fetch_timeout: Duration,
    pub max_bytes: usize,
}

struct Loaded {
    keys: Arc<KeySet>,
    fetched_at: Instant,
    /// `Cache-Control: max-age` of the last good response.
    max_age: Option<Duration>,
}

/// The live key set of one remote issuer.
pub struct RemoteKeys {
    spec: RemoteSpec,
    client: reqwest::Client,
    loaded: ArcSwapOption<Loaded>,
    /// When the last unknown-kid refetch started; the lock makes concurrent requests share it.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("spec", &self.spec)
            .finish()
    }
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let seconds = directive.trim().strip_prefix("max-age=")?;
        seconds
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

impl RemoteKeys {
    /// Builds the HTTPS client; fetches nothing yet.
    pub fn new(spec: RemoteSpec) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(spec.fetch_timeout)
            .connect_timeout(spec.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!spec.insecure_http);
        if let Some(file) = &spec.ca_file {
            let pem = crate::decision::files::read_limited(
                file,
                crate::decision::files::MAX_CONFIG_FILE_BYTES,
            )
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| format!("{}: not a PEM bundle: {error}", file.display()))?;
            if certificates.is_empty() {
                return Err(format!("{}: no certificate", file.display()));
            }
            builder = builder.tls_certs_only(certificates);
        }
        let client = builder
            .build()
            .map_err(|error| format!("cannot build the HTTPS client: {error}"))?;
        Ok(Self {
            spec,
            client,
            loaded: ArcSwapOption::empty(),
            on_demand: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.spec.issuer
    }

    /// The keys in use, or `None` when never fetched or older than `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        let loaded = self.loaded.load();
        let loaded = loaded.as_ref()?;
        (loaded.fetched_at.elapsed() <= self.spec.max_stale).then(|| Arc::clone(&loaded.keys))
    }

    /// Time since the last successful fetch.
    pub fn age(&self) -> Option<Duration> {
        self.loaded
            .load()
            .as_ref()
            .map(|loaded| loaded.fetched_at.elapsed())
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, reqwest::header::HeaderMap), String> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let limit = self.spec.max_bytes;
        if response
            .content_length()
            .is_some_and(|length| length as usize > limit)
        {
            return Err(format!("GET {url}: response larger than {limit} bytes"));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?
        {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {url}: response larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, headers))
    }

    async fn jwks_url(&self) -> Result<String, String> {
        match &self.spec.location {
            JwksLocation::Uri(url) => Ok(url.clone()),
            JwksLocation::Discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.spec.issuer.trim_end_matches('/')
                );
                let (body, _) = self.get(&url).await?;
                let document: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| format!("{url}: not a JSON document"))?;
                if document.get("issuer").and_then(|v| v.as_str())
                    != Some(self.spec.issuer.as_str())
                {
                    return Err(format!("{url}: names another issuer"));
                }
                document
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{url}: has no jwks_uri"))
            }
        }
    }

    /// Fetches and, when valid, swaps in the issuer's keys.
    pub async fn fetch(&self) -> Result<(), String> {
        let outcome = async {
            let url = self.jwks_url().await?;
            let (body, headers) = self.get(&url).await?;
            let (keys, skipped) = KeySet::from_jwks_skipping_unusable(&body)
                .map_err(|problems| format!("{url}: invalid JWKS: {}", problems.join("; ")))?;
            for problem in skipped {
                tracing::warn!(issuer = %self.spec.issuer, %problem, "JWKS key skipped");
            }
            Ok::<_, String>((keys, max_age(&headers)))
        }
        .await;
        let issuer = self.spec.issuer.clone();
        match outcome {
            Ok((keys, max_age)) => {
                self.loaded.store(Some(Arc::new(Loaded {
                    keys: Arc::new(keys),
                    fetched_at: Instant::now(),
                    max_age,
                })));
                metrics::counter!(telemetry::JWKS_FETCHES, "issuer" => issuer, "result" => "success")
                    .increment(1);
                Ok(())
            }
            Err(error) => {
                metrics::counter!(telemetry::JWKS_FETCHES, "issuer" => issuer, "result" => "failure")
                    .increment(1);
                tracing::warn!(issuer = %self.spec.issuer, %error, "JWKS fetch failed; keeping the last good keys");
                Err(error)
            }
        }
    }

    /// Whether an unknown-kid refetch may run now (cooldown passed, none running).
    pub fn may_refetch(&self) -> bool {
        match self.on_demand.try_lock() {
            Ok(last) => last.is_none_or(|at| at.elapsed() >= self.spec.unknown_kid_cooldown),
            // One is running: waiting for it is worthwhile.
            Err(_) => true,
        }
    }

    /// At most one refetch per cooldown; concurrent callers wait for the one in flight.
    pub async fn refetch_for_unknown_kid(self: Arc<Self>) {
        let mut last = self.on_demand.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.spec.unknown_kid_cooldown) {
            return;
        }
        *last = Some(Instant::now());
        // In its own task: a check abandoned at its deadline must not cancel the fetch that
        // every later check is waiting for.
        let fetcher = Arc::clone(&self);
        let _ = tokio::spawn(async move { fetcher.fetch().await }).await;
    }

    /// Refreshes forever: every `refresh_interval` (or `max-age`, if sooner), with exponential
    /// backoff after failures.
    pub async fn refresh_forever(self: Arc<Self>) {
        // Nothing loaded yet (the issuer was down at start): retry with backoff, not after a
        // whole refresh interval.
        let mut failures: u32 = u32::from(self.loaded.load().is_none());
        loop {
            // `Cache-Control: max-age` may shorten the configured interval, to 10 s at the
            // least (a `max-age=0` issuer is not refreshed in a tight loop). The configured
            // interval itself is never lengthened: a floor applied to it made keys go stale
            // between refreshes whenever max_stale was under 10 s, with the issuer up.
            let interval = self
                .loaded
                .load()
                .as_ref()
                .and_then(|loaded| loaded.max_age)
                .map_or(self.spec.refresh_interval, |age| {
                    age.max(MIN_MAX_AGE_REFRESH).min(self.spec.refresh_interval)
                });
            let wait = if failures == 0 {
                interval
            } else {
                Duration::from_secs(1u64 << failures.min(10)).min(interval)
            };
            tokio::time::sleep(wait).await;
            failures = match self.fetch().await {
                Ok(()) => 0,
                Err(_) => failures.saturating_add(1),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=300".parse().unwrap(),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(300)));
        headers.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&headers), None);
    }
}
