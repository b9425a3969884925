//! Routes: which rules apply to a request, chosen by method, host and normalised path.
//!
//! Guarantees: routes are tried in configuration order and the first match wins; a route
//! without `methods` or `hosts` matches any; `path_prefix` matches on whole segments
//! ([`crate::decision::path::has_segment_prefix`]); hosts compare case-insensitively without port or
//! trailing dot. No match means the configured default, which is always deny.

use crate::decision::path::has_segment_prefix;
use crate::decision::spiffe::CallerPattern;

/// One configured route, with its values already parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// Reported in dynamic metadata and logs, so operators can tell which rule decided.
    pub name: std::sync::Arc<str>,
    /// Upper-case methods; `None` matches any method.
    pub methods: Option<Vec<String>>,
    /// Normalised hosts ([`normalize_host`]); `None` matches any host.
    pub hosts: Option<Vec<String>>,
    /// Normalised path prefix, e.g. `/calendar` or `/`.
    pub path_prefix: String,
    /// Every one must appear as an exact token of the `scope` claim.
    pub require_scopes: Vec<String>,
    /// When set, the caller (current actor) must match one entry. Prior actors never count.
    pub allow_callers: Option<Vec<CallerPattern>>,
    /// Lowers the global `delegation.max_depth` for this route; never raises it.
    pub max_depth: Option<usize>,
    /// Keep the `Authorization` header for the upstream (default: removed).
    pub forward_token: bool,
    /// A `sid` claim must be present, so every call of a workflow is attributable and
    /// revocable as a unit.
    pub require_session: bool,
    /// `mcp`: the body is an MCP JSON-RPC message, checked by [`crate::decision::mcp`].
    pub mcp: Option<std::sync::Arc<crate::decision::mcp::McpRules>>,
    /// `cost`: units an allowed request is charged (and, for Envoy's rate-limit service, the
    /// `cost` of the allow's dynamic metadata). 1 unless configured.
    pub cost: u64,
    /// `budget`: the branch and session limits, checked and charged by the ledger.
    pub budget: Option<crate::decision::budget::BudgetRule>,
    /// `enforce: false` (shadow mode): the whole decision runs, is audited and metered, and a
    /// denial is answered with an allow that carries no identity. True unless configured.
    pub enforce: bool,
}

impl Route {
    /// A route on `path_prefix` with nothing but defaults, for unit tests.
    #[cfg(test)]
    pub fn for_tests(name: &str, path_prefix: &str) -> Self {
        Self {
            name: name.into(),
            methods: None,
            hosts: None,
            path_prefix: path_prefix.to_owned(),
            require_scopes: Vec::new(),
            allow_callers: None,
            max_depth: None,
            forward_token: false,
            require_session: false,
            mcp: None,
            cost: 1,
            budget: None,
            enforce: true,
        }
    }

    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self
                .hosts
                .as_ref()
                .is_none_or(|hosts| hosts.iter().any(|h| *h == host))
            && has_segment_prefix(path, &self.path_prefix)
    }
}

/// The ordered routes of one configuration.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route matching `method`, the raw `host` (normalised here) and the normalised `path`.
    pub fn select(&self, method: &str, host: &str, path: &str) -> Option<&Route> {
        self.select_indexed(method, host, path)
            .map(|(_, route)| route)
    }

    /// [`RouteTable::select`] with the route's index in the table (for per-route state).
    pub fn select_indexed(&self, method: &str, host: &str, path: &str) -> Option<(usize, &Route)> {
        let host = normalized_host(host);
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.matches(method, &host, path))
    }

    /// The route at `index` in the table.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Lower-cases a host and drops its port and trailing dot: `Calendar.Example.org.:443` →
/// `calendar.example.org`; `[::1]:8080` → `[::1]`.
pub fn normalize_host(host: &str) -> String {
    normalized_host(host).into_owned()
}

/// [`normalize_host`], borrowing a host already in normal form (no port, no trailing dot, no
/// upper case): the common case on the check path costs no allocation.
fn normalized_host(host: &str) -> std::borrow::Cow<'_, str> {
    if !host
        .bytes()
        .any(|byte| matches!(byte, b':' | b'[') || byte.is_ascii_uppercase())
        && !host.ends_with('.')
    {
        return std::borrow::Cow::Borrowed(host);
    }
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    std::borrow::Cow::Owned(without_port.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, methods: Option<&[&str]>, hosts: Option<&[&str]>, prefix: &str) -> Route {
        Route {
            name: name.into(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            hosts: hosts.map(|h| h.iter().map(|s| normalize_host(s)).collect()),
            path_prefix: prefix.to_owned(),
            require_scopes: vec![],
            allow_callers: None,
            max_depth: None,
            forward_token: false,
            require_session: false,
            mcp: None,
            cost: 1,
            budget: None,
            enforce: true,
        }
    }

    #[test]
    fn first_match_wins_on_method_host_and_segment_prefix() {
        let table = RouteTable::new(vec![
            route(
                "read",
                Some(&["GET"]),
                Some(&["calendar.example.org"]),
                "/calendar",
            ),
            route("write", Some(&["POST"]), None, "/calendar"),
            route("admin", None, None, "/admin"),
        ]);
        let name = |method, host, path| table.select(method, host, path).map(|r| &*r.name);
        assert_eq!(
            name("GET", "calendar.example.org", "/calendar/events"),
            Some("read")
        );
        assert_eq!(
            name("GET", "Calendar.Example.ORG.:443", "/calendar"),
            Some("read")
        );
        assert_eq!(name("GET", "other.example.org", "/calendar"), None);
        assert_eq!(
            name("POST", "other.example.org", "/calendar/x"),
            Some("write")
        );
        assert_eq!(name("GET", "calendar.example.org", "/calendarx"), None);
        assert_eq!(name("DELETE", "", "/admin/users"), Some("admin"));
        assert_eq!(name("GET", "", "/"), None);
    }

    #[test]
    fn hosts_normalise() {
        assert_eq!(normalize_host("Example.org:8080"), "example.org");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("example.org."), "example.org");
        for host in [
            "calendar.example.org",
            "Calendar.example.org",
            "a:1",
            "a.",
            "[::1]",
            "[x]y",
            "",
        ] {
            let borrowed = matches!(normalized_host(host), std::borrow::Cow::Borrowed(_));
            // Borrowed only when the full normalisation leaves it alone: no port, no
            // bracketed literal (cut after `]`), no trailing dot, no capitals.
            let full = host.trim_end_matches('.').to_ascii_lowercase();
            assert_eq!(
                borrowed,
                full == host && !host.contains([':', '[']),
                "{host}"
            );
        }
        // Text after a bracketed literal is cut: a borrowed `[x]y` would match no `[x]` route.
        assert_eq!(normalize_host("[x]y"), "[x]");
    }
}
