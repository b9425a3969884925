//! One named test per binding, chain and route rule; each fails if its rule is removed.

use super::*;
use crate::decision::spiffe::CallerPattern;
use serde_json::{Value, json};
use std::sync::Arc;

const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";
const PLANNER: &str = "spiffe://example.org/agent/planner";

fn policy(max_depth: usize) -> DelegationPolicy {
    DelegationPolicy {
        trust_domains: [TrustDomain::parse("example.org").unwrap()].into(),
        max_depth,
        ..Default::default()
    }
}

fn route() -> Route {
    Route {
        name: "calendar-read".into(),
        methods: None,
        hosts: None,
        path_prefix: "/calendar".into(),
        require_scopes: vec!["calendar:read".into()],
        allow_callers: None,
        max_depth: None,
        forward_token: false,
        require_session: false,
        mcp: None,
        cost: 1,
        budget: None,
        enforce: true,
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// Claims for `sub` delegated through `actors` in delegation order (current actor last).
/// Verified claims as the cache shares them.
fn verified(claims: &Value) -> Arc<VerifiedToken> {
    Arc::new(VerifiedToken::from_claims_for_tests(claims))
}

fn delegated(actors: &[&str], extra: Value) -> Arc<VerifiedToken> {
    let mut claims = json!({ "sub": "user:alice", "scope": "calendar:read" });
    for actor in actors {
        let mut act = json!({ "sub": actor });
        if let Some(inner) = claims.get("act").cloned() {
            act["act"] = inner;
        }
        claims["act"] = act;
    }
    for (name, value) in extra.as_object().cloned().unwrap_or_default() {
        claims[name] = value;
    }
    verified(&claims)
}

fn decide(caller: &str, token: &Arc<VerifiedToken>) -> Result<Grant, DenyReason> {
    authorize(&policy(3), &id(caller), &route(), token).map_err(|d| d.reason)
}

#[test]
fn allows_delegation_ending_at_the_caller_and_reports_the_chain_in_order() {
    let grant = decide(SCHEDULER, &delegated(&[ORCHESTRATOR, SCHEDULER], json!({}))).unwrap();
    assert_eq!(grant.subject(), "user:alice");
    assert_eq!(grant.actor(), SCHEDULER);
    assert_eq!(grant.chain().collect::<Vec<_>>(), [ORCHESTRATOR, SCHEDULER]);
    assert_eq!(grant.route(), "calendar-read");
}

#[test]
fn rule_current_actor_must_be_the_caller() {
    // Replay by a prior hop: the orchestrator presents the scheduler's token.
    let token = delegated(&[ORCHESTRATOR, SCHEDULER], json!({}));
    assert_eq!(decide(ORCHESTRATOR, &token), Err(DenyReason::ActorMismatch));
}

#[test]
fn rule_current_actor_needs_a_sub() {
    // An `act` that is not an object names no actor; skipping it would turn a delegated token
    // into a direct one.
    for (name, act) in [
        ("object without sub", json!({"client": "x"})),
        ("a string", json!("x")),
        ("a number", json!(7)),
        ("sub not a string", json!({"sub": 7})),
    ] {
        let token = verified(&json!({"sub": SCHEDULER, "scope": "calendar:read", "act": act}));
        assert_eq!(
            decide(SCHEDULER, &token),
            Err(DenyReason::ActorInvalid),
            "act {name}"
        );
    }
}

#[test]
fn rule_token_without_act_only_from_its_client() {
    let direct = |claims: Value| verified(&claims);
    // Forwarded user token: issued to the orchestrator, presented by the scheduler.
    let forwarded =
        direct(json!({"sub": "user:alice", "client_id": ORCHESTRATOR, "scope": "calendar:read"}));
    assert_eq!(
        decide(SCHEDULER, &forwarded),
        Err(DenyReason::TokenNotBoundToCaller)
    );
    assert!(decide(ORCHESTRATOR, &forwarded).is_ok());
    let by_azp = direct(json!({"sub": "user:alice", "azp": SCHEDULER, "scope": "calendar:read"}));
    assert!(decide(SCHEDULER, &by_azp).is_ok());
    let by_sub = direct(json!({"sub": SCHEDULER, "scope": "calendar:read"}));
    assert!(decide(SCHEDULER, &by_sub).is_ok());
    let user_only = direct(json!({"sub": "user:alice", "scope": "calendar:read"}));
    assert_eq!(
        decide(SCHEDULER, &user_only),
        Err(DenyReason::TokenNotBoundToCaller)
    );
}

#[test]
fn rule_client_id_decides_over_sub() {
    // sub names the caller, but the token was issued to someone else: not bound.
    let token =
        verified(&json!({"sub": SCHEDULER, "client_id": ORCHESTRATOR, "scope": "calendar:read"}));
    assert_eq!(
        decide(SCHEDULER, &token),
        Err(DenyReason::TokenNotBoundToCaller)
    );
    let disagreeing = verified(
        &json!({"sub": "u", "client_id": SCHEDULER, "azp": ORCHESTRATOR, "scope": "calendar:read"}),
    );
    assert_eq!(
        decide(SCHEDULER, &disagreeing),
        Err(DenyReason::TokenNotBoundToCaller)
    );
}

#[test]
fn rule_may_act_must_name_the_caller() {
    for (name, may_act) in [
        ("another workload", json!({"sub": ORCHESTRATOR})),
        ("a string", json!("anyone")),
        ("an empty object", json!({})),
        ("sub not a string", json!({"sub": 7})),
    ] {
        let token = delegated(&[SCHEDULER], json!({ "may_act": may_act }));
        assert_eq!(
            decide(SCHEDULER, &token),
            Err(DenyReason::MayActMismatch),
            "may_act {name}"
        );
    }
    let matching = delegated(&[SCHEDULER], json!({"may_act": {"sub": SCHEDULER}}));
    assert!(decide(SCHEDULER, &matching).is_ok());
}

#[test]
fn rule_prior_actors_must_be_spiffe_ids() {
    let token = delegated(&["user:bob", SCHEDULER], json!({}));
    assert_eq!(decide(SCHEDULER, &token), Err(DenyReason::ActorInvalid));
    let non_canonical = delegated(&["spiffe://Example.org/agent/x", SCHEDULER], json!({}));
    assert_eq!(
        decide(SCHEDULER, &non_canonical),
        Err(DenyReason::ActorInvalid)
    );
}

#[test]
fn rule_actors_must_be_in_allowed_trust_domains() {
    let token = delegated(&["spiffe://evil.org/agent/x", SCHEDULER], json!({}));
    assert_eq!(
        decide(SCHEDULER, &token),
        Err(DenyReason::ActorTrustDomainDenied)
    );
}

#[test]
fn rule_no_actor_twice() {
    let token = delegated(&[SCHEDULER, ORCHESTRATOR, SCHEDULER], json!({}));
    assert_eq!(decide(SCHEDULER, &token), Err(DenyReason::DelegationCycle));
}

#[test]
fn rule_depth_limit_is_global_and_routes_only_lower_it() {
    let three = delegated(&[PLANNER, ORCHESTRATOR, SCHEDULER], json!({}));
    assert!(authorize(&policy(3), &id(SCHEDULER), &route(), &three).is_ok());
    let denied = authorize(&policy(2), &id(SCHEDULER), &route(), &three).map_err(|d| d.reason);
    assert_eq!(denied, Err(DenyReason::DelegationTooDeep));
    let mut strict_route = route();
    strict_route.max_depth = Some(1);
    let two = delegated(&[ORCHESTRATOR, SCHEDULER], json!({}));
    let denied = authorize(&policy(3), &id(SCHEDULER), &strict_route, &two).map_err(|d| d.reason);
    assert_eq!(denied, Err(DenyReason::DelegationTooDeep));
    let mut lax_route = route();
    lax_route.max_depth = Some(10);
    let denied = authorize(&policy(2), &id(SCHEDULER), &lax_route, &three).map_err(|d| d.reason);
    assert_eq!(denied, Err(DenyReason::DelegationTooDeep));
}

#[test]
fn rule_required_scopes_are_exact_tokens() {
    let near_miss = verified(
        &json!({"sub": SCHEDULER, "scope": "calendar:readwrite calendar calendar:read:all"}),
    );
    let denial = authorize(&policy(3), &id(SCHEDULER), &route(), &near_miss).unwrap_err();
    assert_eq!(denial.reason, DenyReason::InsufficientScope);
    assert_eq!(denial.required_scope.as_deref(), Some("calendar:read"));
    let exact = verified(&json!({"sub": SCHEDULER, "scope": "openid  calendar:read"}));
    assert!(decide(SCHEDULER, &exact).is_ok());
}

#[test]
fn rule_scp_is_not_read_as_scopes() {
    // RFC 9068 names `scope` only; `scp` (some issuers' array form) grants nothing.
    for (name, scp) in [
        ("scp string", json!("calendar:read")),
        ("scp array", json!(["calendar:read"])),
    ] {
        let token = verified(&json!({"sub": SCHEDULER, "scope": "openid", "scp": scp}));
        assert_eq!(
            decide(SCHEDULER, &token),
            Err(DenyReason::InsufficientScope),
            "{name}"
        );
    }
}

#[test]
fn rule_scopes_inside_act_do_not_grant() {
    let token = verified(&json!({
        "sub": "user:alice",
        "act": {"sub": SCHEDULER, "scope": "calendar:read", "act": {"sub": ORCHESTRATOR, "scope": "calendar:read"}}
    }));
    assert_eq!(
        decide(SCHEDULER, &token),
        Err(DenyReason::InsufficientScope)
    );
}

#[test]
fn rule_allow_callers_matches_the_caller_not_prior_actors() {
    let mut admin = route();
    admin.require_scopes = vec![];
    admin.allow_callers = Some(vec![CallerPattern::parse(ORCHESTRATOR).unwrap()]);
    // The orchestrator is in the chain, but the scheduler is calling: prior actors never grant.
    let token = delegated(&[ORCHESTRATOR, SCHEDULER], json!({}));
    let denied = authorize(&policy(3), &id(SCHEDULER), &admin, &token).map_err(|d| d.reason);
    assert_eq!(denied, Err(DenyReason::CallerNotAllowed));
    let direct = delegated(&[ORCHESTRATOR], json!({}));
    assert!(authorize(&policy(3), &id(ORCHESTRATOR), &admin, &direct).is_ok());
    admin.allow_callers = Some(vec![
        CallerPattern::parse("spiffe://example.org/agent/*").unwrap(),
    ]);
    assert!(authorize(&policy(3), &id(SCHEDULER), &admin, &token).is_ok());
}

#[test]
fn caller_check_comes_before_scopes() {
    let mut admin = route();
    admin.allow_callers = Some(vec![CallerPattern::parse(ORCHESTRATOR).unwrap()]);
    let no_scope = verified(&json!({"sub": SCHEDULER}));
    let denied = authorize(&policy(3), &id(SCHEDULER), &admin, &no_scope).map_err(|d| d.reason);
    assert_eq!(denied, Err(DenyReason::CallerNotAllowed));
}

#[test]
fn rule_delegation_edges_cover_every_hop_from_the_subject() {
    use crate::decision::delegation::{Edge, PrincipalPattern};
    let pattern = |text: &str| PrincipalPattern::parse(text).unwrap();
    let mut policy = policy(3);
    policy.edges = Some(vec![
        Edge {
            from: pattern("user:*"),
            to: pattern(ORCHESTRATOR),
        },
        Edge {
            from: pattern(ORCHESTRATOR),
            to: pattern(SCHEDULER),
        },
    ]);
    let decide = |actors: &[&str], caller: &str| {
        authorize(
            &policy,
            &id(caller),
            &route(),
            &delegated(actors, json!({})),
        )
        .map_err(|d| d.reason)
    };
    assert!(decide(&[ORCHESTRATOR, SCHEDULER], SCHEDULER).is_ok());
    assert_eq!(
        decide(&[SCHEDULER], SCHEDULER),
        Err(DenyReason::DelegationEdgeDenied),
        "user → scheduler is not an edge"
    );
    assert_eq!(
        decide(&[ORCHESTRATOR, PLANNER, SCHEDULER], SCHEDULER),
        Err(DenyReason::DelegationEdgeDenied),
        "orchestrator → planner is not an edge"
    );
}

#[test]
fn rule_delegation_ceilings_restrict_through_every_actor() {
    use crate::decision::delegation::{Ceiling, PrincipalPattern};
    let mut policy = policy(3);
    policy.ceilings = vec![Ceiling {
        actor: PrincipalPattern::parse(PLANNER).unwrap(),
        scopes: vec!["calendar:read".into()],
    }];
    let claims = json!({"scope": "calendar:read calendar:write"});
    let through_planner = delegated(&[PLANNER, SCHEDULER], claims.clone());
    let decided =
        authorize(&policy, &id(SCHEDULER), &route(), &through_planner).map_err(|d| d.reason);
    assert_eq!(
        decided,
        Err(DenyReason::DelegationCeilingExceeded),
        "a prior actor's ceiling binds the chain"
    );
    let without_planner = delegated(&[ORCHESTRATOR, SCHEDULER], claims.clone());
    assert!(authorize(&policy, &id(SCHEDULER), &route(), &without_planner).is_ok());
    let within = delegated(&[PLANNER, SCHEDULER], json!({}));
    assert!(authorize(&policy, &id(SCHEDULER), &route(), &within).is_ok());
    // A direct call: the caller is its only actor.
    let direct = verified(&json!({"sub": PLANNER, "scope": "calendar:read calendar:write"}));
    let decided = authorize(&policy, &id(PLANNER), &route(), &direct).map_err(|d| d.reason);
    assert_eq!(decided, Err(DenyReason::DelegationCeilingExceeded));
}

#[test]
fn rule_require_session_needs_a_sid() {
    let mut session_route = route();
    session_route.require_session = true;
    let without = delegated(&[SCHEDULER], json!({}));
    let decided =
        authorize(&policy(3), &id(SCHEDULER), &session_route, &without).map_err(|d| d.reason);
    assert_eq!(decided, Err(DenyReason::SessionRequired));
    let with = delegated(&[SCHEDULER], json!({"sid": "wf-1"}));
    assert!(authorize(&policy(3), &id(SCHEDULER), &session_route, &with).is_ok());
}

#[test]
fn rule_an_actor_must_be_a_workload_not_a_trust_domain() {
    // X509-SVID §4.2: a workload's ID has a non-root path; an actor was once a caller.
    let token = delegated(&["spiffe://example.org", SCHEDULER], json!({}));
    assert_eq!(decide(SCHEDULER, &token), Err(DenyReason::ActorInvalid));
}

#[test]
fn rule_an_actor_equal_to_the_subject_is_a_cycle() {
    // The scheduler's own token, "delegated" by the scheduler to itself.
    let mut claims = json!({"sub": SCHEDULER, "scope": "calendar:read", "act": {"sub": SCHEDULER}});
    assert_eq!(
        decide(SCHEDULER, &verified(&claims)),
        Err(DenyReason::DelegationCycle)
    );
    // Deeper in the chain too.
    claims["act"]["act"] = json!({"sub": ORCHESTRATOR});
    claims["sub"] = json!(ORCHESTRATOR);
    assert_eq!(
        decide(SCHEDULER, &verified(&claims)),
        Err(DenyReason::DelegationCycle)
    );
}
