//! The revocation admin API (`proto/actguard/admin/v1/revocation.proto`), served over gRPC on
//! the admin listener, and gRPC reflection for it and for Envoy's ext_authz service.
//!
//! Every call is authorized by who is asking (see [`crate::serve::admin_auth`]) and audited.
//! Refuses what would silently revoke nothing: an unspecified kind, an empty value, an
//! `ACTOR` that is not a canonical SPIFFE ID.

use crate::config::AdminOperation;
use crate::decision::revocation::{
    Revocation, RevocationKind, RevocationList, split_session_actor,
};
use crate::decision::spiffe::SpiffeId;
use crate::decision::telemetry;
use crate::decision::token::unix_now;
use crate::serve::admin_auth::{AdminPeer, AdminPolicy};
use crate::serve::audit::{AdminRecord, AuditLog};
use crate::serve::fleet::FleetWrites;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// Code generated from `proto/` by `build.rs`.
pub mod pb {
    tonic::include_proto!("actguard.admin.v1");

    /// Descriptors of the admin API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

/// Descriptors of Envoy's ext_authz service (empty when the build could not find them).
pub const ENVOY_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

impl From<RevocationKind> for pb::RevocationKind {
    fn from(kind: RevocationKind) -> Self {
        match kind {
            RevocationKind::Jti => Self::Jti,
            RevocationKind::Sid => Self::Sid,
            RevocationKind::Sub => Self::Sub,
            RevocationKind::Actor => Self::Actor,
            RevocationKind::Branch => Self::Branch,
            RevocationKind::SessionActor => Self::SessionActor,
        }
    }
}

fn kind_of(raw: i32) -> Result<RevocationKind, Status> {
    match pb::RevocationKind::try_from(raw) {
        Ok(pb::RevocationKind::Jti) => Ok(RevocationKind::Jti),
        Ok(pb::RevocationKind::Sid) => Ok(RevocationKind::Sid),
        Ok(pb::RevocationKind::Sub) => Ok(RevocationKind::Sub),
        Ok(pb::RevocationKind::Actor) => Ok(RevocationKind::Actor),
        Ok(pb::RevocationKind::Branch) => Ok(RevocationKind::Branch),
        Ok(pb::RevocationKind::SessionActor) => Ok(RevocationKind::SessionActor),
        _ => Err(Status::invalid_argument(
            "kind must be JTI, SID, SUB, ACTOR, BRANCH or SESSION_ACTOR",
        )),
    }
}

/// Refuses a value that would silently revoke nothing, or is too long. Control characters
/// are refused only when `revoking`: an entry an earlier version stored with one can still be
/// removed.
pub fn checked_value(kind: RevocationKind, value: &str, revoking: bool) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("value must not be empty"));
    }
    // An agent within a session names two values of up to the limit each.
    let limit = match kind {
        RevocationKind::SessionActor => 2 * MAX_VALUE_BYTES + 1,
        _ => MAX_VALUE_BYTES,
    };
    if value.len() > limit {
        return Err(Status::invalid_argument(format!(
            "value must be at most {limit} bytes"
        )));
    }
    if kind == RevocationKind::Actor && SpiffeId::parse(value).is_err() {
        return Err(Status::invalid_argument(
            "an ACTOR revocation needs a canonical SPIFFE ID (anything else would match nothing)",
        ));
    }
    if kind == RevocationKind::SessionActor {
        let canonical =
            split_session_actor(value).is_some_and(|(actor, _)| SpiffeId::parse(actor).is_ok());
        if !canonical {
            return Err(Status::invalid_argument(
                "a SESSION_ACTOR revocation is `<actor SPIFFE ID> <session>`: a canonical SPIFFE ID, one space, a non-empty session (anything else would match nothing)",
            ));
        }
    }
    if revoking && value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "value must not contain control characters (no token claim that could match does)",
        ));
    }
    Ok(())
}

/// A revocation as the API sends it.
pub fn to_message(revocation: &Revocation) -> pb::Revocation {
    pb::Revocation {
        kind: pb::RevocationKind::from(revocation.kind) as i32,
        value: revocation.value.clone(),
        created_at: revocation.created_at,
        expires_at: revocation.expires_at.unwrap_or(0),
    }
}

/// The `Revocations` gRPC service over the process-wide list: every call authorized by its
/// peer and operation ([`AdminPolicy`]), and every call — accepted, refused, invalid or
/// failed — written to the audit log and counted in `actguard_admin_operations_total`.
pub struct RevocationService {
    list: Arc<RevocationList>,
    policy: Arc<AdminPolicy>,
    audit: AuditLog,
    /// With `revocation.nats`: changes go to the fleet bucket (or are refused, read-only).
    fleet: Option<Arc<FleetWrites>>,
}

/// What one call asked for, as its audit record names it.
#[derive(Default)]
struct Asked<'a> {
    kind: Option<&'a str>,
    value: Option<&'a str>,
    ttl_seconds: Option<u64>,
}

