//! `actguard admin …`: a client for the revocation API of a running actguard.

use crate::admin_api::pb::{self, revocations_client::RevocationsClient};
use crate::audit::rfc3339;
use crate::config::{Config, parse_duration};
use crate::revocation::RevocationKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

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
pub fn address_from_config(file: &Path) -> Result<SocketAddr, String> {
    let config =
        Config::from_file(file).map_err(|errors| format!("{}: {errors}", file.display()))?;
    let mut address = config
        .listen
        .admin
        .ok_or_else(|| format!("{}: listen.admin is off", file.display()))?;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(address)
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
pub async fn run(address: &str, action: AdminAction) -> Result<String, String> {
    let mut client = RevocationsClient::connect(format!("http://{address}"))
        .await
        .map_err(|error| format!("cannot reach the admin API at {address}: {error}"))?;
    let kind_code = |kind: RevocationKind| pb::RevocationKind::from(kind) as i32;
    let failed = |status: tonic::Status| format!("{}: {}", status.code(), status.message());
    match action {
        AdminAction::Revoke { kind, value, ttl } => {
            let ttl_seconds = match ttl {
                None => 0,
                Some(text) => parse_duration(&text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("--for {text}: expected a duration such as 30m or 1h"))?
                    .as_secs(),
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
