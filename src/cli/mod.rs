//! The command line: one module per subcommand behind `main.rs`, which only parses and
//! dispatches. Each `run` prints its result or its errors and returns the process exit code.
//!
//! - [`serve`]: `serve` (the sidecar until SIGTERM, reloading on SIGHUP and file changes) and
//!   `check-config`.
//! - [`demo`]: the embedded scenario behind `actguard demo`.
//! - [`explain`]: how a configuration decides one request, step by step.
//! - [`dev`]: development credentials (CA, SVIDs, issuer, tokens).
//! - [`admin`]: the revocation client of a running sidecar's admin API.
//! - [`inject`]: the Kubernetes sidecar-injection webhook.

pub mod admin;
pub mod budgets;
pub mod demo;
pub mod dev;
pub mod explain;
pub mod graph;
pub mod inject;
pub mod policy;
pub mod records;
pub mod report;
pub mod serve;

use crate::config::Config;
use crate::decision::revocation::RevocationKind;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Authorizes agent-to-agent calls for Envoy: binds a token's RFC 8693 delegation chain to
/// the caller's SPIFFE ID.
#[derive(Parser)]
#[command(name = "actguard", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the ext_authz sidecar.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file, print every problem, exit 0 (valid) or 1.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the embedded demo: throwaway PKI and issuer, the real server on loopback, and an
    /// agent scenario with the attacks actguard stops.
    Demo {
        /// Also write every decision to this audit log (JSON lines, appended), e.g. for
        /// `actguard graph`.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
    },
    /// The observed delegation graph from audit logs: principals, agents and tools as nodes,
    /// each delegation hop and call as an edge with counts, denied edges marked with their
    /// top reasons.
    Graph {
        /// Audit log files (JSON lines as actguard writes them), read as streams.
        #[arg(long = "audit", value_name = "FILE", required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// Only decisions at most this old (e.g. 24h), by their `time`.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "svg")]
        format: crate::cli::graph::Format,
        /// Where to write it (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// One self-contained HTML page from audit logs (no external assets, no network): the
    /// delegation graph, deny reasons over time, per-agent and per-route tables, and the
    /// policy `policy suggest` derives.
    Report {
        /// Audit log files (JSON lines as actguard writes them), read as streams.
        #[arg(long = "audit", value_name = "FILE", required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// Only decisions at most this old (e.g. 24h), by their `time`.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Where to write the page (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Policy derived from observed traffic.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Show how a configuration decides one request, step by step.
    Explain {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request as JSON (see `actguard explain --help`); `-` or absent reads stdin.
        /// Fields: caller | certificate | principal | xfcc, method, host, path, headers.
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
    },
    /// Run the Kubernetes sidecar-injection webhook (mutating admission, HTTPS, `POST /mutate`).
    Inject {
        /// Where to listen, IP:PORT.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
        listen: std::net::SocketAddr,
        /// Serving certificate chain (PEM); re-read when it changes.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// What to inject (images, resources, default ConfigMaps, SVID source); defaults
        /// without it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Development credentials (CA, SVIDs, issuer, tokens) — never for production keys.
    Dev {
        #[command(subcommand)]
        action: DevCommand,
    },
    /// Manage revocations on a running actguard (its admin API).
    Admin {
        /// The admin listener, IP:PORT or unix:/path.sock.
        #[arg(long, value_name = "ADDR", conflicts_with_all = ["config", "nats"])]
        admin: Option<String>,
        /// The running server's configuration file (its listen.admin is used).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Client certificate (PEM) for an admin listener with listen.admin_tls.
        #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        /// Client private key (PEM).
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// CA bundle that signed the admin listener's certificate.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// DNS name on the admin listener's certificate.
        #[arg(long, value_name = "NAME", default_value = "localhost")]
        tls_server_name: String,
        /// Fleet revocation: a NATS server (nats://HOST:PORT or tls://HOST:PORT), repeatable;
        /// the change goes to the shared bucket every sidecar follows.
        #[arg(long, value_name = "URL", conflicts_with = "config")]
        nats: Vec<String>,
        /// The fleet revocation bucket.
        #[arg(long, value_name = "NAME", default_value = "actguard-revocations")]
        nats_bucket: String,
        /// CA bundle the NATS servers' certificates chain to (tls:// servers).
        #[arg(long, value_name = "FILE")]
        nats_tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for NATS mTLS.
        #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
        nats_tls_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
        nats_tls_key: Option<PathBuf>,
        /// NATS user (the operator user, which may publish to the bucket).
        #[arg(long, value_name = "USER")]
        nats_user: Option<String>,
        /// File holding the NATS user's password.
        #[arg(long, value_name = "FILE", requires = "nats_user")]
        nats_password_file: Option<PathBuf>,
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The tightest delegation edges, ceilings, depths and per-route allow_callers that would
    /// have allowed every allowed decision of the audit logs (YAML on stdout).
    Suggest {
        /// Audit log files (JSON lines as actguard writes them), read as streams.
        #[arg(long = "audit", value_name = "FILE", required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// The configuration in force: the output is it with the suggestion applied (which
        /// check-config accepts), with the changes, a diff and the decisions the suggestion
        /// would have changed as comments.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DevCommand {
    /// A development CA: OUT/ca.pem (trust bundle) and OUT/ca-key.pem.
    Ca {
        #[arg(long)]
        trust_domain: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// An X509-SVID from that CA: OUT/svid.pem, OUT/svid-key.pem, OUT/bundle.pem.
    Svid {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, value_name = "SPIFFE_ID")]
        id: String,
        /// DNS names to add (for a server reached by name), repeatable.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A token issuer: OUT/issuer-key.pem, OUT/jwks.json, OUT/issuer.json.
    Issuer {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_name = "URL", default_value = "https://sts.example.org")]
        issuer: String,
        #[arg(long, default_value = "dev-1")]
        kid: String,
    },
    /// A signed access token (stdout), `act` nested from --act in delegation order.
    Token {
        /// The issuer directory written by `dev issuer`.
        #[arg(long, value_name = "DIR")]
        issuer: PathBuf,
        #[arg(long)]
        sub: String,
        /// Actors in delegation order, comma-separated: first delegate, …, current actor.
        #[arg(long, value_delimiter = ',')]
        act: Vec<String>,
        #[arg(long)]
        aud: String,
        #[arg(long, default_value = "")]
        scope: String,
        #[arg(long, default_value = "5m")]
        ttl: String,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        jti: Option<String>,
        #[arg(long)]
        sid: Option<String>,
        /// RFC 9396 `authorization_details` as JSON, e.g.
        /// '[{"type":"https://example.org/rar/mcp-tool","actions":["email.send"]}]'.
        #[arg(long, value_name = "JSON")]
        authorization_details: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Revoke a token (--jti), a session (--sid), a principal (--sub), an agent (--actor: every
    /// chain through it), an execution branch (--branch), or an agent inside one session
    /// (--sid S --actor A).
    Revoke {
        #[command(flatten)]
        target: Target,
        /// How long the revocation lasts (e.g. 1h); default: until removed.
        #[arg(long = "for", value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Remove a revocation.
    Unrevoke {
        #[command(flatten)]
        target: Target,
    },
    /// List the revocations in force.
    Revocations,
    /// Create the fleet revocation bucket (with --nats): history 1, per-key TTL, replicas.
    Init {
        /// Copies of the bucket in the NATS cluster (1 for a single server).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
    /// What a session's branches (--sid) or one branch (--branch) spent of their budgets, on
    /// the fleet's Redis; with --reset, clear them.
    Budgets {
        /// The Redis the sidecars charge (budgets.redis.url): redis://HOST:PORT or rediss://.
        #[arg(long, value_name = "URL")]
        redis: String,
        /// budgets.redis.key_prefix.
        #[arg(long, value_name = "PREFIX", default_value = crate::config::DEFAULT_KEY_PREFIX)]
        key_prefix: String,
        /// A session, by its `sid` (or `jti` for tokens without one).
        #[arg(long, conflicts_with = "branch", required_unless_present = "branch")]
        sid: Option<String>,
        /// An execution branch (the branch claim's value, or a derived `b-…` from the audit log).
        #[arg(long)]
        branch: Option<String>,
        /// Clear what is selected: a session's counters, or one branch's (given back to its
        /// session).
        #[arg(long)]
        reset: bool,
        /// CA bundle Redis's certificate chains to (rediss://).
        #[arg(long, value_name = "FILE")]
        redis_tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for Redis with tls-auth-clients.
        #[arg(long, value_name = "FILE", requires = "redis_tls_key")]
        redis_tls_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE", requires = "redis_tls_cert")]
        redis_tls_key: Option<PathBuf>,
    },
}

/// What a revocation names: one of `--jti`, `--sid`, `--sub`, `--actor`, `--branch`, or
/// `--sid` with `--actor` (that agent inside that session).
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
pub struct Target {
    #[arg(long, conflicts_with_all = ["sid", "sub", "actor", "branch"])]
    pub jti: Option<String>,
    /// A session; with --actor, only that agent inside it.
    #[arg(long, conflicts_with_all = ["sub", "branch"])]
    pub sid: Option<String>,
    #[arg(long, conflicts_with_all = ["actor", "branch"])]
    pub sub: Option<String>,
    /// An agent; with --sid, only inside that session.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "branch")]
    pub actor: Option<String>,
    /// An execution branch (the branch claim's value, or a derived `b-…` from the audit log)
    /// and every delegation made in it.
    #[arg(long)]
    pub branch: Option<String>,
}

impl Target {
    pub fn kind_and_value(self) -> (RevocationKind, String) {
        match (self.jti, self.sid, self.sub, self.actor, self.branch) {
            (Some(jti), ..) => (RevocationKind::Jti, jti),
            (_, Some(sid), _, Some(actor), _) => (
                RevocationKind::SessionActor,
                crate::decision::revocation::session_actor_value(&actor, &sid),
            ),
            (_, Some(sid), ..) => (RevocationKind::Sid, sid),
            (_, _, Some(sub), ..) => (RevocationKind::Sub, sub),
            (_, _, _, Some(actor), _) => (RevocationKind::Actor, actor),
            (.., branch) => (RevocationKind::Branch, branch.unwrap_or_default()),
        }
    }
}

/// Diagnostic logs to stderr: the level from `RUST_LOG` when set, else `configured`, else info.
pub(crate) fn init_logging(configured: Option<tracing::Level>) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| value.parse::<tracing::Level>().ok())
        .or(configured)
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

/// A subcommand's outcome on the terminal: the text on stdout and exit 0, or the error on
/// stderr and exit 1.
pub(crate) fn report(outcome: Result<String, String>) -> std::process::ExitCode {
    match outcome {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Loads a configuration, or prints every error in it (and returns `None`).
pub(crate) fn load(path: &std::path::Path) -> Option<Config> {
    match Config::from_file(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprintln!("{}: invalid configuration:", path.display());
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            None
        }
    }
}

/// The multi-threaded runtime of the async subcommands.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    }
}
