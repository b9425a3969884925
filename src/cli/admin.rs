//! `actguard admin …`: a client for the revocation API of a running actguard.

use super::AdminCommand;
use crate::config::NatsSettings;
use crate::config::{Config, ListenAddress, parse_duration};
use crate::decision::revocation::{Revocation, RevocationKind};
use crate::serve::admin_api::pb::{self, revocations_client::RevocationsClient};
use crate::serve::admin_api::to_message;
use crate::serve::audit::rfc3339;
use crate::serve::fleet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    Revoke {
        kind: RevocationKind,
        value: String,
        /// `--for 1h`; `None` = until removed.
        ttl: Option<String>,
    },
    Unrevoke {
        kind: RevocationKind,
        value: String,
    },
    List,
}

/// The admin address from a running server's configuration file.
/// The admin address (`IP:PORT` or `unix:/path`) from a running server's configuration file.
pub fn address_from_config(file: &Path) -> Result<String, String> {
    let config =
        Config::from_file(file).map_err(|errors| format!("{}: {errors}", file.display()))?;
    match config.listen.admin {
        None => Err(format!("{}: listen.admin is off", file.display())),
        Some(ListenAddress::Unix(path)) => Ok(format!("unix:{}", path.display())),
        Some(ListenAddress::Tcp(mut address)) => {
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Ok(address.to_string())
        }
    }
}

/// Client certificate and trust for an admin listener with `listen.admin_tls`.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// The CA that signed the admin listener's certificate.
    pub ca: std::path::PathBuf,
    /// The DNS name the admin listener's certificate carries.
    pub server_name: String,
}

