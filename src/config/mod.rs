//! Configuration: YAML parsed once into typed values.
//!
//! Guarantees: unknown keys are errors; every error names its key path; all errors of a file
//! are reported together ([`ConfigErrors`]); JWKS files are read and parsed here, so a config
//! that loads has usable keys for every issuer. Nothing listens before this succeeds.
//! Relative file paths are resolved against the configuration file's directory.

mod budgets;
mod delegation;
pub use delegation::scope_token;
mod issuers;
mod mcp;
mod operations;
pub(crate) mod reader;
pub mod tls;

pub use budgets::{BudgetSettings, DEFAULT_KEY_PREFIX, DEFAULT_MAX_WINDOW, RedisTls};
pub use operations::{
    AdminOperation, AdminRights, AuditConfig, AuditOutput, Grantees, HttpRequestSource, Limits,
    ListenAddress, Listeners, NatsSettings, NatsTls,
};
pub use reader::{ConfigError, ConfigErrors, parse_duration};

use crate::decision::identity::IdentitySource;
use crate::decision::path;
use crate::decision::policy::DelegationPolicy;
use crate::decision::response::ResponseSettings;
use crate::decision::routes::{Route, RouteTable, normalize_host};
use crate::decision::spiffe::{CallerPattern, SpiffeId, TrustDomain};
use crate::decision::{CacheConfig, DecisionSettings};
use delegation::MAX_DEPTH_LIMIT;
use reader::{Reader, child, item};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

/// A whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: Listeners,
    /// `admin`: who may revoke, unrevoke and list on the admin listener.
    pub admin: AdminRights,
    /// Everything a decision depends on; the pipeline is built from this alone.
    pub decision: DecisionSettings,
    /// `None` when `audit.output: off`.
    pub audit: Option<AuditConfig>,
    pub limits: Limits,
    /// `log.level`; `RUST_LOG` wins when set.
    pub log_level: Option<tracing::Level>,
    /// `revocation.file`: where revocations persist across restarts.
    pub revocation_file: Option<std::path::PathBuf>,
    /// `revocation.nats`: the fleet-wide bucket the list mirrors.
    pub revocation_nats: Option<NatsSettings>,
    /// `budgets`: the ledger (Redis) that budgeted routes are charged on.
    pub budgets: Option<BudgetSettings>,
    /// Every `issuers[].jwks_file`, resolved: a change to one triggers a reload.
    pub jwks_files: Vec<std::path::PathBuf>,
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "identity",
    "issuers",
    "tokens",
    "delegation",
    "routes",
    "default",
    "cache",
    "audit",
    "limits",
    "log",
    "revocation",
    "admin",
    "budgets",
];
const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let text = reader::read_text(path)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base)
    }

    /// Valid but risky shapes, for `check-config` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = operations::admin_warnings(&self.listen, &self.admin);
        warnings.extend(mcp::shadow_warnings(&self.decision.routes));
        for route in self.decision.routes.iter().filter(|route| !route.enforce) {
            warnings.push(format!(
                "route {}: enforce: false (shadow mode): its denials are audited and counted in actguard_shadow_denies_total, and the requests are allowed without an identity",
                route.name
            ));
        }
        if let Some(budgets) = &self.budgets {
            if budgets.allow_on_error {
                warnings.push(
                    "budgets.on_error: allow: while Redis cannot be reached or answers errors, budgeted requests are allowed uncharged (counted in actguard_budget_errors_total, audited \"budget\":\"unavailable\")".to_owned(),
                );
            }
            if !self
                .decision
                .routes
                .iter()
                .any(|route| route.budget.is_some())
            {
                warnings
                    .push("budgets: no route has a budget, so nothing is ever charged".to_owned());
            }
        }
        warnings
    }

    /// Parses and validates YAML text; relative paths are resolved against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, ConfigErrors> {
        let document = reader::parse_yaml(text)?;
        let mut reader = Reader::default();
        let config = read_config(&mut reader, &document, base_dir);
        match config {
            Some(config) if !reader.has_errors() => Ok(config),
            _ => Err(ConfigErrors(reader.into_errors())),
        }
    }
}

