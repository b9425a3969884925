//! The decision proper: a pure function of (caller, route, verified token).
//!
//! Steps, first failure wins (DESIGN.md 5–7):
//! 1. **Binding.** With `act`, the current actor (outermost `act.sub`) must be the caller.
//!    Without `act`, the token must have been issued to the caller: every one of `client_id`
//!    and `azp` that is present must be the caller, and when neither is present `sub` must be.
//!    `may_act.sub`, when present, must be the caller.
//! 2. **Chain.** Every actor has a `sub` that is a canonical SPIFFE ID of an allowed trust
//!    domain; no actor appears twice; there are no more actors than the route's depth limit
//!    (the global `max_depth`, lowered by the route's own).
//! 3. **Delegation policy** ([`crate::decision::delegation`]): every hop an allowed edge (when edges are
//!    configured); the token's scopes within every actor's ceiling.
//! 4. **Route rules.** `require_session` needs a `sid`; the caller must match `allow_callers`
//!    when set; then every required
//!    scope must be an exact token of the top-level `scope` claim. Callers are checked first
//!    so a caller that is not allowed learns nothing about the route's scopes.
//!
//! Prior actors can only restrict, never grant: only the caller is matched against
//! `allow_callers`, and scopes come only from the top-level claim, never from inside `act`.

use crate::decision::delegation::{Ceiling, Edge, edges_allowed, within_ceilings};
use crate::decision::reason::{Denial, DenyReason};
use crate::decision::routes::Route;
use crate::decision::spiffe::{CallerPattern, SpiffeId, TrustDomain};
use crate::decision::token::{MayAct, VerifiedToken};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The delegation rules that are global to a configuration.
#[derive(Debug, Clone, Default)]
pub struct DelegationPolicy {
    /// Callers and every actor must belong to one of these.
    pub trust_domains: BTreeSet<TrustDomain>,
    /// Most actors a chain may hold (`delegation.max_depth`).
    pub max_depth: usize,
    /// `delegation.ceilings`: the most scope a chain through an actor may carry.
    pub ceilings: Vec<Ceiling>,
    /// `delegation.edges`: when set, the only allowed delegation hops.
    pub edges: Option<Vec<Edge>>,
}

impl DelegationPolicy {
    /// The most actors a chain may hold on `route`: the global limit, lowered by the route's.
    pub fn depth_limit(&self, route: &Route) -> usize {
        route
            .max_depth
            .map_or(self.max_depth, |limit| limit.min(self.max_depth))
    }

    pub fn allows_trust_domain(&self, trust_domain: &str) -> bool {
        self.trust_domains
            .iter()
            .any(|allowed| allowed.as_str() == trust_domain)
    }
}

/// What an allow carries to the response: read from the verified token (shared with the
/// cache, not copied), the caller and the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    token: Arc<VerifiedToken>,
    /// The current actor, which is the caller.
    actor: SpiffeId,
    route: Arc<str>,
    forward_token: bool,
    /// The MCP method and tool, on an MCP route.
    mcp: Option<crate::decision::mcp::McpCall>,
    /// The route's `cost` (units this request is charged, reported to Envoy).
    cost: u64,
}

impl Grant {
    pub fn new(
        token: Arc<VerifiedToken>,
        actor: SpiffeId,
        route: Arc<str>,
        forward_token: bool,
    ) -> Self {
        Self {
            token,
            actor,
            route,
            forward_token,
            mcp: None,
            cost: 1,
        }
    }

    /// The grant on a route whose requests cost `cost` units.
    pub fn with_cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Units this request costs (`routes[].cost`).
    pub fn cost(&self) -> u64 {
        self.cost
    }
    /// The token's execution branch ([`crate::decision::branch`]).
    pub fn branch(&self) -> &str {
        self.token.branch()
    }
    /// The token's session as budgets count it: the root of its branch lineage.
    pub fn session(&self) -> &str {
        self.token.branch_lineage().root()
    }

    /// The grant of an MCP message: the same, naming its method and tool.
    pub fn with_mcp(mut self, call: crate::decision::mcp::McpCall) -> Self {
        self.mcp = Some(call);
        self
    }

    /// The MCP method and tool, on an MCP route.
    pub fn mcp(&self) -> Option<&crate::decision::mcp::McpCall> {
        self.mcp.as_ref()
    }

    pub fn subject(&self) -> &str {
        self.token.subject()
    }
    /// The current actor, which is the caller.
    pub fn actor(&self) -> &str {
        self.actor.as_str()
    }
    /// Actors from the first delegate to the current actor; empty for a direct call.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        self.token
            .actors()
            .iter()
            .rev()
            .filter_map(|actor| actor.subject())
    }
    pub fn scopes(&self) -> &[Box<str>] {
        self.token.scopes()
    }
    pub fn jti(&self) -> Option<&str> {
        self.token.jti()
    }
    pub fn sid(&self) -> Option<&str> {
        self.token.sid()
    }
    pub fn route(&self) -> &str {
        &self.route
    }
    pub fn forward_token(&self) -> bool {
        self.forward_token
    }

    /// Whether `other` carries the same answer as this grant because it is the same decision:
    /// the very same verified token (one allocation, immutable), the very same route of the
    /// same configuration, the same caller, token forwarding and MCP call. Cheap: two pointer
    /// comparisons and a few short string comparisons.
    pub fn is_same_decision(&self, other: &Grant) -> bool {
        Arc::ptr_eq(&self.token, &other.token)
            && Arc::ptr_eq(&self.route, &other.route)
            && self.forward_token == other.forward_token
            && self.actor == other.actor
            && self.mcp == other.mcp
            && self.cost == other.cost
    }
}

