//! The `actguard` command: parses the command line and hands each subcommand to its module in
//! `cli` (see `lib.rs` for the tour).
#![forbid(unsafe_code)]

use actguard::cli::{self, Cli, Command};
use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: allocations freed on another thread than they were made
/// on (the normal case under tokio) contend on glibc's arena locks; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => cli::serve::run(config),
        Command::CheckConfig { config } => cli::serve::check_config(&config),
        Command::Demo { audit } => cli::demo::main(audit),
        Command::Graph {
            audit,
            since,
            format,
            out,
        } => cli::graph::run(&audit, since.as_deref(), format, out.as_deref()),
        Command::Report { audit, since, out } => {
            cli::report::run(&audit, since.as_deref(), out.as_deref())
        }
        Command::Policy {
            action: cli::PolicyCommand::Suggest { audit, config },
        } => cli::policy::run(&audit, config.as_deref()),
        Command::Explain { config, request } => cli::explain::run(&config, request.as_deref()),
        Command::Inject {
            listen,
            cert,
            key,
            config,
        } => cli::inject::run(listen, cert, key, config.as_deref()),
        Command::Dev { action } => cli::dev::run(action),
        Command::Admin {
            admin,
            config,
            tls_cert,
            tls_key,
            tls_ca,
            tls_server_name,
            nats,
            nats_bucket,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            nats_user,
            nats_password_file,
            action,
        } => {
            if let cli::AdminCommand::Budgets {
                redis,
                key_prefix,
                sid,
                branch,
                reset,
                redis_tls_ca,
                redis_tls_cert,
                redis_tls_key,
            } = action
            {
                let selection = match (sid, branch) {
                    (Some(sid), _) => cli::budgets::Selection::Session(sid),
                    (None, branch) => cli::budgets::Selection::Branch(branch.unwrap_or_default()),
                };
                let target = cli::budgets::Target {
                    url: redis,
                    key_prefix,
                    tls_ca: redis_tls_ca,
                    tls_cert: redis_tls_cert,
                    tls_key: redis_tls_key,
                };
                return cli::budgets::run(target, selection, reset);
            }
            if !nats.is_empty() {
                let tls = nats_tls_ca.map(|ca| actguard::config::NatsTls {
                    ca,
                    cert: nats_tls_cert,
                    key: nats_tls_key,
                });
                let settings = actguard::config::NatsSettings {
                    servers: nats,
                    bucket: nats_bucket,
                    tls,
                    user: nats_user,
                    password_file: nats_password_file,
                    max_staleness: std::time::Duration::from_secs(5),
                    write_through: true,
                };
                return cli::admin::run_fleet(settings, action);
            }
            let tls = match (tls_cert, tls_key, tls_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(cli::admin::ClientTls {
                    cert,
                    key,
                    ca,
                    server_name: tls_server_name,
                }),
                _ => None,
            };
            cli::admin::run(admin, config, tls, action)
        }
    }
}
