//! `actguard inject`: the Kubernetes sidecar-injection webhook until SIGTERM.

use super::{init_logging, runtime};
use std::path::PathBuf;
use std::process::ExitCode;

/// Serves `POST /mutate` over HTTPS on `listen` with the serving pair `cert`/`key`.
pub fn run(
    listen: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    config: Option<&std::path::Path>,
) -> ExitCode {
    use crate::inject::config::InjectorConfig;
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
    let gate = match crate::serve::tls::TlsGate::server_only(
        cert,
        key,
        std::time::Duration::from_secs(10),
    ) {
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
        match crate::inject::server::serve(listener, gate, settings, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "webhook failed");
                ExitCode::FAILURE
            }
        }
    })
}
