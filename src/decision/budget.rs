//! Budgets per execution branch and per session (issue #17): what one allowed request costs,
//! and which counters it is charged to.
//!
//! The decision only says *what* to charge ([`Charge`]): plain values computed from the route
//! and the verified token, after every other step allowed. The counters themselves are shared
//! by the fleet and live in Redis; the serving side (`serve::budgets`) charges them atomically
//! and hands the outcome back ([`ChargeOutcome`]), and only then is the request allowed,
//! denied `budget_exhausted`, or (the ledger unreachable) failed closed.
//!
//! The branch is the token's execution branch ([`crate::decision::branch`]); the session is
//! the root of its lineage: issuer, session (`sid`, else `jti`) and subject, so two issuers'
//! or two users' equal `sid`s never share a counter. All budgeted routes of one configuration
//! share one pair of counters per branch and session (each route's `cost` prices it, each
//! route's limits are checked against what the branch spent in total): a runaway sub-agent
//! cannot spend a budget per route.

use crate::decision::reason::{Denial, DenyReason};
use crate::decision::routes::Route;
use crate::decision::token::VerifiedToken;

/// The largest `cost`, limit or budget claim: far beyond any workflow, exact in Redis's
/// integers and in Lua's doubles (2^53).
pub const MAX_UNITS: u64 = 1 << 40;

/// `routes[].budget`: units a branch, and a session, may spend on budgeted routes.
/// At least one of the two limits is set (a claim only lowers the branch's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRule {
    /// Units per branch; `None`: no branch limit (the session's applies).
    pub per_branch: Option<u64>,
    /// Units for all branches of one session together; `None`: no session limit.
    pub per_session: Option<u64>,
    /// A token claim (a non-negative integer) that can lower `per_branch`, never raise it.
    pub claim: Option<Box<str>>,
}

/// Which budget a request found spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exhausted {
    Branch,
    Session,
}

impl Exhausted {
    /// As the deny body and the audit record name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Branch => "branch",
            Self::Session => "session",
        }
    }

    /// The denial a request gets when this budget is spent: 429, no `retry-after` (the budget
    /// is the branch's for its lifetime, waiting does not renew it).
    pub fn denial(self) -> Denial {
        let mut denial = Denial::new(
            DenyReason::BudgetExhausted,
            match self {
                Self::Branch => "the execution branch has spent its budget",
                Self::Session => "the session has spent its budget",
            },
        );
        denial.budget = Some(self.name());
        denial
    }
}

/// What one allowed request is charged: all of it, or (when a limit would be passed) nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The session's counter: the root of the token's branch lineage.
    pub session: Box<str>,
    /// The token's `sid`, else its `jti` (empty without either): part of the counter's key so
    /// an operator can find a session's budget by the id they know.
    pub session_claim: Box<str>,
    /// The branch's counter: the token's execution branch.
    pub branch: Box<str>,
    pub cost: u64,
    /// The branch's limit after the token's claim lowered it (if it did).
    pub per_branch: Option<u64>,
    pub per_session: Option<u64>,
    /// When the token stops being accepted (`exp` plus the leeway, Unix seconds): the
    /// counters live at least that long, never longer than the ledger's `max_window`.
    pub token_expires_at: i64,
}

/// What the ledger made of a [`Charge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged; what the branch and the session have spent now.
    Charged { branch_used: u64, session_used: u64 },
    /// Not charged: this budget would be passed.
    Exhausted(Exhausted),
    /// The ledger could not answer (unreachable, too slow, an error): what it said, for the
    /// log. Fails closed (`budgets.on_error: deny`, the default).
    Failed(String),
    /// The ledger could not answer and the configuration opted into `budgets.on_error:
    /// allow`: allowed uncharged, logged and counted by the ledger, audited `unavailable`.
    FailedOpen(String),
}

