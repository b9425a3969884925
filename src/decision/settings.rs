//! What a decision depends on, as the configuration hands it over: the pipeline is built from
//! a [`DecisionSettings`] and never sees the listeners, the audit output or the limits.

use crate::decision::identity::IdentitySource;
use crate::decision::policy::DelegationPolicy;
use crate::decision::response::ResponseSettings;
use crate::decision::routes::RouteTable;
use crate::decision::spiffe::SpiffeId;
use crate::decision::token::TrustedIssuer;
use std::time::Duration;

/// The verified-token cache bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// At most this many cached tokens; 0 disables the cache.
    pub max_entries: u64,
    /// At most this many bytes of cached claims (approximate, per-entry estimate).
    pub max_bytes: u64,
}

/// The decision half of a configuration (identity, issuers, tokens, delegation, routes,
/// cache, responses).
#[derive(Debug)]
pub struct DecisionSettings {
    /// This workload: the `aud` tokens must carry.
    pub local_identity: SpiffeId,
    pub identity_sources: Vec<IdentitySource>,
    pub delegation: DelegationPolicy,
    pub issuers: Vec<TrustedIssuer>,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    /// `tokens.require_typ: at+jwt`: a token without RFC 9068's explicit `typ` is malformed.
    pub require_access_token_typ: bool,
    /// `tokens.branch_claim`: the claim that names a token's execution branch.
    pub branch_claim: Option<String>,
    pub routes: RouteTable,
    pub cache: CacheConfig,
    pub response: ResponseSettings,
}
