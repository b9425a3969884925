//! Operational configuration: listeners, audit log, limits, diagnostics.

use super::reader::{Reader, child};
use super::tls::TlsSettings;
use crate::decision::spiffe::CallerPattern;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    /// `unix:/path.sock`: the usual way a sidecar talks to the Envoy in its pod.
    Unix(PathBuf),
}

impl ListenAddress {
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_prefix("unix:") {
            Some(socket) if socket.starts_with('/') => Some(Self::Unix(PathBuf::from(socket))),
            Some(_) => None,
            None => text.parse().ok().map(Self::Tcp),
        }
    }
}

/// Which request HTTP mode checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpRequestSource {
    /// The HTTP request as received: Envoy `http_service` forwards the original method, path and
    /// host.
    #[default]
    AsReceived,
    /// The original request as nginx `auth_request` describes it: `X-Original-Method`,
    /// `X-Original-URI` (and `Host`). No other family is read: a client-sent `X-Forwarded-*`
    /// (which nginx passes through) means nothing. Safe because nginx overwrites these headers.
    OriginalHeaders,
    /// The original request as Traefik `forwardAuth` describes it: `X-Forwarded-Method`,
    /// `-Uri`, `-Host`, and nothing else.
    ForwardedHeaders,
}

/// Every listener of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// ext_authz over gRPC (Envoy `grpc_service`).
    pub grpc: ListenAddress,
    /// TLS with client-certificate verification on the gRPC listener.
    pub grpc_tls: Option<TlsSettings>,
    /// ext_authz over plain HTTP (Envoy `http_service`, nginx `auth_request`); off by default.
    pub http: Option<SocketAddr>,
    /// Where HTTP mode reads the checked request from.
    pub http_request: HttpRequestSource,
    /// `/healthz`, `/readyz`, `/metrics` and the revocation API; loopback by default, `off`
    /// disables it.
    pub admin: Option<ListenAddress>,
    /// TLS with client-certificate verification on a TCP admin listener.
    pub admin_tls: Option<TlsSettings>,
    /// `/healthz`, `/readyz` and `/metrics` only, plain HTTP, no revocation API: for kubelet
    /// probes and Prometheus when the admin listener stays on loopback or a Unix socket. Off by
    /// default.
    pub probes: Option<SocketAddr>,
    /// gRPC reflection on the gRPC and admin listeners (for `grpcurl`); off by default.
    pub reflection: bool,
}

/// Overload and shutdown behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Checks running at once; one more is rejected at once with RESOURCE_EXHAUSTED.
    pub max_concurrent_checks: usize,
    /// A check not answered within this is abandoned with DEADLINE_EXCEEDED (below Envoy's
    /// 200 ms default ext_authz timeout, so Envoy sees our answer rather than its own).
    pub check_timeout: Duration,
    /// How long in-flight checks may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_checks: 1024,
            check_timeout: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

fn tcp_address(reader: &mut Reader, path: &str, value: &Value) -> Option<SocketAddr> {
    let text = reader.string(path, value)?;
    let parsed = text.parse().ok();
    if parsed.is_none() {
        reader.error(path, "must be IP:PORT, e.g. 127.0.0.1:9192");
    }
    parsed
}