/// The charge for an allowed request on `route`, or `None` when the route has no budget.
/// A token whose budget claim lowers the branch limit gets the lower limit; the claim was
/// checked to be a non-negative integer when the token was verified. `leeway` is how long
/// past `exp` the verifier still accepts a token (seconds).
pub fn charge_for(route: &Route, token: &VerifiedToken, leeway: i64) -> Option<Charge> {
    let rule = route.budget.as_ref()?;
    let claimed = rule
        .claim
        .as_deref()
        .and_then(|name| token.budget_claim(name))
        .map(|claimed| claimed.min(MAX_UNITS));
    let per_branch = match (rule.per_branch, claimed) {
        (Some(limit), Some(claimed)) => Some(limit.min(claimed)),
        (limit, None) => limit,
        // No branch limit configured: a claim cannot create one above nothing, but it may
        // set one (lowering "unlimited").
        (None, Some(claimed)) => Some(claimed),
    };
    Some(Charge {
        session: token.branch_lineage().root().into(),
        session_claim: crate::decision::branch::session(token)
            .unwrap_or_default()
            .into(),
        branch: token.branch().into(),
        cost: route.cost,
        per_branch,
        per_session: rule.per_session,
        token_expires_at: token.expires_at().saturating_add(leeway.max(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(budget: Option<BudgetRule>) -> Route {
        let mut route = Route::for_tests("search", "/search");
        route.cost = 3;
        route.budget = budget;
        route
    }

    fn rule(per_branch: Option<u64>, claim: Option<&str>) -> BudgetRule {
        BudgetRule {
            per_branch,
            per_session: Some(100),
            claim: claim.map(Into::into),
        }
    }

    fn token(budget: Option<serde_json::Value>) -> VerifiedToken {
        let mut claims =
            crate::devkit::delegated_claims("i", "user:alice", "a", "", &["orch", "res"], 0, 60);
        claims["sid"] = json!("s1");
        if let Some(budget) = budget {
            claims["budget"] = budget;
        }
        VerifiedToken::from_claims_with_budget_claim_for_tests(&claims, "budget")
    }

    #[test]
    fn rule_a_route_without_a_budget_is_never_charged() {
        assert_eq!(charge_for(&route(None), &token(Some(json!(5))), 0), None);
    }

    #[test]
    fn rule_a_budget_claim_lowers_the_branch_budget_and_never_raises_it() {
        let lowered = charge_for(
            &route(Some(rule(Some(200), Some("budget")))),
            &token(Some(json!(5))),
            0,
        );
        assert_eq!(lowered.as_ref().and_then(|c| c.per_branch), Some(5));
        let not_raised = charge_for(
            &route(Some(rule(Some(200), Some("budget")))),
            &token(Some(json!(900))),
            0,
        );
        assert_eq!(not_raised.as_ref().and_then(|c| c.per_branch), Some(200));
        let absent = charge_for(
            &route(Some(rule(Some(200), Some("budget")))),
            &token(None),
            0,
        );
        assert_eq!(absent.as_ref().and_then(|c| c.per_branch), Some(200));
        // A claim the route does not name means nothing for it.
        let unnamed = charge_for(
            &route(Some(rule(Some(200), None))),
            &token(Some(json!(5))),
            0,
        );
        assert_eq!(unnamed.as_ref().and_then(|c| c.per_branch), Some(200));
        // A claim beyond what any limit may be is clamped to it (exact in Redis and in Lua).
        let huge = charge_for(
            &route(Some(rule(None, Some("budget")))),
            &token(Some(json!(u64::MAX))),
            0,
        );
        assert_eq!(huge.as_ref().and_then(|c| c.per_branch), Some(MAX_UNITS));
        // Without a configured branch limit the claim still sets one: lowering "unlimited".
        let set = charge_for(
            &route(Some(rule(None, Some("budget")))),
            &token(Some(json!(5))),
            0,
        );
        assert_eq!(set.as_ref().and_then(|c| c.per_branch), Some(5));
    }

    #[test]
    fn a_charge_names_the_tokens_branch_its_lineage_root_and_the_routes_cost() {
        let token = token(None);
        let charge = charge_for(&route(Some(rule(Some(200), None))), &token, 0).unwrap();
        assert_eq!(&*charge.branch, token.branch());
        assert_eq!(&*charge.session, token.branch_lineage().root());
        assert_eq!(&*charge.session_claim, "s1");
        assert_ne!(charge.session, charge.branch);
        assert_eq!(charge.cost, 3);
        assert_eq!(charge.per_session, Some(100));
        assert_eq!(charge.token_expires_at, token.expires_at());
    }
}
