//! `actguard demo`: the real server on loopback, a throwaway PKI and issuer, and a short agent
//! scenario played over real gRPC `CheckRequest`s, including the attacks actguard exists for.
//!
//! Each request has an expected answer; the demo fails (non-zero exit) if any answer differs,
//! so it doubles as a smoke test of the whole binary.

use crate::config::Config;
use crate::decision::Authorizer;
use crate::decision::response::CHAIN_HEADER;
use crate::decision::revocation::{Revocation, RevocationKind};
use crate::decision::token::unix_now;
use crate::devkit::{
    DevAlgorithm, DevCa, DevIssuer, IssuedCertificate, delegated_claims, envoy_check_request,
};
use crate::serve::grpc::{self, Listener};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::json;
use std::error::Error;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

const TRUST_DOMAIN: &str = "example.org";
const LOCAL: &str = "spiffe://example.org/tool/calendar";
const ISSUER: &str = "https://sts.example.org";
const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";
const PLANNER: &str = "spiffe://example.org/agent/planner";
const MALLORY: &str = "spiffe://evil.example/agent/mallory";

const CONFIG: &str = r#"
listen:
  grpc: 127.0.0.1:0
identity:
  local: spiffe://example.org/tool/calendar
  trust_domains: [example.org]
issuers:
  - issuer: https://sts.example.org
    jwks_file: jwks.json
    algorithms: [ES256]
tokens:
  leeway: 30s
delegation:
  max_depth: 2
routes:
  - name: calendar-read
    methods: [GET]
    path_prefix: /calendar
    require_scopes: [calendar:read]
  - name: calendar-write
    methods: [POST, PUT, DELETE]
    path_prefix: /calendar
    require_scopes: [calendar:write]
default: deny
"#;

/// Prints a line; a closed stdout (e.g. `| head`) ends the output quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($arg)*);
    };
}

/// One request of the scenario.
struct Step {
    title: &'static str,
    caller: &'static str,
    chain: Vec<&'static str>,
    method: &'static str,
    path: &'static str,
    token: String,
    /// `"allow"` or the expected reason code.
    expected: &'static str,
}

/// A temporary directory removed on drop.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_request(certificate: &IssuedCertificate, step: &Step) -> CheckRequest {
    envoy_check_request(
        &certificate.url_encoded(),
        step.method,
        "calendar.example.org",
        step.path,
        &step.token,
    )
}

