//! `budgets` (the ledger: Redis) and `routes[].cost` / `routes[].budget` (issue #17).

use super::reader::{Reader, child};
use crate::decision::budget::{BudgetRule, MAX_UNITS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `budgets`: where the fleet's branch and session counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettings {
    /// `redis://HOST:PORT[/DB]` or `rediss://…` (TLS, with `tls`).
    pub url: String,
    pub key_prefix: String,
    pub tls: Option<RedisTls>,
    /// How long one charge may take before it counts as an error.
    pub timeout: Duration,
    /// `on_error: allow`: a ledger that cannot answer lets budgeted requests through
    /// uncharged (logged, counted); default deny (fail closed).
    pub allow_on_error: bool,
    /// Counters never outlive this, whatever the tokens' lifetimes.
    pub max_window: Duration,
}

/// TLS to Redis: the CA its certificate chains to (platform roots are never used), and a
/// client certificate for servers that require one (`tls-auth-clients yes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The default `budgets.redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "actguard:budget:";
/// The default per-charge timeout: a charge is one script on a nearby Redis (~100 µs); past
/// this the ledger is treated as unavailable. Below the default `limits.check_timeout`
/// (100 ms), which must leave the charge time to fail and be answered.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The default and largest `max_window`.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
const MAX_MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// `redis://` or `rediss://` with a host; `Some(true)` for TLS. No user or password in the
/// URL: it would end up in logs and process listings.
fn redis_scheme(url: &str) -> Result<bool, &'static str> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        (true, rest)
    } else {
        return Err("must be redis://HOST:PORT or rediss://HOST:PORT");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not carry credentials (they would be logged); use a Redis ACL user on a TLS client certificate or a loopback/private Redis",
        );
    }
    if authority.is_empty() || rest.contains(['?', '#']) {
        return Err("must be redis://HOST:PORT or rediss://HOST:PORT");
    }
    Ok(tls)
}

pub fn read_budgets(reader: &mut Reader, value: &Value, base_dir: &Path) -> Option<BudgetSettings> {
    let path = "budgets";
    let map = reader.mapping(path, value, &["redis", "on_error", "max_window"])?;
    let redis = reader.required(path, map, "redis").and_then(|value| {
        reader.mapping(
            "budgets.redis",
            value,
            &["url", "key_prefix", "tls", "timeout"],
        )
    });
    let mut complete = true;
    let (url, key_prefix, tls, timeout) = match redis {
        None => (None, None, None, None),
        Some(redis) => {
            let url = reader
                .required("budgets.redis", redis, "url")
                .and_then(|value| {
                    let text = reader.string("budgets.redis.url", value)?;
                    match redis_scheme(text) {
                        Ok(tls) => Some((text.to_owned(), tls)),
                        Err(message) => {
                            reader.error("budgets.redis.url", message);
                            None
                        }
                    }
                });
            let key_prefix = match redis.get("key_prefix") {
                None => Some(DEFAULT_KEY_PREFIX.to_owned()),
                Some(value) => match reader.string("budgets.redis.key_prefix", value) {
                    Some(text)
                        if !text.is_empty()
                            && text.len() <= 64
                            && !text
                                .chars()
                                .any(|c| c.is_control() || "*?[]\\ ".contains(c)) =>
                    {
                        Some(text.to_owned())
                    }
                    Some(_) => {
                        reader.error(
                            "budgets.redis.key_prefix",
                            "must be 1 to 64 characters without spaces, control characters or glob characters (* ? [ ] \\)",
                        );
                        None
                    }
                    None => None,
                },
            };
            let tls = match redis.get("tls") {
                None => Some(None),
                Some(value) => read_tls(reader, value, base_dir).map(Some),
            };
            let timeout = match redis.get("timeout") {
                None => Some(DEFAULT_TIMEOUT),
                Some(value) => reader
                    .duration("budgets.redis.timeout", value, Duration::from_secs(10))
                    .and_then(|timeout| {
                        if timeout < Duration::from_millis(1) {
                            reader.error("budgets.redis.timeout", "must be at least 1ms");
                            None
                        } else {
                            Some(timeout)
                        }
                    }),
            };
            if let (Some((_, scheme_tls)), Some(tls)) = (&url, &tls) {
                if *scheme_tls && tls.is_none() {
                    reader.error(
                        "budgets.redis.tls",
                        "rediss:// needs tls.ca (the CA Redis's certificate chains to; platform roots are never used)",
                    );
                    complete = false;
                } else if !*scheme_tls && tls.is_some() {
                    reader.error("budgets.redis.tls", "needs a rediss:// url");
                    complete = false;
                }
            }
            (url, key_prefix, tls, timeout)
        }
    };
    let allow_on_error = match map.get("on_error") {
        None => Some(false),
        Some(value) => match reader.string("budgets.on_error", value) {
            Some("deny") => Some(false),
            Some("allow") => Some(true),
            Some(_) => {
                reader.error("budgets.on_error", "must be deny or allow");
                None
            }
            None => None,
        },
    };
    let max_window = match map.get("max_window") {
        None => Some(DEFAULT_MAX_WINDOW),
        Some(value) => reader
            .duration("budgets.max_window", value, MAX_MAX_WINDOW)
            .and_then(|window| {
                if window < Duration::from_secs(1) {
                    reader.error("budgets.max_window", "must be at least 1s");
                    None
                } else {
                    Some(window)
                }
            }),
    };
    let settings = BudgetSettings {
        url: url?.0,
        key_prefix: key_prefix?,
        tls: tls?,
        timeout: timeout?,
        allow_on_error: allow_on_error?,
        max_window: max_window?,
    };
    complete.then_some(settings)
}

