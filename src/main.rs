//! The `actguard` command: thin glue over the library (see `lib.rs` for the tour).
#![forbid(unsafe_code)]

use actguard::authorizer::Authorizer;
use actguard::config::Config;
use actguard::server::{self, Listener};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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

fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| value.parse::<tracing::Level>().ok())
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

async fn serve(path: PathBuf) -> ExitCode {
    let Some(config) = load(&path) else {
        return ExitCode::FAILURE;
    };
    let listener = match Listener::bind(&config.grpc_listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("listen.grpc: cannot bind {:?}: {error}", config.grpc_listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %listener.describe(), local = %config.local_identity, "ext_authz listening");
    let authorizer = Arc::new(Authorizer::new(config));
    match server::run(listener, authorizer, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => match load(&config) {
            Some(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Serve { config } => runtime().block_on(serve(config)),
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