/// Longest revocation value accepted (a SPIFFE ID is at most 2048 bytes; a jti, sid or sub
/// longer than this would not be in a token this sidecar accepts).
pub const MAX_VALUE_BYTES: usize = 2048;
/// Largest encoded request the revocation API decodes (a value at its limit fits with room).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How much of a value a log line shows (the audit record carries up to 1 KiB).
const LOGGED_VALUE_BYTES: usize = 256;

/// `value` cut for a log line, at a character boundary.
fn logged(value: Option<&str>) -> Option<&str> {
    value.map(|value| crate::serve::audit::cut_at(value, LOGGED_VALUE_BYTES))
}

impl RevocationService {
    pub fn new(list: Arc<RevocationList>, policy: Arc<AdminPolicy>, audit: AuditLog) -> Self {
        Self {
            list,
            policy,
            audit,
            fleet: None,
        }
    }

    /// Changes go through the fleet bucket first (acknowledged), then to the local list.
    pub fn with_fleet(mut self, fleet: Option<Arc<FleetWrites>>) -> Self {
        self.fleet = fleet;
        self
    }

    /// With fleet revocation, the change written to the bucket (acknowledged) before the
    /// local list; a sidecar that may not write refuses with FAILED_PRECONDITION.
    async fn write_fleet<F, T>(
        &self,
        operation: AdminOperation,
        by: &str,
        asked: &Asked<'_>,
        write: impl FnOnce(Arc<FleetWrites>) -> F,
    ) -> Result<Option<T>, Status>
    where
        F: std::future::Future<Output = Result<T, String>>,
    {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        if let Err(why) = fleet.writable() {
            self.record(operation, by, asked, "refused", Some(&why));
            return Err(Status::failed_precondition(why));
        }
        match write(Arc::clone(fleet)).await {
            Ok(written) => Ok(Some(written)),
            Err(error) => {
                self.record(operation, by, asked, "failed", Some(&error));
                Err(Status::unavailable(error))
            }
        }
    }

    /// Records the outcome of one call: an audit record, the metric, and a log line.
    fn record(
        &self,
        operation: AdminOperation,
        peer: &str,
        asked: &Asked<'_>,
        outcome: &'static str,
        detail: Option<&str>,
    ) {
        metrics::counter!(
            telemetry::ADMIN_OPERATIONS,
            "op" => operation.name(),
            "outcome" => outcome
        )
        .increment(1);
        self.audit.write_admin(&AdminRecord {
            event: "admin",
            op: operation.name(),
            outcome,
            by: peer,
            kind: asked.kind,
            value: asked.value,
            ttl_seconds: asked.ttl_seconds,
            detail,
        });
        let (op, kind, value) = (operation.name(), asked.kind, logged(asked.value));
        match outcome {
            "accepted" if operation == AdminOperation::List => {
                tracing::info!(op, by = peer, "admin: revocations listed");
            }
            "accepted" => {
                tracing::warn!(
                    op,
                    by = peer,
                    kind,
                    value,
                    ttl_seconds = asked.ttl_seconds,
                    detail,
                    "admin: {op}"
                );
            }
            _ => tracing::warn!(
                op,
                by = peer,
                kind,
                value,
                outcome,
                detail,
                "admin: {op} not done"
            ),
        }
    }

    /// The caller's description, once it may perform `operation`; otherwise the refusal is
    /// recorded and returned.
    fn authorize<T>(
        &self,
        operation: AdminOperation,
        request: &Request<T>,
        asked: &Asked<'_>,
    ) -> Result<String, Status> {
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<AdminPeer>>()
            .map(|info| &info.0);
        let by = peer.map_or_else(|| "unknown".to_owned(), AdminPeer::describe);
        match self.policy.permits(operation, peer) {
            Ok(()) => Ok(by),
            Err(why) => {
                self.record(operation, &by, asked, "refused", Some(&why));
                Err(Status::permission_denied(why))
            }
        }
    }

    /// Kind and value checked; an invalid call is recorded.
    fn checked(
        &self,
        operation: AdminOperation,
        by: &str,
        asked: &Asked<'_>,
        raw_kind: i32,
        value: &str,
    ) -> Result<RevocationKind, Status> {
        let revoking = operation == AdminOperation::Revoke;
        let checked =
            kind_of(raw_kind).and_then(|kind| checked_value(kind, value, revoking).map(|()| kind));
        checked.inspect_err(|status| {
            self.record(operation, by, asked, "invalid", Some(status.message()));
        })
    }
}

fn kind_name(raw: i32) -> Option<&'static str> {
    kind_of(raw).ok().map(RevocationKind::name)
}