fn read_tls(reader: &mut Reader, value: &Value, base_dir: &Path) -> Option<RedisTls> {
    let path = "budgets.redis.tls";
    let tls = reader.mapping(path, value, &["ca", "cert", "key"])?;
    let mut file = |key: &str| {
        tls.get(key).map(|value| {
            reader
                .string(&child(path, key), value)
                .map(|text| base_dir.join(text))
        })
    };
    let (ca, cert, key) = (file("ca"), file("cert"), file("key"));
    let Some(ca) = ca else {
        reader.error(
            path,
            "needs ca: the CA Redis's certificate chains to (platform roots are never used)",
        );
        return None;
    };
    if cert.is_some() != key.is_some() {
        reader.error(path, "cert and key go together");
        return None;
    }
    Some(RedisTls {
        ca: ca?,
        cert: cert.flatten(),
        key: key.flatten(),
    })
}

/// `routes[].cost`: 1 unless set.
pub fn read_cost(reader: &mut Reader, path: &str, value: Option<&Value>) -> Option<u64> {
    match value {
        None => Some(1),
        Some(value) => reader.integer(&child(path, "cost"), value, 1, MAX_UNITS),
    }
}

/// `routes[].budget`.
pub fn read_budget(reader: &mut Reader, path: &str, value: &Value) -> Option<BudgetRule> {
    let path = child(path, "budget");
    let map = reader.mapping(&path, value, &["per_branch", "per_session", "claim"])?;
    let mut limit = |key: &str| match map.get(key) {
        None => Some(None),
        Some(value) => reader
            .integer(&child(&path, key), value, 0, MAX_UNITS)
            .map(Some),
    };
    let (per_branch, per_session) = (limit("per_branch"), limit("per_session"));
    let claim = match map.get("claim") {
        None => Some(None),
        Some(value) => match reader.string(&child(&path, "claim"), value) {
            Some(name)
                if !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
                    && !super::REGISTERED_CLAIMS.contains(&name) =>
            {
                Some(Some(name.into()))
            }
            Some(_) => {
                reader.error(
                    child(&path, "claim"),
                    "must be a plain claim name (letters, digits, _ - . :) that no other rule reads (not sub, act, scope, exp, …)",
                );
                None
            }
            None => None,
        },
    };
    let rule = BudgetRule {
        per_branch: per_branch?,
        per_session: per_session?,
        claim: claim?,
    };
    if rule.per_branch.is_none() && rule.per_session.is_none() {
        reader.error(
            path,
            "sets no limit: give per_branch or per_session (a claim only lowers per_branch; a token without it would be unlimited)",
        );
        return None;
    }
    Some(rule)
}