fn tls_connector(tls: &ClientTls) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&read(&tls.ca)?) {
        let certificate = certificate.map_err(|error| format!("{}: {error}", tls.ca.display()))?;
        roots
            .add(certificate)
            .map_err(|error| format!("{}: {error}", tls.ca.display()))?;
    }
    let chain = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|error| format!("{}: {error}", tls.key.display()))?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|error| format!("client certificate: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// A gRPC channel over a Unix domain socket (sending a normal `:authority`, as Envoy does).
pub async fn unix_channel(socket: &str) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// A channel to `IP:PORT` (optionally TLS) or `unix:/path`.
async fn channel(address: &str, tls: Option<&ClientTls>) -> Result<Channel, String> {
    let unreachable = |error: tonic::transport::Error| {
        format!("cannot reach the admin API at {address}: {error}")
    };
    if let Some(tls) = tls {
        let connector = tls_connector(tls)?;
        let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
            .map_err(|error| format!("--tls-server-name: {error}"))?;
        let address = address.to_owned();
        return Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let (connector, name, address) = (connector.clone(), name.clone(), address.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    let stream = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(unreachable);
    }
    match address.strip_prefix("unix:") {
        Some(socket) => unix_channel(socket).await.map_err(unreachable),
        None => Endpoint::from_shared(format!("http://{address}"))
            .map_err(unreachable)?
            .connect()
            .await
            .map_err(unreachable),
    }
}

fn describe(revocation: &pb::Revocation) -> String {
    let kind = pb::RevocationKind::try_from(revocation.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("REVOCATION_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "?".into());
    let until = match revocation.expires_at {
        0 => "until removed".to_owned(),
        at => format!(
            "until {}",
            rfc3339(UNIX_EPOCH + Duration::from_secs(at.max(0) as u64))
        ),
    };
    format!("{kind:<6} {}  ({until})", revocation.value)
}

/// Runs `action` against the admin API at `address`; returns the text to print.
pub async fn run_action(
    address: &str,
    tls: Option<&ClientTls>,
    action: AdminAction,
) -> Result<String, String> {
    let mut client = RevocationsClient::new(channel(address, tls).await?);
    let kind_code = |kind: RevocationKind| pb::RevocationKind::from(kind) as i32;
    let failed = |status: tonic::Status| format!("{}: {}", status.code(), status.message());
    match action {
        AdminAction::Revoke { kind, value, ttl } => {
            let ttl_seconds = match ttl {
                None => 0,
                Some(text) => revocation_seconds(&text)?,
            };
            let response = client
                .revoke(pb::RevokeRequest {
                    kind: kind_code(kind),
                    value,
                    ttl_seconds,
                })
                .await
                .map_err(failed)?
                .into_inner();
            let revocation = response.revocation.unwrap_or_default();
            Ok(format!("revoked {}", describe(&revocation)))
        }
        AdminAction::Unrevoke { kind, value } => {
            let response = client
                .unrevoke(pb::UnrevokeRequest {
                    kind: kind_code(kind),
                    value: value.clone(),
                })
                .await
                .map_err(failed)?
                .into_inner();
            Ok(if response.removed {
                format!("unrevoked {} {value}", kind.name())
            } else {
                format!("no revocation of {} {value} was in force", kind.name())
            })
        }
        AdminAction::List => {
            let response = client
                .list(pb::ListRequest {})
                .await
                .map_err(failed)?
                .into_inner();
            if response.revocations.is_empty() {
                return Ok("no revocations in force".into());
            }
            Ok(response
                .revocations
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

/// `actguard admin …`: the address from `--admin` or the configuration, then the action.
pub fn run(
    address: Option<String>,
    config: Option<PathBuf>,
    tls: Option<ClientTls>,
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
        AdminCommand::Init { .. } => {
            eprintln!("actguard admin init creates the fleet bucket: it needs --nats URL");
            return ExitCode::FAILURE;
        }
        AdminCommand::Budgets { .. } => {
            eprintln!("actguard admin budgets talks to Redis: it needs --redis URL");
            return ExitCode::FAILURE;
        }
    };
    super::report(super::runtime().block_on(run_action(&address, tls.as_ref(), action)))
}

/// `actguard admin --nats URL …`: the change straight to the fleet bucket, acknowledged by
/// the server before this returns; every sidecar following the bucket applies it.
pub fn run_fleet(settings: NatsSettings, command: AdminCommand) -> ExitCode {
    super::report(super::runtime().block_on(fleet_action(settings, command)))
}

async fn fleet_action(settings: NatsSettings, command: AdminCommand) -> Result<String, String> {
    for server in &settings.servers {
        let tls = server.starts_with("tls://");
        if !tls && !server.starts_with("nats://") {
            return Err(format!(
                "--nats {server}: expected nats://HOST:PORT or tls://HOST:PORT"
            ));
        }
        if tls && settings.tls.is_none() {
            return Err(format!("--nats {server}: tls:// needs --nats-tls-ca"));
        }
    }
    let client = fleet::connect(&settings, "actguard-admin").await?;
    let bucket_name = settings.bucket.as_str();
    if let AdminCommand::Init { replicas } = command {
        fleet::Bucket::create(client, bucket_name, replicas).await?;
        return Ok(format!(
            "bucket {bucket_name} ready ({replicas} replica{})",
            if replicas == 1 { "" } else { "s" }
        ));
    }
    let bucket = fleet::Bucket::open(client, bucket_name).await?;
    let by = fleet::writer(settings.user.as_deref(), "actguard admin");
    let checked = |kind: RevocationKind, value: &str, revoking: bool| {
        crate::serve::admin_api::checked_value(kind, value, revoking)
            .map_err(|status| status.message().to_owned())
    };
    match command {
        AdminCommand::Revoke { target, ttl } => {
            let (kind, value) = target.kind_and_value();
            checked(kind, &value, true)?;
            let now = crate::decision::token::unix_now();
            let expires_at =
                match ttl {
                    None => None,
                    Some(text) => Some(now.saturating_add(
                        i64::try_from(revocation_seconds(&text)?).unwrap_or(i64::MAX),
                    )),
                };
            let revocation = Revocation {
                kind,
                value,
                created_at: now,
                expires_at,
            };
            let revision = bucket.revoke(&revocation, &by).await?;
            Ok(format!(
                "revoked {}  (fleet-wide, revision {revision})",
                describe(&to_message(&revocation))
            ))
        }
        AdminCommand::Unrevoke { target } => {
            let (kind, value) = target.kind_and_value();
            checked(kind, &value, false)?;
            Ok(if bucket.unrevoke(kind, &value, &by).await? {
                format!("unrevoked {} {value} (fleet-wide)", kind.name())
            } else {
                format!("no revocation of {} {value} was in the bucket", kind.name())
            })
        }
        AdminCommand::Revocations => {
            let now = crate::decision::token::unix_now();
            let listed: Vec<String> = bucket
                .list()
                .await?
                .iter()
                .filter(|revocation| revocation.expires_at.is_none_or(|at| now < at))
                .map(|revocation| describe(&to_message(revocation)))
                .collect();
            if listed.is_empty() {
                return Ok(format!("no revocations in force in bucket {bucket_name}"));
            }
            Ok(listed.join("\n"))
        }
        AdminCommand::Init { .. } => unreachable!("handled above"),
        AdminCommand::Budgets { .. } => {
            Err("actguard admin budgets talks to Redis (--redis URL), not to NATS".into())
        }
    }
}

/// `--for`: whole seconds, as the admin API takes them (0 there means "until removed").
/// Refused below one second, so no duration can turn into "forever"; otherwise rounded up, so a
/// revocation never ends before it was asked to.
pub fn revocation_seconds(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)
        .ok_or_else(|| format!("--for {text}: expected a duration such as 30m or 1h"))?;
    if duration < std::time::Duration::from_secs(1) {
        return Err(format!(
            "--for {text}: a revocation lasts at least 1s (without --for it lasts until removed)"
        ));
    }
    Ok(duration.as_secs() + u64::from(duration.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_sub_second_revocation_is_refused_never_forever() {
        for short in ["500ms", "999ms", "0s", "0ms"] {
            let refused = revocation_seconds(short).unwrap_err();
            assert!(refused.contains("at least 1s"), "{short}: {refused}");
        }
        assert_eq!(revocation_seconds("1000ms"), Ok(1));
        assert_eq!(
            revocation_seconds("1500ms"),
            Ok(2),
            "rounded up, never shortened"
        );
        assert_eq!(revocation_seconds("30m"), Ok(1800));
        assert!(revocation_seconds("soon").is_err());
    }

    /// The kind and value `actguard admin revoke ARGS` names, or clap's refusal.
    fn target_of(args: &[&str]) -> Result<(RevocationKind, String), String> {
        use clap::Parser as _;
        let mut argv = vec!["actguard", "admin", "--admin", "unix:/s", "revoke"];
        argv.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(argv).map_err(|error| error.to_string())? {
            crate::cli::Cli {
                command:
                    crate::cli::Command::Admin {
                        action: AdminCommand::Revoke { target, .. },
                        ..
                    },
            } => Ok(target.kind_and_value()),
            _ => Err("not a revoke".into()),
        }
    }

    #[test]
    fn revoke_names_one_target_or_one_agent_inside_one_session() {
        let actor = "spiffe://example.org/agent/researcher";
        assert_eq!(
            target_of(&["--sid", "wf 42", "--actor", actor]),
            Ok((RevocationKind::SessionActor, format!("{actor} wf 42")))
        );
        assert_eq!(
            target_of(&["--branch", "b-x"]),
            Ok((RevocationKind::Branch, "b-x".into()))
        );
        assert_eq!(
            target_of(&["--sid", "wf"]),
            Ok((RevocationKind::Sid, "wf".into()))
        );
        assert_eq!(
            target_of(&["--actor", actor]),
            Ok((RevocationKind::Actor, actor.into()))
        );
        // Anything else that names two things is refused, never guessed at.
        for both in [
            &["--jti", "t", "--sid", "s"][..],
            &["--sub", "u", "--actor", actor],
            &["--branch", "b", "--sid", "s"],
            &["--branch", "b", "--actor", actor],
            &["--jti", "t", "--branch", "b"],
        ] {
            assert!(target_of(both).is_err(), "{both:?}");
        }
        assert!(target_of(&[]).is_err(), "nothing named");
    }
}
