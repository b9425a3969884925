//! `actguard policy suggest` (issue #18) on the audit log of a real sidecar serving a
//! generated multi-agent workload: the suggested configuration passes `check-config`, a real
//! sidecar on it allows every request that was allowed, and denies held-out requests the
//! original configuration would have let through.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::path::Path;
use std::process::Command;

const RESEARCHER: &str = "spiffe://example.org/agent/researcher";

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

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A sidecar on `config`; its admin listener on a free port, so tests run side by side.
    async fn sidecar(&self, config: &Path) -> Sidecar {
        let mut config = Config::from_file(config).unwrap();
        config.listen.admin = Some(actguard::config::ListenAddress::Tcp(
            "127.0.0.1:0".parse().unwrap(),
        ));
        runtime::start(config).await.unwrap()
    }

    /// The reason for `method path` by the chain's last actor, `user:alice` through `chain`.
    async fn decide(&self, sidecar: &Sidecar, method: &str, path: &str, chain: &[&str]) -> String {
        self.decide_scoped(sidecar, method, path, chain, "calendar:read calendar:write")
            .await
    }

    /// [`World::decide`] with a token carrying `scope`.
    async fn decide_scoped(
        &self,
        sidecar: &Sidecar,
        method: &str,
        path: &str,
        chain: &[&str],
        scope: &str,
    ) -> String {
        let claims = delegated_claims(ISSUER, "user:alice", LOCAL, scope, chain, unix_now(), 300);
        self.check(sidecar, method, path, chain.last().unwrap(), &claims)
            .await
    }

    /// A direct call by `caller`: no `act`, the token issued to it (`client_id`).
    async fn decide_direct(
        &self,
        sidecar: &Sidecar,
        method: &str,
        path: &str,
        caller: &str,
    ) -> String {
        let mut claims = delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            &[],
            unix_now(),
            300,
        );
        claims["client_id"] = caller.into();
        self.check(sidecar, method, path, caller, &claims).await
    }

    async fn check(
        &self,
        sidecar: &Sidecar,
        method: &str,
        path: &str,
        caller: &str,
        claims: &serde_json::Value,
    ) -> String {
        let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        let token = self.issuer.sign(claims).unwrap();
        let certificate = self.ca.issue_svid(caller).unwrap().url_encoded();
        let request = RequestSpec::new(method, path)
            .certificate(&certificate)
            .bearer(&token)
            .build();
        Answer::from(client.check(request).await.unwrap().into_inner()).reason
    }
}

/// `actguard policy suggest --audit AUDIT --config CONFIG`, which must succeed: its output.
fn suggest(audit: &Path, config: &Path) -> String {
    common::observe::succeed(
        common::observe::actguard()
            .args(["policy", "suggest", "--audit"])
            .arg(audit)
            .arg("--config")
            .arg(config),
    )
}