/// Two TCP listeners collide when they share a non-zero port on the same or a wildcard IP.
fn collides(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_tls(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    base_dir: &Path,
) -> Option<TlsSettings> {
    let keys = ["cert", "key", "client_ca", "allow_peers", "reload_interval"];
    let map = reader.mapping(path, value, &keys)?;
    let mut file = |key: &str| {
        let value = reader.required(path, map, key)?;
        reader
            .string(&child(path, key), value)
            .map(|text| base_dir.join(text))
    };
    let (cert, key, client_ca) = (file("cert"), file("key"), file("client_ca"));
    let allow_peers = reader.required(path, map, "allow_peers").and_then(|value| {
        reader.list(
            &child(path, "allow_peers"),
            value,
            |reader, item_path, element| {
                let text = reader.string(item_path, element)?;
                CallerPattern::parse(text)
                    .map_err(|error| reader.error(item_path, format!("SPIFFE ID pattern {error}")))
                    .ok()
            },
        )
    });
    if allow_peers.as_ref().is_some_and(Vec::is_empty) {
        reader.error(
            child(path, "allow_peers"),
            "must list at least one peer (the local Envoy)",
        );
    }
    let reload_interval = match map.get("reload_interval") {
        None => Some(Duration::from_secs(10)),
        Some(value) => reader.duration(
            &child(path, "reload_interval"),
            value,
            Duration::from_secs(3600),
        ),
    };
    let settings = TlsSettings {
        cert: cert?,
        key: key?,
        client_ca: client_ca?,
        allow_peers: allow_peers?,
        reload_interval: reload_interval?.max(Duration::from_secs(1)),
    };
    // Load once now, so a bad file is a configuration error, not a start-up surprise.
    if let Err(error) = super::tls::server_config(&settings) {
        reader.error(path, error);
        return None;
    }
    Some(settings)
}

pub fn read_listen(reader: &mut Reader, value: &Value, base_dir: &Path) -> Option<Listeners> {
    let keys = [
        "grpc",
        "grpc_tls",
        "http",
        "http_request",
        "admin",
        "admin_tls",
        "probes",
        "reflection",
    ];
    let map = reader.mapping("listen", value, &keys)?;
    let http_request = match map
        .get("http_request")
        .map(|v| reader.string("listen.http_request", v))
    {
        None => Some(HttpRequestSource::AsReceived),
        Some(Some("as_received")) => Some(HttpRequestSource::AsReceived),
        Some(Some("original_headers")) => Some(HttpRequestSource::OriginalHeaders),
        Some(Some("forwarded_headers")) => Some(HttpRequestSource::ForwardedHeaders),
        Some(Some(_)) => {
            reader.error(
                "listen.http_request",
                "must be as_received (Envoy http_service), original_headers (nginx auth_request: X-Original-*) or forwarded_headers (Traefik forwardAuth: X-Forwarded-*)",
            );
            None
        }
        Some(None) => None,
    };
    let grpc_tls = match map.get("grpc_tls") {
        None => Some(None),
        Some(value) => read_tls(reader, "listen.grpc_tls", value, base_dir).map(Some),
    };
    let admin_tls = match map.get("admin_tls") {
        None => Some(None),
        Some(value) => read_tls(reader, "listen.admin_tls", value, base_dir).map(Some),
    };
    let grpc = match map.get("grpc") {
        None => Some(ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 9191)))),
        Some(value) => {
            let text = reader.string("listen.grpc", value);
            let parsed = text.and_then(ListenAddress::parse);
            if text.is_some() && parsed.is_none() {
                reader.error(
                    "listen.grpc",
                    "must be HOST:PORT with an IP address (e.g. 127.0.0.1:9191) or unix:/absolute/path.sock",
                );
            }
            parsed
        }
    };
    let http = match map.get("http") {
        None => Some(None),
        Some(value) => tcp_address(reader, "listen.http", value).map(Some),
    };
    let admin = match map.get("admin") {
        None => Some(Some(ListenAddress::Tcp(SocketAddr::from((
            [127, 0, 0, 1],
            9192,
        ))))),
        // `off` unquoted is YAML's boolean false for the parser: both mean off.
        Some(Value::String(off)) if off == "off" => Some(None),
        Some(Value::Bool(false)) => Some(None),
        Some(value) => {
            let text = reader.string("listen.admin", value);
            let parsed = text.and_then(ListenAddress::parse);
            if text.is_some() && parsed.is_none() {
                reader.error(
                    "listen.admin",
                    "must be IP:PORT (e.g. 127.0.0.1:9192), unix:/absolute/path.sock or off",
                );
            }
            parsed.map(Some)
        }
    };
    let probes = match map.get("probes") {
        None => Some(None),
        Some(value) => tcp_address(reader, "listen.probes", value).map(Some),
    };
    let reflection = match map.get("reflection") {
        None => Some(false),
        Some(value) => reader.boolean("listen.reflection", value),
    };
    let (grpc, grpc_tls, http, admin, admin_tls, probes, http_request, reflection) = (
        grpc?,
        grpc_tls?,
        http?,
        admin?,
        admin_tls?,
        probes?,
        http_request?,
        reflection?,
    );
    if admin_tls.is_some() && !matches!(admin, Some(ListenAddress::Tcp(_))) {
        reader.error("listen.admin_tls", "needs a TCP listen.admin");
    }
    if grpc_tls.is_some() && !matches!(grpc, ListenAddress::Tcp(_)) {
        reader.error(
            "listen.grpc_tls",
            "needs a TCP listen.grpc (a Unix socket is already local to the pod)",
        );
    }
    let mut named: Vec<(&str, SocketAddr)> = Vec::new();
    if let ListenAddress::Tcp(address) = &grpc {
        named.push(("grpc", *address));
    }
    named.extend(http.map(|a| ("http", a)));
    if let Some(ListenAddress::Tcp(address)) = &admin {
        named.push(("admin", *address));
    }
    named.extend(probes.map(|a| ("probes", a)));
    if let (ListenAddress::Unix(grpc_socket), Some(ListenAddress::Unix(admin_socket))) =
        (&grpc, &admin)
        && grpc_socket == admin_socket
    {
        reader.error("listen.admin", "overlaps listen.grpc");
    }
    for (index, (name, address)) in named.iter().enumerate() {
        if let Some((other, _)) = named[..index]
            .iter()
            .find(|(_, earlier)| collides(earlier, address))
        {
            reader.error(child("listen", name), format!("overlaps listen.{other}"));
        }
    }
    Some(Listeners {
        grpc,
        grpc_tls,
        http,
        http_request,
        admin,
        admin_tls,
        probes,
        reflection,
    })
}