fn read_config(reader: &mut Reader, document: &Value, base_dir: &Path) -> Option<Config> {
    let top = reader.mapping("", document, TOP_KEYS)?;
    let empty = Value::Object(Default::default());
    let listen = operations::read_listen(reader, top.get("listen").unwrap_or(&empty), base_dir);
    let admin = operations::read_admin(reader, top.get("admin"), listen.as_ref());
    let identity = reader
        .required("", top, "identity")
        .and_then(|value| read_identity(reader, value));
    let issuers = reader
        .required("", top, "issuers")
        .and_then(|value| issuers::read_issuers(reader, value, base_dir));
    let tokens = read_tokens(reader, top.get("tokens").unwrap_or(&empty));
    let delegation_rules =
        delegation::read_delegation(reader, top.get("delegation").unwrap_or(&empty));
    let max_depth = delegation_rules.as_ref().map(|rules| rules.max_depth);
    if let Some(default) = top.get("default")
        && default.as_str() != Some("deny")
    {
        reader.error(
            "default",
            "must be deny (to allow a path, add a route for it, e.g. path_prefix: /)",
        );
    }
    let cache = read_cache(reader, top.get("cache").unwrap_or(&empty));
    let audit = operations::read_audit(reader, top.get("audit"), base_dir);
    let limits = operations::read_limits(reader, top.get("limits"));
    let log_level = operations::read_log(reader, top.get("log"));
    let jwks_files = top
        .get("issuers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|issuer| issuer.get("jwks_file").and_then(Value::as_str))
        .map(|file| base_dir.join(file))
        .collect();
    let (revocation_file, revocation_nats) = match top.get("revocation") {
        None => (Some(None), Some(None)),
        Some(value) => match reader.mapping("revocation", value, &["file", "nats"]) {
            None => (None, None),
            Some(map) => {
                let file = match map.get("file") {
                    None => Some(None),
                    Some(file) => reader
                        .string("revocation.file", file)
                        .map(|file| Some(base_dir.join(file))),
                };
                let nats = match map.get("nats") {
                    None => Some(None),
                    Some(nats) => operations::read_nats(reader, nats, base_dir).map(Some),
                };
                (file, nats)
            }
        },
    };
    let budgets = match top.get("budgets") {
        None => Some(None),
        Some(value) => budgets::read_budgets(reader, value, base_dir).map(Some),
    };
    // Routes are read even when identity or delegation failed, so their errors are reported
    // too; checks that need those values are skipped until they are valid.
    let trust_domains = identity.as_ref().map(|(_, domains, _)| domains);
    let routes = match top.get("routes") {
        Some(value) => read_routes(reader, value, trust_domains, max_depth),
        None => Some(Vec::new()),
    };
    if let Some(routes) = &routes
        && !top.contains_key("budgets")
    {
        for (index, route) in routes.iter().enumerate() {
            if route.budget.is_some() {
                reader.error(
                    child(&item("routes", index), "budget"),
                    "needs budgets.redis: the counters are shared by the fleet on Redis",
                );
            }
        }
    }
    if let (Some(routes), Some(Some(branch_claim))) =
        (&routes, tokens.as_ref().map(|t| t.branch_claim.as_deref()))
    {
        for (index, route) in routes.iter().enumerate() {
            if route.budget.as_ref().and_then(|b| b.claim.as_deref()) == Some(branch_claim) {
                reader.error(
                    child(&child(&item("routes", index), "budget"), "claim"),
                    "is tokens.branch_claim: one claim cannot name both the branch and its budget",
                );
            }
        }
    }
    if let (Some(Some(budgets)), Some(limits)) = (&budgets, &limits)
        && budgets.timeout >= limits.check_timeout
    {
        reader.error(
            "budgets.redis.timeout",
            format!(
                "must be shorter than limits.check_timeout ({:?}): a charge that times out must still be answered (and audited) before the check's own deadline",
                limits.check_timeout
            ),
        );
    }
    let (local_identity, trust_domains, identity_sources) = identity?;
    let listen = listen?;
    if listen.http.is_some() && !identity_sources.contains(&IdentitySource::Xfcc) {
        reader.error(
            "listen.http",
            "HTTP mode reads the caller from x-forwarded-client-cert: add xfcc to identity.sources (only safe behind a proxy that sanitises it)",
        );
    }
    let rules = delegation_rules?;
    let delegation = DelegationPolicy {
        trust_domains,
        max_depth: rules.max_depth,
        ceilings: rules.ceilings,
        edges: rules.edges,
    };
    let routes = routes?;
    let tokens = tokens?;
    let realm = tokens
        .realm
        .unwrap_or_else(|| local_identity.as_str().to_owned());
    Some(Config {
        listen,
        admin: admin?,
        decision: DecisionSettings {
            local_identity,
            identity_sources,
            delegation,
            issuers: issuers?,
            leeway: tokens.leeway,
            max_token_bytes: tokens.max_bytes,
            require_access_token_typ: tokens.require_access_token_typ,
            branch_claim: tokens.branch_claim,
            routes: RouteTable::new(routes),
            cache: cache?,
            response: ResponseSettings {
                realm,
                resource_metadata: tokens.resource_metadata,
            },
        },
        audit: audit?,
        limits: limits?,
        log_level: log_level?,
        revocation_file: revocation_file?,
        revocation_nats: revocation_nats?,
        budgets: budgets?,
        jwks_files,
    })
}

type IdentityParts = (SpiffeId, BTreeSet<TrustDomain>, Vec<IdentitySource>);

fn read_identity(reader: &mut Reader, value: &Value) -> Option<IdentityParts> {
    let map = reader.mapping("identity", value, &["local", "trust_domains", "sources"])?;
    let local = reader.required("identity", map, "local").and_then(|value| {
        let text = reader.string("identity.local", value)?;
        SpiffeId::parse(text)
            .map_err(|error| reader.error("identity.local", format!("SPIFFE ID {error}")))
            .ok()
    });
    let trust_domains = reader
        .required("identity", map, "trust_domains")
        .and_then(|value| {
            reader.list("identity.trust_domains", value, |reader, path, element| {
                let text = reader.string(path, element)?;
                TrustDomain::parse(text)
                    .map_err(|error| reader.error(path, format!("trust domain {error}")))
                    .ok()
            })
        })
        .map(BTreeSet::from_iter);
    if trust_domains.as_ref().is_some_and(BTreeSet::is_empty) {
        reader.error(
            "identity.trust_domains",
            "must list at least one trust domain",
        );
    }
    let sources = match map.get("sources") {
        None => Some(vec![IdentitySource::Certificate, IdentitySource::Principal]),
        Some(value) => read_sources(reader, value),
    };
    Some((local?, trust_domains?, sources?))
}

fn read_sources(reader: &mut Reader, value: &Value) -> Option<Vec<IdentitySource>> {
    let sources = reader.list("identity.sources", value, |reader, path, element| {
        let text = reader.string(path, element)?;
        let source = IdentitySource::parse(text);
        if source.is_none() {
            reader.error(path, "must be certificate, principal or xfcc");
        }
        source
    })?;
    let unique: HashSet<_> = sources.iter().collect();
    if sources.is_empty() || unique.len() != sources.len() {
        reader.error(
            "identity.sources",
            "must list each source at most once, and at least one",
        );
        return None;
    }
    let position = |wanted| sources.iter().position(|source| *source == wanted);
    if let (Some(certificate), Some(principal)) = (
        position(IdentitySource::Certificate),
        position(IdentitySource::Principal),
    ) && principal < certificate
    {
        reader.error(
            "identity.sources",
            "certificate must come before principal: the certificate wins when both are present",
        );
        return None;
    }
    Some(sources)
}

/// Flags list elements whose `key` repeats an earlier element's, whether or not the
/// elements are otherwise valid, so the report is complete.
fn report_duplicates(reader: &mut Reader, path: &str, list: &Value, key: &str, message: &str) {
    let mut seen = HashSet::new();
    for (index, element) in list.as_array().into_iter().flatten().enumerate() {
        if let Some(name) = element.get(key).and_then(Value::as_str)
            && !seen.insert(name)
        {
            reader.error(child(&item(path, index), key), message);
        }
    }
}

struct TokenSettings {
    leeway: Duration,
    max_bytes: usize,
    require_access_token_typ: bool,
    realm: Option<String>,
    resource_metadata: Option<String>,
    branch_claim: Option<String>,
}

/// Claims a branch claim may not be: they mean something else to every step of the pipeline.
const REGISTERED_CLAIMS: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "act",
    "may_act",
    "scope",
    "client_id",
    "azp",
    "authorization_details",
];

