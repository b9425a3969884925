//! The revocation admin API (`proto/actguard/admin/v1/revocation.proto`), served over gRPC on
//! the admin listener, and gRPC reflection for it and for Envoy's ext_authz service.
//!
//! Refuses what would silently revoke nothing: an unspecified kind, an empty value, an
//! `ACTOR` that is not a canonical SPIFFE ID.

use crate::decision::revocation::{Revocation, RevocationKind, RevocationList};
use crate::decision::spiffe::SpiffeId;
use crate::decision::token::unix_now;
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
        }
    }
}

fn kind_of(raw: i32) -> Result<RevocationKind, Status> {
    match pb::RevocationKind::try_from(raw) {
        Ok(pb::RevocationKind::Jti) => Ok(RevocationKind::Jti),
        Ok(pb::RevocationKind::Sid) => Ok(RevocationKind::Sid),
        Ok(pb::RevocationKind::Sub) => Ok(RevocationKind::Sub),
        Ok(pb::RevocationKind::Actor) => Ok(RevocationKind::Actor),
        _ => Err(Status::invalid_argument(
            "kind must be JTI, SID, SUB or ACTOR",
        )),
    }
}

fn checked_value(kind: RevocationKind, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("value must not be empty"));
    }
    if kind == RevocationKind::Actor && SpiffeId::parse(value).is_err() {
        return Err(Status::invalid_argument(
            "an ACTOR revocation needs a canonical SPIFFE ID (anything else would match nothing)",
        ));
    }
    Ok(())
}

fn to_message(revocation: &Revocation) -> pb::Revocation {
    pb::Revocation {
        kind: pb::RevocationKind::from(revocation.kind) as i32,
        value: revocation.value.clone(),
        created_at: revocation.created_at,
        expires_at: revocation.expires_at.unwrap_or(0),
    }
}

/// The `Revocations` gRPC service over the process-wide list.
pub struct RevocationService {
    list: Arc<RevocationList>,
}

impl RevocationService {
    pub fn new(list: Arc<RevocationList>) -> Self {
        Self { list }
    }
}

#[tonic::async_trait]
impl pb::revocations_server::Revocations for RevocationService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let request = request.into_inner();
        let kind = kind_of(request.kind)?;
        checked_value(kind, &request.value)?;
        let now = unix_now();
        let expires_at = match request.ttl_seconds {
            0 => None,
            ttl => Some(now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
        };
        let revocation = self
            .list
            .revoke(Revocation {
                kind,
                value: request.value,
                created_at: now,
                expires_at,
            })
            .map_err(Status::unavailable)?;
        tracing::warn!(kind = kind.name(), value = %revocation.value, ?expires_at, "revoked");
        Ok(Response::new(pb::RevokeResponse {
            revocation: Some(to_message(&revocation)),
        }))
    }

    async fn unrevoke(
        &self,
        request: Request<pb::UnrevokeRequest>,
    ) -> Result<Response<pb::UnrevokeResponse>, Status> {
        let request = request.into_inner();
        let kind = kind_of(request.kind)?;
        checked_value(kind, &request.value)?;
        let removed = self
            .list
            .unrevoke(kind, &request.value)
            .map_err(Status::unavailable)?;
        tracing::warn!(kind = kind.name(), value = %request.value, removed, "unrevoked");
        Ok(Response::new(pb::UnrevokeResponse { removed }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let revocations = self.list.list(unix_now()).iter().map(to_message).collect();
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