/// `Ok(None)` when the audit log is off.
pub fn read_audit(
    reader: &mut Reader,
    value: Option<&Value>,
    base_dir: &Path,
) -> Option<Option<AuditConfig>> {
    let Some(value) = value else {
        return Some(Some(AuditConfig::default()));
    };
    let map = reader.mapping(
        "audit",
        value,
        &["output", "sample_allows", "buffer_lines", "buffer_bytes"],
    )?;
    let mut config = AuditConfig::default();
    // The other keys are checked even when the log is off: a typo must not hide behind `off`.
    let mut off = false;
    if let Some(value) = map.get("output") {
        // `off` unquoted is YAML's boolean false for the parser: both mean off.
        if value == &Value::Bool(false) {
            off = true;
        } else {
            match reader.string("audit.output", value)? {
                "off" => off = true,
                "stdout" => {}
                file => config.output = AuditOutput::File(base_dir.join(file)),
            }
        }
    }
    if let Some(value) = map.get("sample_allows") {
        match value.as_f64() {
            Some(rate) if (0.0..=1.0).contains(&rate) => config.sample_allows = rate,
            _ => {
                reader.error("audit.sample_allows", "must be a number from 0 to 1");
                return None;
            }
        }
    }
    if let Some(value) = map.get("buffer_bytes") {
        config.buffer_bytes =
            reader.integer("audit.buffer_bytes", value, 65_536, 1 << 30)? as usize;
    }
    if let Some(value) = map.get("buffer_lines") {
        config.buffer_lines = reader.integer("audit.buffer_lines", value, 1, 1_000_000)? as usize;
    }
    Some((!off).then_some(config))
}