fn read_tokens(reader: &mut Reader, value: &Value) -> Option<TokenSettings> {
    let keys = [
        "leeway",
        "max_bytes",
        "require_typ",
        "realm",
        "resource_metadata",
        "branch_claim",
    ];
    let map = reader.mapping("tokens", value, &keys)?;
    let leeway = match map.get("leeway") {
        None => Some(Duration::from_secs(30)),
        Some(value) => reader.duration("tokens.leeway", value, MAX_LEEWAY),
    };
    let max_bytes = match map.get("max_bytes") {
        None => Some(crate::decision::token::DEFAULT_MAX_TOKEN_BYTES as u64),
        Some(value) => reader.integer("tokens.max_bytes", value, 512, 65536),
    };
    // The one explicit type there is to require; naming it keeps the setting readable and
    // leaves room for none other.
    let require_access_token_typ = match map.get("require_typ") {
        None => Some(false),
        Some(value) => match reader.string("tokens.require_typ", value) {
            Some("at+jwt") => Some(true),
            Some(_) => {
                reader.error(
                    "tokens.require_typ".to_owned(),
                    "must be at+jwt (RFC 9068), the only type it can require",
                );
                None
            }
            None => None,
        },
    };
    let mut quoted_text = |key: &str| -> Option<Option<String>> {
        let Some(value) = map.get(key) else {
            return Some(None);
        };
        read_quotable(reader, &child("tokens", key), value).map(Some)
    };
    let realm = quoted_text("realm");
    let resource_metadata = quoted_text("resource_metadata");
    let branch_claim = match map.get("branch_claim") {
        None => Some(None),
        Some(value) => match reader.string("tokens.branch_claim", value) {
            Some(name)
                if !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                    && !REGISTERED_CLAIMS.contains(&name) =>
            {
                Some(Some(name.to_owned()))
            }
            Some(_) => {
                reader.error(
                    "tokens.branch_claim".to_owned(),
                    "must be a claim name of at most 64 letters, digits, '_', '-' or '.', and not a claim with another meaning (sub, sid, jti, act, …)",
                );
                None
            }
            None => None,
        },
    };
    Some(TokenSettings {
        leeway: leeway?,
        max_bytes: usize::try_from(max_bytes?).ok()?,
        require_access_token_typ: require_access_token_typ?,
        realm: realm?,
        resource_metadata: resource_metadata?,
        branch_claim: branch_claim?,
    })
}