#[tonic::async_trait]
impl pb::revocations_server::Revocations for RevocationService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let operation = AdminOperation::Revoke;
        let message = request.get_ref();
        let asked = Asked {
            kind: kind_name(message.kind),
            value: Some(&message.value),
            ttl_seconds: (message.ttl_seconds > 0).then_some(message.ttl_seconds),
        };
        let by = self.authorize(operation, &request, &asked)?;
        let kind = self.checked(operation, &by, &asked, message.kind, &message.value)?;
        let now = unix_now();
        let expires_at = match message.ttl_seconds {
            0 => None,
            ttl => Some(now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
        };
        let revocation = Revocation {
            kind,
            value: message.value.clone(),
            created_at: now,
            expires_at,
        };
        self.write_fleet(operation, &by, &asked, |fleet| {
            let revocation = revocation.clone();
            let peer = by.clone();
            async move { fleet.revoke(&revocation, &peer).await }
        })
        .await?;
        let revoked = self.list.revoke(revocation);
        match revoked {
            Ok(revocation) => {
                self.record(operation, &by, &asked, "accepted", None);
                Ok(Response::new(pb::RevokeResponse {
                    revocation: Some(to_message(&revocation)),
                }))
            }
            Err(error) => {
                self.record(operation, &by, &asked, "failed", Some(&error));
                Err(Status::unavailable(error))
            }
        }
    }

    async fn unrevoke(
        &self,
        request: Request<pb::UnrevokeRequest>,
    ) -> Result<Response<pb::UnrevokeResponse>, Status> {
        let operation = AdminOperation::Unrevoke;
        let message = request.get_ref();
        let asked = Asked {
            kind: kind_name(message.kind),
            value: Some(&message.value),
            ttl_seconds: None,
        };
        let by = self.authorize(operation, &request, &asked)?;
        let kind = self.checked(operation, &by, &asked, message.kind, &message.value)?;
        let in_bucket = self
            .write_fleet(operation, &by, &asked, |fleet| {
                let (value, peer) = (message.value.clone(), by.clone());
                async move { fleet.unrevoke(kind, &value, &peer).await }
            })
            .await?;
        match self.list.unrevoke(kind, &message.value) {
            Ok(removed) => {
                let removed = removed || in_bucket == Some(true);
                let detail = if removed {
                    "removed"
                } else {
                    "no such revocation was in force"
                };
                self.record(operation, &by, &asked, "accepted", Some(detail));
                Ok(Response::new(pb::UnrevokeResponse { removed }))
            }
            Err(error) => {
                self.record(operation, &by, &asked, "failed", Some(&error));
                Err(Status::unavailable(error))
            }
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let operation = AdminOperation::List;
        let asked = Asked::default();
        let by = self.authorize(operation, &request, &asked)?;
        let revocations: Vec<_> = self.list.list(unix_now()).iter().map(to_message).collect();
        let detail = format!("{} in force", revocations.len());
        self.record(operation, &by, &asked, "accepted", Some(&detail));
        Ok(Response::new(pb::ListResponse { revocations }))
    }
}

/// gRPC reflection for `grpcurl` users: the admin API, and Envoy's ext_authz when available.
pub fn reflection() -> Result<ServerReflectionServer<impl ServerReflection>, String> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    if !ENVOY_DESCRIPTOR_SET.is_empty() {
        builder = builder.register_encoded_file_descriptor_set(ENVOY_DESCRIPTOR_SET);
    }
    builder
        .build_v1()
        .map_err(|error| format!("reflection: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_revocation_value_over_2048_bytes_is_refused() {
        let longest = "x".repeat(MAX_VALUE_BYTES);
        assert!(checked_value(RevocationKind::Jti, &longest, true).is_ok());
        let over = "x".repeat(MAX_VALUE_BYTES + 1);
        for kind in [
            RevocationKind::Jti,
            RevocationKind::Sid,
            RevocationKind::Sub,
        ] {
            let refused = checked_value(kind, &over, true).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn rule_a_revocation_value_that_could_match_nothing_is_refused() {
        let actor = "spiffe://example.org/agent/researcher";
        assert!(
            checked_value(
                RevocationKind::SessionActor,
                &format!("{actor} wf 42"),
                true
            )
            .is_ok()
        );
        for refused in [
            actor.to_owned(),
            format!("{actor} "),
            "agent wf".into(),
            format!(" {actor} wf"),
        ] {
            assert!(
                checked_value(RevocationKind::SessionActor, &refused, true).is_err(),
                "{refused:?}"
            );
        }
        for kind in RevocationKind::ALL {
            assert!(checked_value(kind, "t\n1", true).is_err(), "{kind:?}");
            // Removing such an entry (stored by an earlier version) stays possible.
            if !matches!(kind, RevocationKind::Actor | RevocationKind::SessionActor) {
                assert!(checked_value(kind, "t\n1", false).is_ok(), "{kind:?}");
            }
        }
        assert!(checked_value(RevocationKind::Branch, "b-3m0tJ2o9w1eV8Xb6kQ4yZA", true).is_ok());
        // An agent within a session names two values, each up to the limit.
        let long_actor = format!("spiffe://example.org/{}", "a".repeat(1900));
        let long_session = "s".repeat(MAX_VALUE_BYTES);
        let both = crate::decision::revocation::session_actor_value(&long_actor, &long_session);
        assert!(both.len() > MAX_VALUE_BYTES);
        assert!(checked_value(RevocationKind::SessionActor, &both, true).is_ok());
        let over = format!("{both}{}", "s".repeat(MAX_VALUE_BYTES));
        assert!(checked_value(RevocationKind::SessionActor, &over, true).is_err());
    }
}