pub fn read_limits(reader: &mut Reader, value: Option<&Value>) -> Option<Limits> {
    let mut limits = Limits::default();
    let Some(value) = value else {
        return Some(limits);
    };
    let keys = ["max_concurrent_checks", "check_timeout", "drain_timeout"];
    let map = reader.mapping("limits", value, &keys)?;
    let concurrent = map
        .get("max_concurrent_checks")
        .map(|v| reader.integer("limits.max_concurrent_checks", v, 1, 1_000_000));
    let check_timeout = map
        .get("check_timeout")
        .map(|v| reader.duration("limits.check_timeout", v, Duration::from_secs(10)));
    let drain_timeout = map
        .get("drain_timeout")
        .map(|v| reader.duration("limits.drain_timeout", v, Duration::from_secs(600)));
    if let Some(concurrent) = concurrent {
        limits.max_concurrent_checks = concurrent? as usize;
    }
    if let Some(timeout) = check_timeout {
        limits.check_timeout = timeout?;
        if limits.check_timeout.is_zero() {
            reader.error("limits.check_timeout", "must be more than 0");
        }
    }
    if let Some(timeout) = drain_timeout {
        limits.drain_timeout = timeout?;
    }
    Some(limits)
}

pub fn read_log(reader: &mut Reader, value: Option<&Value>) -> Option<Option<tracing::Level>> {
    let Some(value) = value else {
        return Some(None);
    };
    let map = reader.mapping("log", value, &["level"])?;
    let Some(level) = map.get("level") else {
        return Some(None);
    };
    let text = reader.string("log.level", level)?;
    match text.parse::<tracing::Level>() {
        Ok(level) => Some(Some(level)),
        Err(_) => {
            reader.error("log.level", "must be error, warn, info, debug or trace");
            None
        }
    }
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Stdout,
    /// Appended to; created if missing.
    File(PathBuf),
}

/// `audit:` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    pub output: AuditOutput,
    /// Fraction of allows to log, 0.0–1.0 (every Nth allow, N = round(1/rate)); denies are
    /// always logged.
    pub sample_allows: f64,
    /// Lines the queue holds before new ones are dropped.
    pub buffer_lines: usize,
    /// Bytes the queue holds before new lines are dropped: with stdout read by nobody, memory
    /// stays bounded however large the requests' fields are.
    pub buffer_bytes: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            output: AuditOutput::Stdout,
            sample_allows: 1.0,
            buffer_lines: 4096,
            buffer_bytes: 8 << 20,
        }
    }
}

/// One operation of the revocation API, authorized on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminOperation {
    Revoke,
    Unrevoke,
    List,
}

impl AdminOperation {
    pub const ALL: [Self; 3] = [Self::Revoke, Self::Unrevoke, Self::List];

    /// `revoke`, `unrevoke` or `list`: the configuration word, the metric label and the audit
    /// record's `op`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Unrevoke => "unrevoke",
            Self::List => "list",
        }
    }
}

/// Who may perform one operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grantees {
    /// TLS peers (on a `listen.admin_tls` listener) by SPIFFE ID pattern; `None` means the
    /// default of the operation (see [`AdminRights`]).
    pub peers: Option<Vec<CallerPattern>>,
    /// Peers of a Unix-socket admin listener by uid (`SO_PEERCRED`); `None` means the uid
    /// actguard runs as (the owner of the socket).
    pub uids: Option<Vec<u32>>,
}

/// Who may revoke, unrevoke and list (the `admin` section).
///
/// Defaults: on a Unix socket, actguard's own uid may do all three (whoever can act as that
/// uid controls the process anyway); on a TLS listener, peers in `listen.admin_tls.allow_peers`
/// may revoke and list, and no one may unrevoke until `admin.unrevoke_peers` names someone; on
/// plain TCP, no one may do anything unless `admin.insecure_unauthenticated_tcp` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminRights {
    pub revoke: Grantees,
    pub unrevoke: Grantees,
    pub list: Grantees,
    /// Operations anyone who reaches a plain-TCP admin listener may perform (opt-in, warned).
    pub insecure_unauthenticated_tcp: Vec<AdminOperation>,
}

