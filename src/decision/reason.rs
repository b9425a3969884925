//! The one list of reasons a request is denied, and the separate type for internal faults.
//!
//! Each [`DenyReason`] has a stable snake_case [`code`](DenyReason::code): the same string goes
//! into the response body, the logs and (later) metrics labels. Codes are public contract; add
//! new ones, never rename.
//!
//! A [`Fault`] is not the caller's fault (no keys loaded, a bug). It never becomes an allow:
//! the gRPC service answers it with a gRPC error, which Envoy's `failure_mode_allow: false`
//! turns into a deny.

pub use envoy_types::pb::google::rpc::Code;
use std::fmt;

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    CallerIdentityMissing,
    CallerIdentityInvalid,
    CallerTrustDomainDenied,
    PathInvalid,
    NoRoute,
    TokenMissing,
    AuthorizationInvalid,
    TokenMalformed,
    TokenTooLarge,
    TokenAlgDenied,
    TokenCritUnsupported,
    TokenKeyUnknown,
    TokenSignatureInvalid,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuerUnknown,
    TokenAudienceMismatch,
    TokenRevoked,
    IssuerKeysUnavailable,
    TokenNotBoundToCaller,
    ActorMismatch,
    MayActMismatch,
    ActorInvalid,
    ActorTrustDomainDenied,
    DelegationCycle,
    DelegationTooDeep,
    DelegationEdgeDenied,
    DelegationCeilingExceeded,
    SessionRequired,
    CallerNotAllowed,
    InsufficientScope,
    RevocationsUnavailable,
    McpRequestInvalid,
    McpMethodNotAllowed,
    McpToolNotAllowed,
    InsufficientAuthorizationDetails,
    BudgetExhausted,
    BudgetsUnavailable,
}

/// The RFC 6750 challenge a denial carries in `WWW-Authenticate`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No `WWW-Authenticate` header: the credentials were fine, the request is not allowed.
    None,
    /// `Bearer realm="…"` with no error code: no credentials were presented (RFC 6750 §3.1).
    Bare,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
    /// `error="insufficient_authorization_details"`: the token needs other RFC 9396 details.
    InsufficientAuthorizationDetails,
}

impl DenyReason {
    /// Every reason, for tables in tests and docs.
    pub const ALL: [DenyReason; 38] = [
        Self::CallerIdentityMissing,
        Self::CallerIdentityInvalid,
        Self::CallerTrustDomainDenied,
        Self::PathInvalid,
        Self::NoRoute,
        Self::TokenMissing,
        Self::AuthorizationInvalid,
        Self::TokenMalformed,
        Self::TokenTooLarge,
        Self::TokenAlgDenied,
        Self::TokenCritUnsupported,
        Self::TokenKeyUnknown,
        Self::TokenSignatureInvalid,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::TokenIssuerUnknown,
        Self::TokenAudienceMismatch,
        Self::TokenRevoked,
        Self::IssuerKeysUnavailable,
        Self::TokenNotBoundToCaller,
        Self::ActorMismatch,
        Self::MayActMismatch,
        Self::ActorInvalid,
        Self::ActorTrustDomainDenied,
        Self::DelegationCycle,
        Self::DelegationTooDeep,
        Self::DelegationEdgeDenied,
        Self::DelegationCeilingExceeded,
        Self::SessionRequired,
        Self::CallerNotAllowed,
        Self::InsufficientScope,
        Self::RevocationsUnavailable,
        Self::McpRequestInvalid,
        Self::McpMethodNotAllowed,
        Self::McpToolNotAllowed,
        Self::InsufficientAuthorizationDetails,
        Self::BudgetExhausted,
        Self::BudgetsUnavailable,
    ];