/// Whether `caller` matches `allow_callers` (`None`: every caller does). Only the caller, the
/// current actor, is matched; prior actors never count.
pub fn caller_allowed(allow_callers: Option<&[CallerPattern]>, caller: &SpiffeId) -> bool {
    allow_callers.is_none_or(|allowed| allowed.iter().any(|pattern| pattern.matches(caller)))
}

/// Whether every `required` scope is an exact token of the token's `granted` scopes.
pub fn has_scopes(granted: &[Box<str>], required: &[String]) -> bool {
    required
        .iter()
        .all(|required| granted.iter().any(|scope| **scope == **required))
}

fn deny(reason: DenyReason, description: &'static str) -> Denial {
    Denial::new(reason, description)
}

fn check_binding(caller: &SpiffeId, token: &VerifiedToken) -> Result<(), Denial> {
    let caller = caller.as_str();
    match token.actors().first() {
        Some(current) => match current.subject() {
            None => return Err(deny(DenyReason::ActorInvalid, "an actor has no sub")),
            Some(actor) if actor != caller => {
                return Err(deny(
                    DenyReason::ActorMismatch,
                    "the token's current actor is not the caller",
                ));
            }
            Some(_) => {}
        },
        None => {
            let issued_to: Vec<&str> = [token.client_id(), token.authorized_party()]
                .into_iter()
                .flatten()
                .collect();
            let bound = if issued_to.is_empty() {
                token.subject() == caller
            } else {
                issued_to.iter().all(|client| *client == caller)
            };
            if !bound {
                return Err(deny(
                    DenyReason::TokenNotBoundToCaller,
                    "the token was not issued to the caller",
                ));
            }
        }
    }
    match token.may_act() {
        Some(MayAct::Subject(allowed)) if **allowed == *caller => Ok(()),
        Some(_) => Err(deny(
            DenyReason::MayActMismatch,
            "the token's may_act does not name the caller",
        )),
        None => Ok(()),
    }
}

fn check_chain(
    policy: &DelegationPolicy,
    route: &Route,
    token: &VerifiedToken,
) -> Result<(), Denial> {
    let actors = token.actors();
    for (index, actor) in actors.iter().enumerate() {
        let Some(id) = actor.spiffe_id() else {
            return Err(deny(
                DenyReason::ActorInvalid,
                "an actor's sub is missing or not a canonical SPIFFE ID",
            ));
        };
        if !id.is_workload() {
            return Err(deny(
                DenyReason::ActorInvalid,
                "an actor's sub names a trust domain, not a workload",
            ));
        }
        if !policy.allows_trust_domain(id.trust_domain()) {
            return Err(deny(
                DenyReason::ActorTrustDomainDenied,
                "an actor belongs to a trust domain that is not allowed",
            ));
        }
        if actors[..index]
            .iter()
            .any(|earlier| earlier.spiffe_id() == Some(id))
        {
            return Err(deny(
                DenyReason::DelegationCycle,
                "an actor appears twice in the delegation chain",
            ));
        }
        // A principal "delegating" to itself is a cycle of length one.
        if id.as_str() == token.subject() {
            return Err(deny(
                DenyReason::DelegationCycle,
                "an actor is the token's own subject",
            ));
        }
    }
    if actors.len() > policy.depth_limit(route) {
        return Err(deny(
            DenyReason::DelegationTooDeep,
            "the delegation chain is longer than allowed",
        ));
    }
    Ok(())
}

fn check_delegation_policy(
    policy: &DelegationPolicy,
    caller: &SpiffeId,
    token: &VerifiedToken,
) -> Result<(), Denial> {
    // Delegation order: first delegate … current actor (the caller).
    let delegation: Vec<&str> = token
        .actors()
        .iter()
        .rev()
        .filter_map(|actor| actor.subject())
        .collect();
    if let Some(edges) = &policy.edges
        && !edges_allowed(edges, token.subject(), &delegation)
    {
        return Err(deny(
            DenyReason::DelegationEdgeDenied,
            "a delegation hop in the chain is not allowed",
        ));
    }
    // A direct call's caller is its only actor.
    let actors = if delegation.is_empty() {
        vec![caller.as_str()]
    } else {
        delegation
    };
    if !within_ceilings(&policy.ceilings, &actors, token.scopes()) {
        return Err(deny(
            DenyReason::DelegationCeilingExceeded,
            "the token carries more scope than an actor in its chain may",
        ));
    }
    Ok(())
}

fn check_route_rules(
    caller: &SpiffeId,
    route: &Route,
    token: &VerifiedToken,
) -> Result<(), Denial> {
    if route.require_session && token.sid().is_none() {
        return Err(deny(
            DenyReason::SessionRequired,
            "this route requires a token with a session (sid)",
        ));
    }
    if !caller_allowed(route.allow_callers.as_deref(), caller) {
        return Err(deny(
            DenyReason::CallerNotAllowed,
            "the caller is not allowed on this route",
        ));
    }
    if !has_scopes(token.scopes(), &route.require_scopes) {
        return Err(Denial {
            required_scope: Some(route.require_scopes.join(" ")),
            ..deny(
                DenyReason::InsufficientScope,
                "the token lacks a scope this route requires",
            )
        });
    }
    Ok(())
}

/// Decides a request whose caller, route and token are known (see the module docs).
pub fn authorize(
    policy: &DelegationPolicy,
    caller: &SpiffeId,
    route: &Route,
    token: &Arc<VerifiedToken>,
) -> Result<Grant, Denial> {
    check_binding(caller, token)?;
    check_chain(policy, route, token)?;
    check_delegation_policy(policy, caller, token)?;
    check_route_rules(caller, route, token)?;
    Ok(Grant::new(
        Arc::clone(token),
        caller.clone(),
        Arc::clone(&route.name),
        route.forward_token,
    )
    .with_cost(route.cost))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