impl AdminRights {
    pub fn grantees(&self, operation: AdminOperation) -> &Grantees {
        match operation {
            AdminOperation::Revoke => &self.revoke,
            AdminOperation::Unrevoke => &self.unrevoke,
            AdminOperation::List => &self.list,
        }
    }
}

const ADMIN_KEYS: &[&str] = &[
    "revoke_peers",
    "unrevoke_peers",
    "list_peers",
    "revoke_uids",
    "unrevoke_uids",
    "list_uids",
    "insecure_unauthenticated_tcp",
];

/// The `admin` section, checked against the admin listener it governs: peer patterns need
/// `listen.admin_tls`, uids a Unix-socket `listen.admin`, and the plain-TCP opt-in a plain
/// TCP `listen.admin` (a right that could never apply is a mistake worth hearing about).
pub fn read_admin(
    reader: &mut Reader,
    value: Option<&Value>,
    listen: Option<&Listeners>,
) -> Option<AdminRights> {
    let Some(value) = value else {
        return Some(AdminRights::default());
    };
    let map = reader.mapping("admin", value, ADMIN_KEYS)?;
    let (tls, unix, plain_tcp) = match listen {
        Some(listen) => (
            listen.admin_tls.is_some(),
            matches!(listen.admin, Some(ListenAddress::Unix(_))),
            matches!(listen.admin, Some(ListenAddress::Tcp(_))) && listen.admin_tls.is_none(),
        ),
        // listen has errors of its own: check the keys, not their fit.
        None => (true, true, true),
    };
    let mut complete = true;
    let mut rights = AdminRights::default();
    for operation in AdminOperation::ALL {
        let peers_key = format!("{}_peers", operation.name());
        let uids_key = format!("{}_uids", operation.name());
        let path = child("admin", &peers_key);
        let peers = match map.get(peers_key.as_str()) {
            None => Some(None),
            Some(_) if !tls => {
                reader.error(&path, "applies to TLS peers: needs listen.admin_tls");
                None
            }
            Some(value) => reader
                .list(&path, value, |reader, item_path, element| {
                    let text = reader.string(item_path, element)?;
                    CallerPattern::parse(text)
                        .map_err(|error| {
                            reader.error(item_path, format!("SPIFFE ID pattern {error}"))
                        })
                        .ok()
                })
                .map(Some),
        };
        let path = child("admin", &uids_key);
        let uids = match map.get(uids_key.as_str()) {
            None => Some(None),
            Some(_) if !unix => {
                reader.error(
                    &path,
                    "applies to Unix-socket peers: needs listen.admin: unix:/path",
                );
                None
            }
            Some(value) => reader
                .list(&path, value, |reader, item_path, element| {
                    reader
                        .integer(item_path, element, 0, u64::from(u32::MAX))
                        .map(|uid| uid as u32)
                })
                .map(Some),
        };
        match (peers, uids) {
            (Some(peers), Some(uids)) => {
                let grantees = Grantees { peers, uids };
                match operation {
                    AdminOperation::Revoke => rights.revoke = grantees,
                    AdminOperation::Unrevoke => rights.unrevoke = grantees,
                    AdminOperation::List => rights.list = grantees,
                }
            }
            _ => complete = false,
        }
    }
    if let Some(value) = map.get("insecure_unauthenticated_tcp") {
        let path = "admin.insecure_unauthenticated_tcp";
        if !plain_tcp {
            reader.error(
                path,
                "applies only to a plain-TCP listen.admin (without listen.admin_tls)",
            );
            complete = false;
        } else {
            let operations = reader.list(path, value, |reader, item_path, element| {
                let text = reader.string(item_path, element)?;
                let operation = AdminOperation::ALL
                    .into_iter()
                    .find(|operation| operation.name() == text);
                if operation.is_none() {
                    reader.error(item_path, "must be revoke, unrevoke or list");
                }
                operation
            });
            match operations {
                Some(operations) => rights.insecure_unauthenticated_tcp = operations,
                None => complete = false,
            }
        }
    }
    complete.then_some(rights)
}