    /// The stable code used in response bodies and logs.
    pub fn code(self) -> &'static str {
        match self {
            Self::CallerIdentityMissing => "caller_identity_missing",
            Self::CallerIdentityInvalid => "caller_identity_invalid",
            Self::CallerTrustDomainDenied => "caller_trust_domain_denied",
            Self::PathInvalid => "path_invalid",
            Self::NoRoute => "no_route",
            Self::TokenMissing => "token_missing",
            Self::AuthorizationInvalid => "authorization_invalid",
            Self::TokenMalformed => "token_malformed",
            Self::TokenTooLarge => "token_too_large",
            Self::TokenAlgDenied => "token_alg_denied",
            Self::TokenCritUnsupported => "token_crit_unsupported",
            Self::TokenKeyUnknown => "token_key_unknown",
            Self::TokenSignatureInvalid => "token_signature_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenIssuerUnknown => "token_issuer_unknown",
            Self::TokenAudienceMismatch => "token_audience_mismatch",
            Self::TokenRevoked => "token_revoked",
            Self::IssuerKeysUnavailable => "issuer_keys_unavailable",
            Self::TokenNotBoundToCaller => "token_not_bound_to_caller",
            Self::ActorMismatch => "actor_mismatch",
            Self::MayActMismatch => "may_act_mismatch",
            Self::ActorInvalid => "actor_invalid",
            Self::ActorTrustDomainDenied => "actor_trust_domain_denied",
            Self::DelegationCycle => "delegation_cycle",
            Self::DelegationTooDeep => "delegation_too_deep",
            Self::DelegationEdgeDenied => "delegation_edge_denied",
            Self::DelegationCeilingExceeded => "delegation_ceiling_exceeded",
            Self::SessionRequired => "session_required",
            Self::CallerNotAllowed => "caller_not_allowed",
            Self::InsufficientScope => "insufficient_scope",
            Self::RevocationsUnavailable => "revocations_unavailable",
            Self::McpRequestInvalid => "mcp_request_invalid",
            Self::McpMethodNotAllowed => "mcp_method_not_allowed",
            Self::McpToolNotAllowed => "mcp_tool_not_allowed",
            Self::InsufficientAuthorizationDetails => "insufficient_authorization_details",
            Self::BudgetExhausted => "budget_exhausted",
            Self::BudgetsUnavailable => "budgets_unavailable",
        }
    }

    /// The HTTP status Envoy sends to the downstream client.
    pub fn http_status(self) -> u16 {
        match self {
            // Not the caller's fault: answered as a gRPC UNAVAILABLE fault in gRPC mode.
            Self::IssuerKeysUnavailable
            | Self::RevocationsUnavailable
            | Self::BudgetsUnavailable => 503,
            Self::BudgetExhausted => 429,
            Self::PathInvalid | Self::AuthorizationInvalid | Self::McpRequestInvalid => 400,
            Self::TokenMissing
            | Self::TokenMalformed
            | Self::TokenTooLarge
            | Self::TokenAlgDenied
            | Self::TokenCritUnsupported
            | Self::TokenKeyUnknown
            | Self::TokenSignatureInvalid
            | Self::TokenExpired
            | Self::TokenNotYetValid
            | Self::TokenIssuerUnknown
            | Self::TokenAudienceMismatch
            | Self::TokenRevoked => 401,
            Self::CallerIdentityMissing
            | Self::CallerIdentityInvalid
            | Self::CallerTrustDomainDenied
            | Self::NoRoute
            | Self::TokenNotBoundToCaller
            | Self::ActorMismatch
            | Self::MayActMismatch
            | Self::ActorInvalid
            | Self::ActorTrustDomainDenied
            | Self::DelegationCycle
            | Self::DelegationTooDeep
            | Self::DelegationEdgeDenied
            | Self::DelegationCeilingExceeded
            | Self::SessionRequired
            | Self::CallerNotAllowed
            | Self::InsufficientScope
            | Self::McpMethodNotAllowed
            | Self::McpToolNotAllowed
            | Self::InsufficientAuthorizationDetails => 403,
        }
    }

    /// The gRPC status code of the `CheckResponse.status` (any non-OK code denies).
    pub fn grpc_code(self) -> Code {
        match self.http_status() {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            503 => Code::Unavailable,
            429 => Code::ResourceExhausted,
            _ => Code::PermissionDenied,
        }
    }

    /// Not the caller's doing: the sidecar cannot decide (answered as a gRPC `UNAVAILABLE`
    /// fault). Never turned into an allow, shadow mode included.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Self::IssuerKeysUnavailable | Self::RevocationsUnavailable | Self::BudgetsUnavailable
        )
    }

    /// The RFC 6750 challenge to send.
    pub fn challenge(self) -> Challenge {
        match self {
            Self::TokenMissing => Challenge::Bare,
            Self::AuthorizationInvalid => Challenge::InvalidRequest,
            Self::InsufficientScope => Challenge::InsufficientScope,
            Self::InsufficientAuthorizationDetails => Challenge::InsufficientAuthorizationDetails,
            _ if self.http_status() == 401 => Challenge::InvalidToken,
            _ => Challenge::None,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A denial: the reason, a short description that never echoes request data (so it cannot leak
/// a secret or inject into logs), and for `insufficient_scope` the scopes the route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub description: &'static str,
    /// Space-separated scopes the route requires; set only for `insufficient_scope`.
    pub required_scope: Option<String>,
    /// The RFC 9396 type a tool rule requires; set only for `insufficient_authorization_details`.
    pub detail_type: Option<String>,
    /// The route speaks MCP: the body is a JSON-RPC error the MCP client surfaces.
    pub json_rpc: bool,
    /// Which budget is spent (`branch` or `session`); set only for `budget_exhausted`.
    pub budget: Option<&'static str>,
}

impl Denial {
    pub fn new(reason: DenyReason, description: &'static str) -> Self {
        Self {
            reason,
            description,
            required_scope: None,
            detail_type: None,
            json_rpc: false,
            budget: None,
        }
    }
}

/// An internal fault: answered with a gRPC error, never with an allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The decision code panicked; the message is logged, not sent.
    Internal(String),
    /// An issuer's keys are unavailable (never fetched, or stale beyond `max_stale`).
    KeysUnavailable,
    /// Fleet revocations are not confirmed current (beyond `revocation.nats.max_staleness`).
    RevocationsUnavailable,
    /// The budget ledger (Redis) could not charge a budgeted request (`budgets.on_error: deny`).
    BudgetsUnavailable,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internal(message) => write!(f, "internal fault: {message}"),
            Self::KeysUnavailable => f.write_str("issuer keys unavailable"),
            Self::RevocationsUnavailable => f.write_str("revocations not confirmed current"),
            Self::BudgetsUnavailable => f.write_str("budgets could not be charged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let codes: HashSet<&str> = DenyReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), DenyReason::ALL.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }

    #[test]
    fn statuses_follow_the_design_table() {
        assert_eq!(DenyReason::TokenMissing.http_status(), 401);
        assert_eq!(DenyReason::TokenMissing.challenge(), Challenge::Bare);
        assert_eq!(
            DenyReason::TokenExpired.challenge(),
            Challenge::InvalidToken
        );
        assert_eq!(DenyReason::PathInvalid.http_status(), 400);
        assert_eq!(
            DenyReason::ActorMismatch.grpc_code(),
            Code::PermissionDenied
        );
        assert_eq!(DenyReason::ActorMismatch.challenge(), Challenge::None);
        assert_eq!(
            DenyReason::InsufficientScope.challenge(),
            Challenge::InsufficientScope
        );
    }
}
