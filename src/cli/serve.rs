//! `actguard serve` and `actguard check-config`.

use super::{init_logging, load, runtime};
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `check-config`: every problem printed, exit 0 (valid) or 1.
pub fn check_config(file: &Path) -> ExitCode {
    match load(file) {
        Some(config) => {
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!("{}: configuration is valid", file.display());
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// `serve`: the sidecar until SIGTERM or SIGINT.
pub fn run(file: PathBuf) -> ExitCode {
    // Before the configuration is read: a change made while the sidecar starts is reloaded.
    let baseline = crate::serve::reload::Baseline::of(&file);
    let Some(config) = load(&file) else {
        return ExitCode::FAILURE;
    };
    init_logging(config.log_level);
    runtime().block_on(serve(config, file, baseline))
}

/// Waits for SIGTERM or SIGINT; reloads the configuration on each SIGHUP meanwhile.
async fn until_terminated(sidecar: &crate::serve::runtime::Sidecar, file: &Path) {
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

async fn serve(
    config: Config,
    file: PathBuf,
    baseline: crate::serve::reload::Baseline,
) -> ExitCode {
    let mut sidecar = match crate::serve::runtime::start(config).await {
        Ok(sidecar) => sidecar,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    sidecar.watch_config_since(baseline, file.clone(), CONFIG_POLL);
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