/// What `check-config` and the start-up log warn about: shapes that are valid but let more
/// processes change revocations than the defaults do.
pub fn admin_warnings(listen: &Listeners, rights: &AdminRights) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(ListenAddress::Tcp(address)), false) = (
        &listen.admin,
        rights.insecure_unauthenticated_tcp.is_empty(),
    ) {
        let operations: Vec<&str> = rights
            .insecure_unauthenticated_tcp
            .iter()
            .map(|operation| operation.name())
            .collect();
        warnings.push(format!(
            "admin.insecure_unauthenticated_tcp: every process that can reach {address} may {} revocations without authenticating{}",
            operations.join(", "),
            if rights.insecure_unauthenticated_tcp.contains(&AdminOperation::Unrevoke) {
                " — including the workload a revocation was meant to stop, which can lift its own"
            } else {
                ""
            }
        ));
    }
    if let Some(ListenAddress::Tcp(address)) = &listen.admin
        && listen.admin_tls.is_none()
        && !address.ip().is_loopback()
    {
        warnings.push(format!(
            "listen.admin: {address} is not loopback: /metrics and /readyz are served to the network without authentication"
        ));
    }
    warnings
}

/// `revocation.nats`: fleet-wide revocation on a NATS JetStream key-value bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats://HOST:PORT` (plaintext: tests, local) or `tls://HOST:PORT`.
    pub servers: Vec<String>,
    pub bucket: String,
    pub tls: Option<NatsTls>,
    /// NATS user (with `password_file`), e.g. the read-only sidecar user.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How long the sidecar may go without confirming it has every revocation; past it,
    /// checks answer UNAVAILABLE and readiness fails.
    pub max_staleness: Duration,
    /// The sidecar's own admin API writes to the bucket (its NATS user needs publish rights);
    /// off by default: revocations are written by operators with `actguard admin --nats`.
    pub write_through: bool,
}

/// TLS to NATS: the CA the servers' certificates chain to, and a client certificate (the
/// SVID) for servers that map certificates to users (`verify_and_map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A KV bucket name: letters, digits, `-` and `_`.
fn valid_bucket(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `nats://HOST:PORT` or `tls://HOST:PORT`; `Some(true)` for TLS.
fn nats_scheme(url: &str) -> Option<bool> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("nats://") {
        (false, rest)
    } else {
        (true, url.strip_prefix("tls://")?)
    };
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty() && !host.contains(['/', '@', '?', '#']) && port.parse::<u16>().is_ok())
        .then_some(tls)
}

