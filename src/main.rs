//! The `actguard` command: thin glue over the library (see `lib.rs` for the tour).
#![forbid(unsafe_code)]

use actguard::admin_client::{AdminAction, address_from_config};
use actguard::config::Config;
use actguard::revocation::RevocationKind;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: allocations freed on another thread than they were made
/// on (the normal case under tokio) contend on glibc's arena locks; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Authorizes agent-to-agent calls for Envoy: binds a token's RFC 8693 delegation chain to
/// the caller's SPIFFE ID.
#[derive(Parser)]
#[command(name = "actguard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
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
    Demo,
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
        #[arg(
            long,
            value_name = "ADDR",
            conflicts_with = "config",
            required_unless_present = "config"
        )]
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
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
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
    },
}

fn dev(command: DevCommand) -> ExitCode {
    use actguard::dev_cli;
    let outcome = match command {
        DevCommand::Ca { trust_domain, out } => dev_cli::ca(&trust_domain, &out),
        DevCommand::Svid { ca, id, dns, out } => dev_cli::svid(&ca, &id, &dns, &out),
        DevCommand::Issuer { out, issuer, kid } => dev_cli::issuer(&issuer, &kid, &out),
        DevCommand::Token {
            issuer,
            sub,
            act,
            aud,
            scope,
            ttl,
            client_id,
            jti,
            sid,
        } => match actguard::config::parse_duration(&ttl).filter(|ttl| !ttl.is_zero()) {
            None => Err(format!("--ttl {ttl}: expected a duration such as 5m")),
            Some(ttl) => dev_cli::token(&dev_cli::TokenRequest {
                issuer_dir: &issuer,
                subject: &sub,
                actors: act
                    .iter()
                    .map(String::as_str)
                    .filter(|a| !a.is_empty())
                    .collect(),
                audience: &aud,
                scope: &scope,
                ttl,
                client_id: client_id.as_deref(),
                jti: jti.as_deref(),
                sid: sid.as_deref(),
            }),
        },
    };
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Revoke a token (--jti), a session (--sid), a principal (--sub) or an agent (--actor:
    /// every chain through it).
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
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    #[arg(long)]
    jti: Option<String>,
    #[arg(long)]
    sid: Option<String>,
    #[arg(long)]
    sub: Option<String>,
    #[arg(long, value_name = "SPIFFE_ID")]
    actor: Option<String>,
}

impl Target {
    fn kind_and_value(self) -> (RevocationKind, String) {
        match (self.jti, self.sid, self.sub, self.actor) {
            (Some(jti), ..) => (RevocationKind::Jti, jti),
            (_, Some(sid), ..) => (RevocationKind::Sid, sid),
            (_, _, Some(sub), _) => (RevocationKind::Sub, sub),
            (_, _, _, actor) => (RevocationKind::Actor, actor.unwrap_or_default()),
        }
    }
}

fn explain(config: &std::path::Path, request: Option<&std::path::Path>) -> ExitCode {
    let Some(config) = load(config) else {
        return ExitCode::FAILURE;
    };
    let text = match request {
        Some(file) if file != std::path::Path::new("-") => std::fs::read_to_string(file),
        _ => std::io::read_to_string(std::io::stdin()),
    };
    let parsed = text
        .map_err(|error| format!("cannot read the request: {error}"))
        .and_then(|text| {
            serde_json::from_str::<actguard::explain::ExplainRequest>(&text)
                .map_err(|error| format!("the request is not valid: {error}"))
        });
    let authorizer = actguard::authorizer::Authorizer::new(config);
    let explained = parsed.and_then(|request| {
        actguard::explain::explain(&authorizer, &request, actguard::token::unix_now())
    });
    match explained {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn admin(
    address: Option<String>,
    config: Option<PathBuf>,
    tls: Option<actguard::admin_client::ClientTls>,
    command: AdminCommand,
) -> ExitCode {
    let address = match (address, config) {
        (Some(address), _) => address,
        (None, Some(file)) => match address_from_config(&file) {
            Ok(address) => address,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("actguard admin needs --admin ADDR or --config FILE");
            return ExitCode::FAILURE;
        }
    };
    let action = match command {
        AdminCommand::Revoke { target, ttl } => {
            let (kind, value) = target.kind_and_value();
            AdminAction::Revoke { kind, value, ttl }
        }
        AdminCommand::Unrevoke { target } => {
            let (kind, value) = target.kind_and_value();
            AdminAction::Unrevoke { kind, value }
        }
        AdminCommand::Revocations => AdminAction::List,
    };
    match runtime().block_on(actguard::admin_client::run(&address, tls.as_ref(), action)) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostic logs to stderr: the level from `RUST_LOG` when set, else `configured`, else info.
fn init_logging(configured: Option<tracing::Level>) {
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

fn load(path: &std::path::Path) -> Option<Config> {
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

/// Waits for SIGTERM or SIGINT; reloads the configuration on each SIGHUP meanwhile.
async fn until_terminated(sidecar: &actguard::runtime::Sidecar, file: &std::path::Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; running until killed");
        return std::future::pending::<()>().await;
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = sidecar.reload(file).await;
            }
        }
    }
    tracing::info!("shutting down: draining in-flight checks");
}

/// How often the configuration and JWKS files are checked for changes.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(config: Config, file: PathBuf) -> ExitCode {
    let mut sidecar = match actguard::runtime::start(config).await {
        Ok(sidecar) => sidecar,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    sidecar.watch_config(file.clone(), CONFIG_POLL);
    until_terminated(&sidecar, &file).await;
    match sidecar.shutdown().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "stopped before every check finished");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(&config) {
            Some(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Serve { config: file } => {
            let Some(config) = load(&file) else {
                return ExitCode::FAILURE;
            };
            init_logging(config.log_level);
            runtime().block_on(serve(config, file))
        }
        Command::Admin {
            admin: address,
            config,
            tls_cert,
            tls_key,
            tls_ca,
            tls_server_name,
            action,
        } => {
            let tls = match (tls_cert, tls_key, tls_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(actguard::admin_client::ClientTls {
                    cert,
                    key,
                    ca,
                    server_name: tls_server_name,
                }),
                _ => None,
            };
            admin(address, config, tls, action)
        }
        Command::Inject {
            listen,
            cert,
            key,
            config,
        } => inject(listen, cert, key, config.as_deref()),
        Command::Explain { config, request } => explain(&config, request.as_deref()),
        Command::Dev { action } => dev(action),
        Command::Demo => match runtime().block_on(actguard::demo::run()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("demo failed: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn inject(
    listen: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    config: Option<&std::path::Path>,
) -> ExitCode {
    use actguard::inject::config::InjectorConfig;
    let settings = match config {
        None => InjectorConfig::default(),
        Some(file) => match InjectorConfig::from_file(file) {
            Ok(settings) => settings,
            Err(errors) => {
                eprintln!(
                    "{}: invalid injector configuration:\n{errors}",
                    file.display()
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let gate =
        match actguard::tls::TlsGate::server_only(cert, key, std::time::Duration::from_secs(10)) {
            Ok(gate) => gate,
            Err(error) => {
                eprintln!("--cert/--key: {error}");
                return ExitCode::FAILURE;
            }
        };
    init_logging(None);
    runtime().block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("--listen: cannot bind {listen}: {error}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(address = %listen, "actguard injection webhook ready");
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
            tracing::info!("shutting down: finishing in-flight reviews");
        };
        match actguard::inject::server::serve(listener, gate, settings, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "webhook failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
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
