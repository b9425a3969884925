//! What a decision tells the audit log, and the narrow seam it tells it through: the pipeline
//! builds an [`AuditRecord`] only when the [`DecisionLog`] keeps it, and never learns where
//! the line goes (the serving side's writer, `serve::audit`, or nothing).

use std::time::Duration;

/// What one decision contributes to the audit line.
pub struct AuditRecord<'a> {
    pub request_id: &'a str,
    pub caller: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// First delegate → current actor.
    pub chain: Vec<&'a str>,
    /// The token's scopes (empty without a verified token): what `actguard report` shows as
    /// scopes used and `policy suggest` derives ceilings from.
    pub scopes: &'a [Box<str>],
    pub route: Option<&'a str>,
    pub method: &'a str,
    /// Raw request path; the query is cut before logging.
    pub path: &'a str,
    /// `None` for an allow.
    pub reason: Option<&'static str>,
    pub jti: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// The token's execution branch ([`crate::decision::branch`]).
    pub branch: Option<&'a str>,
    /// Kind and value of the revocation that cut the token (`token_revoked` only).
    pub revoked: Option<(&'static str, &'a str)>,
    /// MCP method and tool name (MCP routes, once the message was read; never arguments).
    pub mcp: Option<(&'a str, Option<&'a str>)>,
    /// What the budget had to do with the outcome (budgeted routes): `branch` or `session`
    /// (spent: `budget_exhausted`), `unavailable` (the ledger could not answer).
    pub budget: Option<&'static str>,
    /// False on a shadow route (`enforce: false`): a denial here was answered with an allow.
    pub enforced: bool,
    pub latency: Duration,
}

/// Where decisions are recorded. `keeps` is asked first so that a disabled or sampled-out log
/// costs a check nothing; `write` must never block the check.
pub trait DecisionLog: Send + Sync {
    /// Whether the record of this decision would be kept (allows may be sampled).
    fn keeps(&self, allowed: bool) -> bool;
    /// Records one decision (or drops it, counted, when the writer cannot keep up).
    fn write(&self, record: &AuditRecord<'_>);
}

/// Records nothing: tests, and configurations without an audit log.
pub struct NoDecisionLog;

impl DecisionLog for NoDecisionLog {
    fn keeps(&self, _allowed: bool) -> bool {
        false
    }

    fn write(&self, _record: &AuditRecord<'_>) {}
}