pub fn read_nats(reader: &mut Reader, value: &Value, base_dir: &Path) -> Option<NatsSettings> {
    let path = "revocation.nats";
    let keys = [
        "servers",
        "bucket",
        "tls",
        "user",
        "password_file",
        "credentials",
        "max_staleness",
        "write_through",
    ];
    let map = reader.mapping(path, value, &keys)?;
    let mut complete = true;
    if map.contains_key("credentials") {
        reader.error(
            "revocation.nats.credentials",
            "NATS credentials files (user JWT + nkey) are not supported: they would bring a second Ed25519 implementation; authenticate with tls client certificates (verify_and_map) or user and password_file",
        );
        complete = false;
    }
    let servers = reader.required(path, map, "servers").and_then(|value| {
        reader.list(
            "revocation.nats.servers",
            value,
            |reader, item_path, element| {
                let text = reader.string(item_path, element)?;
                match nats_scheme(text) {
                    Some(tls) => Some((text.to_owned(), tls)),
                    None => {
                        reader.error(item_path, "must be nats://HOST:PORT or tls://HOST:PORT");
                        None
                    }
                }
            },
        )
    });
    if servers.as_ref().is_some_and(Vec::is_empty) {
        reader.error("revocation.nats.servers", "must list at least one server");
        complete = false;
    }
    let bucket = match map.get("bucket") {
        None => Some("actguard-revocations".to_owned()),
        Some(value) => match reader.string("revocation.nats.bucket", value) {
            Some(name) if valid_bucket(name) => Some(name.to_owned()),
            Some(_) => {
                reader.error(
                    "revocation.nats.bucket",
                    "must be 1 to 64 letters, digits, - or _",
                );
                None
            }
            None => None,
        },
    };
    let tls = match map.get("tls") {
        None => Some(None),
        Some(value) => {
            let tls_path = "revocation.nats.tls";
            reader
                .mapping(tls_path, value, &["ca", "cert", "key"])
                .and_then(|tls| {
                    let mut file = |key: &str| {
                        tls.get(key).map(|value| {
                            reader
                                .string(&child(tls_path, key), value)
                                .map(|text| base_dir.join(text))
                        })
                    };
                    let (ca, cert, key) = (file("ca"), file("cert"), file("key"));
                    let Some(ca) = ca else {
                        reader.error(
                            tls_path,
                            "needs ca: the CA the NATS servers' certificates chain to (platform roots are never used)",
                        );
                        return None;
                    };
                    if cert.is_some() != key.is_some() {
                        reader.error(tls_path, "cert and key go together");
                        return None;
                    }
                    Some(Some(NatsTls {
                        ca: ca?,
                        cert: cert.flatten(),
                        key: key.flatten(),
                    }))
                })
        }
    };
    if let (Some(servers), Some(tls)) = (&servers, &tls) {
        let any_tls = servers.iter().any(|(_, tls)| *tls);
        let any_plain = servers.iter().any(|(_, tls)| !*tls);
        if any_tls && any_plain {
            reader.error(
                "revocation.nats.servers",
                "mixes nats:// and tls://: one fleet, one transport",
            );
            complete = false;
        } else if any_tls && tls.is_none() {
            reader.error(
                "revocation.nats.tls",
                "tls:// servers need tls.ca (and usually the SVID as cert and key)",
            );
            complete = false;
        } else if any_plain && tls.is_some() {
            reader.error("revocation.nats.tls", "needs tls:// servers");
            complete = false;
        }
    }
    let user = match map.get("user") {
        None => Some(None),
        Some(value) => reader
            .string("revocation.nats.user", value)
            .map(|text| Some(text.to_owned())),
    };
    let password_file = match map.get("password_file") {
        None => Some(None),
        Some(value) => {
            let file = reader
                .string("revocation.nats.password_file", value)
                .map(|text| base_dir.join(text));
            match file {
                Some(file) if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) => {
                    Some(Some(file))
                }
                Some(file) => {
                    reader.error(
                        "revocation.nats.password_file",
                        format!("{} is not a readable file", file.display()),
                    );
                    None
                }
                None => None,
            }
        }
    };
    if let (Some(None), Some(Some(_))) = (&user, &password_file) {
        reader.error(
            "revocation.nats.password_file",
            "needs revocation.nats.user",
        );
        complete = false;
    }
    let max_staleness = match map.get("max_staleness") {
        None => Some(Duration::from_secs(5)),
        Some(value) => reader
            .duration(
                "revocation.nats.max_staleness",
                value,
                Duration::from_secs(300),
            )
            .and_then(|duration| {
                if duration < Duration::from_secs(1) {
                    reader.error("revocation.nats.max_staleness", "must be at least 1s");
                    None
                } else {
                    Some(duration)
                }
            }),
    };
    let write_through = match map.get("write_through") {
        None => Some(false),
        Some(value) => reader.boolean("revocation.nats.write_through", value),
    };
    let settings = NatsSettings {
        servers: servers?.into_iter().map(|(url, _)| url).collect(),
        bucket: bucket?,
        tls: tls?,
        user: user?,
        password_file: password_file?,
        max_staleness: max_staleness?,
        write_through: write_through?,
    };
    complete.then_some(settings)
}