/// The workload: who calls what through whom.
const WORKLOAD: &[(&str, &str, &[&str])] = &[
    ("GET", "/calendar/events", &[ORCHESTRATOR, SCHEDULER]),
    ("GET", "/calendar/events", &[ORCHESTRATOR]),
    ("GET", "/calendar/week", &[PLANNER, SCHEDULER]),
    ("POST", "/calendar/events", &[ORCHESTRATOR, PLANNER]),
    ("GET", "/hooks/daily", &[RESEARCHER]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_suggested_policy_allows_what_was_allowed_and_denies_a_held_out_forgery() {
    let world = World::new();
    let audit = world.dir().join("audit.jsonl");
    let original = world.dir().join("config.yaml");
    std::fs::write(
        &original,
        config_yaml(
            "  leeway: 30s",
            &format!(
                "audit:\n  output: {}\n  sample_allows: 1.0",
                audit.display()
            ),
        ),
    )
    .unwrap();
    // The held-out requests: allowed by the original configuration (no edges, depth 3).
    let held_out: &[(&str, &str, &[&str], &str)] = &[
        // A hop never seen (the researcher delegating to the scheduler).
        (
            "GET",
            "/calendar/events",
            &[RESEARCHER, SCHEDULER],
            "delegation_edge_denied",
        ),
        // A chain longer than any seen.
        (
            "GET",
            "/calendar/events",
            &[ORCHESTRATOR, PLANNER, SCHEDULER],
            "delegation_too_deep",
        ),
        // A caller never seen on that route, through hops that were seen.
        (
            "POST",
            "/calendar/events",
            &[ORCHESTRATOR],
            "caller_not_allowed",
        ),
    ];
    // A token carrying more scope than any chain through those actors carried.
    let wider = (
        "GET",
        "/calendar/events",
        &[ORCHESTRATOR, SCHEDULER][..],
        "calendar:read calendar:write admin",
    );
    let sidecar = world.sidecar(&original).await;
    for _ in 0..3 {
        for (method, path, chain) in WORKLOAD {
            assert_eq!(world.decide(&sidecar, method, path, chain).await, "allow");
        }
    }
    // One denied request is in the log too: it must not widen the suggestion.
    assert_eq!(
        world
            .decide(&sidecar, "GET", "/admin/x", &[ORCHESTRATOR])
            .await,
        "insufficient_scope"
    );
    sidecar.shutdown().await.unwrap();
    let text = suggest(&audit, &original);
    assert!(!text.contains("eyJ"), "a token in the suggestion");
    assert!(
        text.contains("# routes[calendar-read].allow_callers"),
        "{text}"
    );
    assert!(
        text.contains("# routes[admin]: no allowed decision seen"),
        "{text}"
    );
    assert!(text.contains("# delegation.ceilings: none -> "), "{text}");
    assert!(text.contains("# Diff against "), "{text}");
    assert!(
        text.contains("# + ") && text.contains("allow_callers"),
        "{text}"
    );
    // Over its own log, the suggestion denies nothing that was allowed, and the one denial
    // (insufficient_scope) is not one of the checks it changes.
    assert!(
        text.contains("#   allowed decisions it would deny: 0\n"),
        "{text}"
    );
    assert!(
        text.contains("#   denied decisions it would no longer deny for their reason (later steps not evaluated): 0\n"),
        "{text}"
    );
    // check-config accepts it unchanged.
    let suggested_file = common::observe::assert_check_config_accepts(world.dir(), &text);
    // Under the original configuration the held-out requests pass...
    let sidecar = world.sidecar(&original).await;
    for (method, path, chain, _) in held_out {
        assert_eq!(world.decide(&sidecar, method, path, chain).await, "allow");
    }
    let (method, path, chain, scope) = wider;
    assert_eq!(
        world
            .decide_scoped(&sidecar, method, path, chain, scope)
            .await,
        "allow"
    );
    sidecar.shutdown().await.unwrap();
    // ...under the suggestion, every allowed request still passes and they do not.
    let sidecar = world.sidecar(&suggested_file).await;
    for (method, path, chain) in WORKLOAD {
        assert_eq!(
            world.decide(&sidecar, method, path, chain).await,
            "allow",
            "{method} {path} {chain:?}\n{text}"
        );
    }
    for (method, path, chain, reason) in held_out {
        assert_eq!(
            world.decide(&sidecar, method, path, chain).await,
            *reason,
            "{method} {path} {chain:?}\n{text}"
        );
    }
    assert_eq!(
        world
            .decide_scoped(&sidecar, method, path, chain, scope)
            .await,
        "delegation_ceiling_exceeded",
        "{text}"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_the_suggestion_names_the_denies_a_family_would_have_let_through() {
    let world = World::new();
    let audit = world.dir().join("audit.jsonl");
    let original = world.dir().join("config.yaml");
    let agents: Vec<String> = (1..=4)
        .map(|n| format!("spiffe://example.org/agent/a{n}"))
        .collect();
    // Three agents are allowed on calendar-read by name; a fourth of their family is not.
    let yaml = config_yaml(
        "  leeway: 30s",
        &format!(
            "audit:\n  output: {}\n  sample_allows: 1.0",
            audit.display()
        ),
    )
    .replace(
        "    require_scopes: [calendar:read]\n",
        &format!(
            "    require_scopes: [calendar:read]\n    allow_callers: [{}, {}, {}]\n",
            agents[0], agents[1], agents[2]
        ),
    );
    std::fs::write(&original, yaml).unwrap();
    let sidecar = world.sidecar(&original).await;
    // Direct calls (no delegation, so no edge applies to them).
    for agent in &agents[..3] {
        assert_eq!(
            world
                .decide_direct(&sidecar, "GET", "/calendar/events", agent)
                .await,
            "allow"
        );
    }
    assert_eq!(
        world
            .decide_direct(&sidecar, "GET", "/calendar/events", &agents[3])
            .await,
        "caller_not_allowed"
    );
    sidecar.shutdown().await.unwrap();
    let text = suggest(&audit, &original);
    // Three callers under one parent make a family, which admits the fourth: said, with the
    // route and the reason that had denied it.
    assert!(text.contains("spiffe://example.org/agent/*"), "{text}");
    assert!(
        text.contains("#   denied decisions it would no longer deny for their reason (later steps not evaluated): 1\n#     calendar-read: 1 x caller_not_allowed\n"),
        "{text}"
    );
    assert!(
        text.contains("#   allowed decisions it would deny: 0\n"),
        "{text}"
    );
    // The webhook route (max_depth 1, never seen) is lowered to the new global limit (0), so
    // check-config still accepts the suggestion.
    assert!(
        text.contains("# routes[webhook]: no allowed decision seen; max_depth 1 -> 0"),
        "{text}"
    );
    common::observe::assert_check_config_accepts(world.dir(), &text);
}

#[test]
fn without_allowed_decisions_there_is_nothing_to_suggest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(
        &log,
        r#"{"time":"2026-12-04T00:00:00.000Z","caller":"spiffe://e.org/a","subject":"user:x","chain":[],"route":"r","decision":"deny","reason":"no_route"}"#,
    )
    .unwrap();
    common::observe::fail_saying(
        common::observe::actguard()
            .args(["policy", "suggest", "--audit"])
            .arg(&log),
        "no allowed decision",
    );
}

#[test]
fn rule_text_from_the_log_cannot_become_live_yaml_and_a_pipe_is_refused() {
    let world = World::new();
    let original = world.dir().join("config.yaml");
    std::fs::write(&original, config_yaml("  leeway: 30s", "")).unwrap();
    let line = |route: &str, subject: &str| {
        serde_json::json!({"time": "2026-12-04T00:00:00.000Z", "v": 2, "caller": ORCHESTRATOR,
            "subject": subject, "chain": [ORCHESTRATOR], "scopes": ["calendar:read"],
            "route": route, "decision": "allow"})
        .to_string()
    };
    let audit = world.dir().join("forged.jsonl");
    std::fs::write(
        &audit,
        [
            line("calendar-read", "user:alice"),
            // A forged route name that would end a comment line and turn the audit log off.
            line("x\naudit:\n  output: off\n#", "user:alice"),
            // A subject with a line break and a bidirectional override.
            line("calendar-read", "user:\u{202e}a\nlimits: {}"),
        ]
        .join("\n"),
    )
    .unwrap();
    let text = suggest(&audit, &original);
    assert!(!text.contains("output: off"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
    assert!(
        text.lines()
            .all(|line| !line.starts_with("audit:") && !line.starts_with("limits:")),
        "{text}"
    );
    assert!(
        text.contains("Not learned from: 1 allowed decision(s)"),
        "{text}"
    );
    common::observe::assert_check_config_accepts(world.dir(), &text);
    // Through a pipe the second pass (the impact) would read nothing: refused, not 0.
    common::observe::fail_saying(
        Command::new("sh").arg("-c").arg(format!(
            "cat {} | {} policy suggest --audit /dev/stdin --config {}",
            audit.display(),
            env!("CARGO_BIN_EXE_actguard"),
            original.display()
        )),
        "not a pipe",
    );
}
