//! Shadow mode (issue #18): `routes[].enforce: false` runs the whole decision, audits it with
//! `"enforced": false`, counts its denials in `actguard_shadow_denies_total`, and answers
//! them with an allow that carries no identity. Faults stay faults; other routes enforce.

mod common;

use actguard::config::Config;
use actguard::decision::reason::{Denial, DenyReason};
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

struct World {
    issuer: DevIssuer,
    ca: DevCa,
    scratch: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
        std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
        World {
            issuer,
            ca: DevCa::new("example.org").unwrap(),
            scratch,
        }
    }

    /// The shared configuration with calendar-read in shadow mode, audited to a file.
    fn yaml(&self) -> String {
        config_yaml(
            "  leeway: 30s",
            &format!(
                "audit:\n  output: {}\n  sample_allows: 1.0",
                self.scratch.path().join("audit.jsonl").display()
            ),
        )
        .replacen(
            "    require_scopes: [calendar:read]\n",
            "    require_scopes: [calendar:read]\n    enforce: false\n",
            1,
        )
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0",
        )
    }

    async fn sidecar(&self) -> Sidecar {
        runtime::start(Config::from_yaml(&self.yaml(), self.scratch.path()).unwrap())
            .await
            .unwrap()
    }

    fn token(&self, actors: &[&str]) -> String {
        let claims = delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            actors,
            unix_now(),
            300,
        );
        self.issuer.sign(&claims).unwrap()
    }

    async fn check(&self, sidecar: &Sidecar, caller: &str, spec: RequestSpec) -> Answer {
        let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        let certificate = self.ca.issue_svid(caller).unwrap().url_encoded();
        let request = spec.certificate(&certificate).build();
        Answer::from(client.check(request).await.unwrap().into_inner())
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.scratch.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_shadow_route_never_denies_always_logs_and_grants_no_identity() {
    let world = World::new();
    let sidecar = world.sidecar().await;
    let token = world.token(&[ORCHESTRATOR, SCHEDULER]);
    // Allowed as it would be when enforced: with the identity headers.
    let allowed = world
        .check(
            &sidecar,
            SCHEDULER,
            RequestSpec::get("/calendar/events").bearer(&token),
        )
        .await;
    assert!(allowed.is_allow());
    assert_eq!(allowed.header("x-actguard-actor"), Some(SCHEDULER));
    // The orchestrator replaying the scheduler's token: actor_mismatch, answered with an
    // allow that establishes nothing, removes what the client sent under our prefix and the
    // token.
    let replayed = world
        .check(
            &sidecar,
            ORCHESTRATOR,
            RequestSpec::get("/calendar/events")
                .bearer(&token)
                .header("x-actguard-subject", "user:mallory"),
        )
        .await;
    assert_eq!(replayed.grpc_code, 0, "{}", replayed.reason);
    assert!(replayed.headers.is_empty(), "{:?}", replayed.headers);
    for name in [
        "x-actguard-subject",
        "x-actguard-actor",
        "x-actguard-branch",
        "authorization",
    ] {
        assert!(
            replayed
                .headers_to_remove
                .iter()
                .any(|removed| removed == name),
            "{name}: {:?}",
            replayed.headers_to_remove
        );
    }
    let metadata = &replayed.raw.dynamic_metadata.as_ref().unwrap().fields;
    assert!(format!("{:?}", metadata.get("shadow_deny")).contains("actor_mismatch"));
    // No token at all: allowed too.
    let anonymous = world
        .check(&sidecar, SCHEDULER, RequestSpec::get("/calendar/events"))
        .await;
    assert_eq!(anonymous.grpc_code, 0);
    // An enforced route of the same configuration still denies.
    let enforced = world
        .check(
            &sidecar,
            ORCHESTRATOR,
            RequestSpec::new("POST", "/calendar/events").bearer(&token),
        )
        .await;
    assert_eq!(enforced.reason, "actor_mismatch");
    // Metered apart: the shadow denials by route and reason.
    let metrics = http_get(sidecar.admin_address.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(
            "actguard_shadow_denies_total{route=\"calendar-read\",reason=\"actor_mismatch\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "actguard_shadow_denies_total{route=\"calendar-read\",reason=\"token_missing\"} 1"
        ),
        "{metrics}"
    );
    // Readiness names the shadow routes.
    let ready = http_get(sidecar.admin_address.unwrap(), "/readyz").await;
    assert!(
        ready.contains(r#""shadow_routes":["calendar-read"]"#),
        "{ready}"
    );
    sidecar.shutdown().await.unwrap();
    // Every decision of the shadow route is audited with "enforced": false, the denials with
    // their real reason; the enforced route's line has no such member.
    let lines = world.audit_lines();
    let shadow: Vec<&Value> = lines
        .iter()
        .filter(|line| line["route"] == "calendar-read")
        .collect();
    assert_eq!(shadow.len(), 3);
    assert!(shadow.iter().all(|line| line["enforced"] == json!(false)));
    assert_eq!(shadow[0]["decision"], "allow");
    assert_eq!(shadow[1]["decision"], "deny");
    assert_eq!(shadow[1]["reason"], "actor_mismatch");
    assert_eq!(shadow[2]["reason"], "token_missing");
    let write = lines
        .iter()
        .find(|line| line["route"] == "calendar-write")
        .unwrap();
    assert!(write.get("enforced").is_none(), "{write}");
    // check-config warns about every shadow route.
    let config = Config::from_yaml(&world.yaml(), world.scratch.path()).unwrap();
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("route calendar-read: enforce: false"))
    );
}

#[test]
fn rule_faults_on_a_shadow_route_are_still_faults() {
    for (reason, shadowed) in [
        (DenyReason::IssuerKeysUnavailable, false),
        (DenyReason::RevocationsUnavailable, false),
        (DenyReason::BudgetsUnavailable, false),
        (DenyReason::TokenSignatureInvalid, true),
    ] {
        let evaluation = actguard::decision::Evaluation {
            outcome: Err(Denial::new(reason, "")),
            caller: None,
            route: Some("r".into()),
            route_index: Some(0),
            token: None,
            revoked: None,
            mcp: None,
            charge: None,
            budget: None,
            enforced: false,
            forward_token: false,
        };
        assert_eq!(evaluation.shadowed().is_some(), shadowed, "{reason:?}");
    }
}

#[test]
fn rule_a_shadow_route_cannot_carry_a_budget() {
    let world = World::new();
    let yaml = world.yaml().replacen(
        "    enforce: false\n",
        "    enforce: false\n    budget: {per_branch: 5}\n",
        1,
    ) + "budgets:\n  redis:\n    url: redis://127.0.0.1:6379\n";
    let errors = Config::from_yaml(&yaml, world.scratch.path()).unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("routes[0].enforce: cannot be false on a route with a budget"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_http_mode_shadows_a_denial_without_identity_too() {
    let world = World::new();
    // Its own route name: the shadow-deny counter is process-wide, shared with the gRPC test.
    let yaml = world
        .yaml()
        .replace("name: calendar-read", "name: calendar-read-http")
        .replace(
            "  admin: 127.0.0.1:0",
            "  admin: 127.0.0.1:0\n  http: 127.0.0.1:0",
        )
        .replace(
            "  trust_domains: [example.org, partner.example]",
            "  trust_domains: [example.org, partner.example]\n  sources: [certificate, principal, xfcc]",
        );
    let sidecar = runtime::start(Config::from_yaml(&yaml, world.scratch.path()).unwrap())
        .await
        .unwrap();
    let token = world.token(&[ORCHESTRATOR, SCHEDULER]);
    let replayed = reqwest::Client::new()
        .get(format!(
            "http://{}/calendar/events",
            sidecar.http_address.unwrap()
        ))
        .header("host", "calendar.example.org")
        .header("x-forwarded-client-cert", format!("URI={ORCHESTRATOR}"))
        .header("x-actguard-chain", "forged")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    let headers = replayed.headers();
    assert_eq!(headers["x-actguard-actor"], "");
    assert_eq!(headers["x-actguard-subject"], "");
    let removed = headers["x-envoy-auth-headers-to-remove"].to_str().unwrap();
    for name in ["authorization", "x-actguard-chain", "x-actguard-subject"] {
        assert!(removed.split(',').any(|r| r == name), "{name}: {removed}");
    }
    sidecar.shutdown().await.unwrap();
    let lines = world.audit_lines();
    assert_eq!(lines.last().unwrap()["reason"], "actor_mismatch");
    assert_eq!(lines.last().unwrap()["enforced"], json!(false));
}