fn read_cache(reader: &mut Reader, value: &Value) -> Option<CacheConfig> {
    let map = reader.mapping("cache", value, &["max_entries", "max_bytes"])?;
    let max_entries = match map.get("max_entries") {
        None => Some(100_000),
        Some(value) => reader.integer("cache.max_entries", value, 0, 10_000_000),
    };
    let max_bytes = match map.get("max_bytes") {
        // ~0.75 KB per typical entry (token and the cache's own bookkeeping): room for the
        // default 100k entries.
        None => Some(96 << 20),
        Some(value) => reader.integer("cache.max_bytes", value, 1 << 16, 1 << 34),
    };
    Some(CacheConfig {
        max_entries: max_entries?,
        max_bytes: max_bytes?,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn read_routes(
    reader: &mut Reader,
    value: &Value,
    trust_domains: Option<&BTreeSet<TrustDomain>>,
    max_depth: Option<usize>,
) -> Option<Vec<Route>> {
    let routes = reader.list("routes", value, |reader, path, element| {
        read_route(reader, path, element, trust_domains, max_depth)
    });
    report_duplicates(
        reader,
        "routes",
        value,
        "name",
        "is used by an earlier route",
    );
    routes
}

fn read_string_list(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    valid: impl Fn(&str) -> bool,
    rule: &str,
) -> Option<Vec<String>> {
    reader.list(path, value, |reader, path, element| {
        let text = reader.string(path, element)?;
        if !valid(text) {
            reader.error(path, rule);
            return None;
        }
        Some(text.to_owned())
    })
}

/// A string that goes into a `WWW-Authenticate` quoted-string as it is: no quotes,
/// backslashes or control characters.
pub(crate) fn read_quotable(reader: &mut Reader, path: &str, value: &Value) -> Option<String> {
    let text = reader.string(path, value)?;
    if text
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        reader.error(
            path,
            "must not contain quotes, backslashes or control characters",
        );
        return None;
    }
    Some(text.to_owned())
}

/// `require_scopes`: scope tokens.
pub(crate) fn read_scopes(reader: &mut Reader, path: &str, value: &Value) -> Option<Vec<String>> {
    read_string_list(
        reader,
        path,
        value,
        |s| {
            s.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        },
        "must be one scope token (printable ASCII, no spaces, quotes or backslashes)",
    )
}

/// `allow_callers`: SPIFFE ID patterns, each in a configured trust domain.
pub(crate) fn read_allow_callers(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    trust_domains: Option<&BTreeSet<TrustDomain>>,
) -> Option<Vec<CallerPattern>> {
    reader.list(path, value, |reader, path, element| {
        let text = reader.string(path, element)?;
        let pattern = CallerPattern::parse(text)
            .map_err(|error| reader.error(path, format!("SPIFFE ID pattern {error}")))
            .ok()?;
        let trust_domain = match &pattern {
            CallerPattern::Exact(id) => id.trust_domain().to_owned(),
            CallerPattern::Under { trust_domain, .. } => trust_domain.clone(),
        };
        if trust_domains.is_some_and(|domains| !domains.iter().any(|d| d.as_str() == trust_domain))
        {
            reader.error(
                path,
                "is in a trust domain not listed in identity.trust_domains, so it can never match",
            );
            return None;
        }
        Some(pattern)
    })
}

fn read_route(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    trust_domains: Option<&BTreeSet<TrustDomain>>,
    global_max_depth: Option<usize>,
) -> Option<Route> {
    let keys = [
        "name",
        "methods",
        "hosts",
        "path_prefix",
        "require_scopes",
        "allow_callers",
        "max_depth",
        "forward_token",
        "require_session",
        "mcp",
        "cost",
        "budget",
        "enforce",
        // Refused below with a message that says where tool rules go.
        "tools",
    ];
    if let Some(map) = value.as_object()
        && map.contains_key("tools")
    {
        reader.error(
            child(path, "tools"),
            "tool rules apply to MCP messages: put them under mcp.tools",
        );
    }
    let map = reader.mapping(path, value, &keys)?;
    let name = reader.required(path, map, "name").and_then(|value| {
        let key_path = child(path, "name");
        let text = reader.string(&key_path, value)?;
        if !text.chars().all(is_name_char) {
            reader.error(key_path, "must use only letters, digits, '-', '_' and '.'");
            return None;
        }
        Some(text.to_owned())
    });
    let methods = map
        .get("methods")
        .map(|value| {
            read_string_list(
                reader,
                &child(path, "methods"),
                value,
                |m| m.chars().all(|c| c.is_ascii_alphabetic()),
                "must be an HTTP method such as GET",
            )
            .map(|methods| methods.iter().map(|m| m.to_ascii_uppercase()).collect())
        })
        .map_or(Some(None), |parsed| parsed.map(Some));
    let hosts = map
        .get("hosts")
        .map(|value| {
            read_string_list(
                reader,
                &child(path, "hosts"),
                value,
                |h| {
                    h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
                },
                "must be a host name, optionally with a port",
            )
            .map(|hosts| hosts.iter().map(|h| normalize_host(h)).collect())
        })
        .map_or(Some(None), |parsed| parsed.map(Some));
    let path_prefix = reader.required(path, map, "path_prefix").and_then(|value| {
        let key_path = child(path, "path_prefix");
        let text = reader.string(&key_path, value)?;
        match path::normalize(text) {
            Ok(normalized) if !text.contains(['%', ';', '?', '#']) && text.trim_end_matches('/') == normalized.trim_end_matches('/') => Some(normalized),
            _ => {
                reader.error(
                    key_path,
                    "must be a normalised absolute path such as /calendar (no '.', '..', '//', '%', ';', '?' or '#')",
                );
                None
            }
        }
    });
    let require_scopes = match map.get("require_scopes") {
        None => Some(Vec::new()),
        Some(value) => read_scopes(reader, &child(path, "require_scopes"), value),
    };
    let allow_callers = map
        .get("allow_callers")
        .map(|value| {
            read_allow_callers(reader, &child(path, "allow_callers"), value, trust_domains)
        })
        .map_or(Some(None), |parsed| parsed.map(Some));
    let max_depth = match map.get("max_depth") {
        None => Some(None),
        Some(value) => reader
            .integer(
                &child(path, "max_depth"),
                value,
                0,
                global_max_depth.map_or(MAX_DEPTH_LIMIT, |depth| depth as u64),
            )
            .map(|depth| Some(depth as usize)),
    };
    let forward_token = match map.get("forward_token") {
        None => Some(false),
        Some(value) => reader.boolean(&child(path, "forward_token"), value),
    };
    let require_session = match map.get("require_session") {
        None => Some(false),
        Some(value) => reader.boolean(&child(path, "require_session"), value),
    };
    let route_depth = max_depth.flatten().or(global_max_depth);
    let mcp = match map.get("mcp") {
        None => Some(None),
        Some(value) => mcp::read_mcp(
            reader,
            &child(path, "mcp"),
            value,
            trust_domains,
            route_depth,
        )
        .map(Some),
    };
    let cost = budgets::read_cost(reader, path, map.get("cost"));
    let budget = match map.get("budget") {
        None => Some(None),
        Some(value) => budgets::read_budget(reader, path, value).map(Some),
    };
    // A budget counts per session: a token without `sid` would be a session of its own (its
    // `jti`), and every new token a fresh budget. A budgeted route requires the session.
    let require_session = match (&budget, require_session) {
        (Some(Some(_)), Some(false)) if map.contains_key("require_session") => {
            reader.error(
                child(path, "require_session"),
                "cannot be false on a route with a budget: without a sid every token would start a new budget",
            );
            None
        }
        (Some(Some(_)), Some(_)) => Some(true),
        (_, require_session) => require_session,
    };
    let enforce = match map.get("enforce") {
        None => Some(true),
        Some(value) => reader.boolean(&child(path, "enforce"), value),
    };
    // A budget that is never enforced would be charged for requests the shadow route lets
    // through anyway: roll budgets out on enforced routes (their metrics show what is spent).
    if enforce == Some(false) && map.contains_key("budget") {
        reader.error(
            child(path, "enforce"),
            "cannot be false on a route with a budget: budgets are charged only for requests actguard allows",
        );
    }
    Some(Route {
        enforce: enforce?,
        cost: cost?,
        budget: budget?,
        name: name?.into(),
        methods: methods?,
        hosts: hosts?,
        path_prefix: path_prefix?.into_owned(),
        require_scopes: require_scopes?,
        allow_callers: allow_callers?,
        max_depth: max_depth?,
        forward_token: forward_token?,
        require_session: require_session?,
        mcp: mcp?.map(std::sync::Arc::new),
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