/// The decision as the client sees it: `("allow", chain header)` or `(code, status)`.
fn read_answer(response: &CheckResponse) -> (String, String) {
    let code = response.status.as_ref().map_or(-1, |status| status.code);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == 0 => {
            let chain = ok
                .headers
                .iter()
                .filter_map(|option| option.header.as_ref())
                .find(|header| header.key == CHAIN_HEADER)
                .map(|header| header.value.clone())
                .unwrap_or_default();
            ("allow".into(), chain)
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let reason = serde_json::from_str::<serde_json::Value>(&denied.body)
                .ok()
                .and_then(|body| body["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            let status = denied.status.as_ref().map_or(0, |s| s.code);
            (reason, status.to_string())
        }
        _ => ("unexpected response".into(), String::new()),
    }
}

fn short(id: &str) -> &str {
    id.strip_prefix("spiffe://example.org").unwrap_or(id)
}

fn build_steps(issuer: &DevIssuer, now: i64) -> Result<Vec<Step>, Box<dyn Error>> {
    let claims = |subject: &str, audience: &str, scope: &str, actors: &[&str], lifetime: i64| {
        delegated_claims(ISSUER, subject, audience, scope, actors, now, lifetime)
    };
    let mut direct = claims(ORCHESTRATOR, LOCAL, "calendar:read", &[], 300);
    direct["client_id"] = json!(ORCHESTRATOR);
    let mut user_token = claims("user:alice", LOCAL, "calendar:read", &[], 300);
    user_token["client_id"] = json!(ORCHESTRATOR);
    let delegated = issuer.sign(&claims(
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        300,
    ))?;
    let email_audience = claims(
        "user:alice",
        "spiffe://example.org/tool/email",
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        300,
    );
    let too_deep = claims(
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, PLANNER, SCHEDULER],
        300,
    );
    let mut expired = claims(
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        300,
    );
    expired["exp"] = json!(now - 120);
    expired["iat"] = json!(now - 420);
    expired["nbf"] = json!(now - 420);
    let step =
        |title, caller, chain: &[&'static str], method, path, token: String, expected| Step {
            title,
            caller,
            chain: chain.to_vec(),
            method,
            path,
            token,
            expected,
        };
    let orchestrator_chain = [ORCHESTRATOR, SCHEDULER];
    Ok(vec![
        step(
            "direct call, own token",
            ORCHESTRATOR,
            &[],
            "GET",
            "/calendar/events?day=mon",
            issuer.sign(&direct)?,
            "allow",
        ),
        step(
            "user -> orchestrator -> scheduler",
            SCHEDULER,
            &orchestrator_chain,
            "GET",
            "/calendar/events?day=mon",
            delegated.clone(),
            "allow",
        ),
        step(
            "ATTACK forwarded user token",
            SCHEDULER,
            &[],
            "GET",
            "/calendar/events",
            issuer.sign(&user_token)?,
            "token_not_bound_to_caller",
        ),
        step(
            "ATTACK replay by a prior hop",
            ORCHESTRATOR,
            &orchestrator_chain,
            "GET",
            "/calendar/events",
            delegated.clone(),
            "actor_mismatch",
        ),
        step(
            "ATTACK token for another tool",
            SCHEDULER,
            &orchestrator_chain,
            "GET",
            "/calendar/events",
            issuer.sign(&email_audience)?,
            "token_audience_mismatch",
        ),
        step(
            "ATTACK delegation too deep",
            SCHEDULER,
            &[ORCHESTRATOR, PLANNER, SCHEDULER],
            "GET",
            "/calendar/events",
            issuer.sign(&too_deep)?,
            "delegation_too_deep",
        ),
        step(
            "ATTACK write with a read scope",
            SCHEDULER,
            &orchestrator_chain,
            "POST",
            "/calendar/events",
            delegated.clone(),
            "insufficient_scope",
        ),
        step(
            "ATTACK foreign trust domain",
            MALLORY,
            &orchestrator_chain,
            "GET",
            "/calendar/events",
            delegated,
            "caller_trust_domain_denied",
        ),
        step(
            "ATTACK expired token",
            SCHEDULER,
            &orchestrator_chain,
            "GET",
            "/calendar/events",
            issuer.sign(&expired)?,
            "token_expired",
        ),
    ])
}

/// After the orchestrator is revoked: its branch is cut, the scheduler's own work goes on.
fn revocation_steps(issuer: &DevIssuer, now: i64) -> Result<Vec<Step>, Box<dyn Error>> {
    let delegated = issuer.sign(&delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        now,
        300,
    ))?;
    let mut own = delegated_claims(ISSUER, SCHEDULER, LOCAL, "calendar:read", &[], now, 300);
    own["client_id"] = json!(SCHEDULER);
    Ok(vec![
        Step {
            title: "REVOKED branch via orchestrator",
            caller: SCHEDULER,
            chain: vec![ORCHESTRATOR, SCHEDULER],
            method: "GET",
            path: "/calendar/events",
            token: delegated,
            expected: "token_revoked",
        },
        Step {
            title: "crew keeps running: scheduler",
            caller: SCHEDULER,
            chain: vec![],
            method: "GET",
            path: "/calendar/events",
            token: issuer.sign(&own)?,
            expected: "allow",
        },
    ])
}

