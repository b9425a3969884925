//! The `actguard` command: thin glue over the library (see `lib.rs` for the tour).
#![forbid(unsafe_code)]

use actguard::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Authorizes agent-to-agent calls for Envoy: binds a token's RFC 8693 delegation chain to
/// the caller's SPIFFE ID.
#[derive(Parser)]
#[command(name = "actguard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("shutting down: draining in-flight checks");
}

async fn serve(config: Config) -> ExitCode {
    let sidecar = match actguard::runtime::start(config).await {
        Ok(sidecar) => sidecar,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    shutdown_signal().await;
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
        Command::Serve { config } => {
            let Some(config) = load(&config) else {
                return ExitCode::FAILURE;
            };
            init_logging(config.log_level);
            runtime().block_on(serve(config))
        }
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