/// Runs the demo; `Ok(true)` when every answer was the expected one. With `audit`, every
/// decision is also written there as the audit log writes it.
pub async fn run(audit: Option<&std::path::Path>) -> Result<bool, Box<dyn Error>> {
    let scratch = ScratchDir(std::env::temp_dir().join(format!(
        "actguard-demo-{}-{}",
        std::process::id(),
        unix_now()
    )));
    std::fs::create_dir_all(&scratch.0)?;
    let ca = DevCa::new(TRUST_DOMAIN)?;
    let foreign_ca = DevCa::new("evil.example")?;
    let issuer = DevIssuer::generate(ISSUER, "demo-key-1", DevAlgorithm::Es256)?;
    std::fs::write(scratch.0.join("jwks.json"), issuer.jwks().to_string())?;
    let config = Config::from_yaml(CONFIG, &scratch.0)?;
    let listener = Listener::bind(&config.listen.grpc).await?;
    let address = listener.describe();
    let (log, writer) = match audit {
        Some(file) => {
            let (log, writer) = crate::serve::audit::AuditLog::start(&crate::config::AuditConfig {
                output: crate::config::AuditOutput::File(file.to_owned()),
                ..Default::default()
            })
            .map_err(|error| format!("--audit {}: {error}", file.display()))?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    let shared = match log {
        Some(log) => crate::decision::Shared {
            audit: Arc::new(log),
            ..Default::default()
        },
        None => crate::decision::Shared::default(),
    };
    let authorizer = Arc::new(Authorizer::with_shared(config.decision, shared));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grpc::run(listener, Arc::clone(&authorizer), async {
        let _ = stopped.await;
    }));

    say!("actguard demo: the real ext_authz server on {address}, protecting {LOCAL}");
    say!(
        "  trust domain {TRUST_DOMAIN}; issuer {ISSUER}; delegation.max_depth 2; ids shown without spiffe://{TRUST_DOMAIN}"
    );
    say!();
    let mut client = AuthorizationClient::connect(format!("http://{address}")).await?;
    let mut all_expected = true;
    let mut steps = build_steps(&issuer, unix_now())?;
    let revocation_starts = steps.len();
    steps.extend(revocation_steps(&issuer, unix_now())?);
    for (index, step) in steps.iter().enumerate() {
        if index == revocation_starts {
            // The incident: a runaway orchestrator. Cut every chain through it, nothing else.
            authorizer.revocations().revoke(Revocation {
                kind: RevocationKind::Actor,
                value: ORCHESTRATOR.to_owned(),
                created_at: unix_now(),
                expires_at: Some(unix_now() + 3600),
            })?;
            say!(
                "    -- revoke actor /agent/orchestrator for 1h (what `actguard admin revoke --actor … --for 1h` does) --"
            );
        }
        let certificate = if step.caller == MALLORY {
            foreign_ca.issue_svid(step.caller)?
        } else {
            ca.issue_svid(step.caller)?
        };
        let response = client
            .check(check_request(&certificate, step))
            .await?
            .into_inner();
        let (decision, detail) = read_answer(&response);
        let chain = if step.chain.is_empty() {
            "(direct)".to_owned()
        } else {
            step.chain
                .iter()
                .map(|id| short(id))
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        let verdict = if decision == "allow" {
            format!("ALLOW  x-actguard-chain={detail:?}")
        } else {
            format!("DENY {detail} {decision}")
        };
        let ok = decision == step.expected;
        all_expected &= ok;
        say!(
            "{:>2}. {:<34} caller={:<22} chain={:<58} {:<4} {:<26} => {}{}",
            index + 1,
            step.title,
            short(step.caller),
            chain,
            step.method,
            step.path,
            verdict,
            if ok { "" } else { "   <-- UNEXPECTED" }
        );
    }
    let _ = stop.send(());
    server.await??;
    if let Some(writer) = writer {
        writer.finish();
    }
    say!();
    if all_expected {
        say!(
            "every answer was the expected one: delegated calls pass, the attacks are denied with stable reason codes,"
        );
        say!(
            "and revoking one agent cut every chain through it while the rest of the crew kept working."
        );
    } else {
        say!("some answers were not the expected ones (marked UNEXPECTED).");
    }
    Ok(all_expected)
}

/// `actguard demo`: exit 0 when every step of the scenario answered as expected.
pub fn main(audit: Option<std::path::PathBuf>) -> std::process::ExitCode {
    use std::process::ExitCode;
    match super::runtime().block_on(run(audit.as_deref())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}
