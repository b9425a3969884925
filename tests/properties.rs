//! Properties over generated inputs (proptest): path normalisation keeps its guarantees and is
//! idempotent; a cached decision equals an uncached one; the delegation chain is read in the
//! order DESIGN.md gives it (outermost `act` = current actor = the caller).

use actguard::config::Config;
use actguard::decision::Authorizer;
use actguard::decision::facts::RequestFacts;
use actguard::decision::path::normalize;
use actguard::decision::reason::DenyReason;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims, envoy_check_request};
use proptest::prelude::*;
use std::sync::OnceLock;

const LOCAL: &str = "spiffe://example.org/tool/calendar";
const ISSUER: &str = "https://sts.example.org";
const NOW: i64 = 1_800_000_000;
const AGENTS: [&str; 5] = [
    "spiffe://example.org/agent/orchestrator",
    "spiffe://example.org/agent/scheduler",
    "spiffe://example.org/agent/planner",
    "spiffe://example.org/agent/mailer",
    "spiffe://partner.example/agent/broker",
];

/// Pieces paths are made of: the ones normalisation treats specially and plain ones.
fn path_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", "a", "calendar", "admin", ".", "..", "%2e", "%2E%2e", "%2F", "%5c", "\\", ";x",
        ";", "%3B", "%3F", "%23", "%3f", "%61", "%7e", "%25", "%", "%zz", "?q=1", "#f", "é",
        "%C3%A9", "%00", "..;", "x..", ".a",
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(path_piece(), 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn normalized_paths_keep_the_guarantees_and_normalizing_again_changes_nothing(raw in path()) {
        if let Ok(normal) = normalize(&raw) {
            prop_assert!(normal.starts_with('/'), "{normal:?}");
            prop_assert!(!normal.contains(['?', '#', '\\', ';']), "{normal:?}");
            prop_assert!(!normal.contains("//"), "{normal:?}");
            for segment in normal.split('/').skip(1) {
                prop_assert!(segment != "." && segment != "..", "{normal:?}");
            }
            let upper = normal.to_ascii_uppercase();
            for encoded in ["%2F", "%5C", "%2E", "%25", "%3B", "%3F", "%23"] {
                prop_assert!(!upper.contains(encoded), "{normal:?} holds {encoded}");
            }
            let again = normalize(&normal);
            prop_assert_eq!(again.as_deref(), Ok(&*normal));
        }
    }
}

struct World {
    issuer: DevIssuer,
    /// A certificate per agent, URL-encoded as Envoy reports it.
    certificates: Vec<String>,
    cached: Authorizer,
    uncached: Authorizer,
    _scratch: tempfile::TempDir,
}

fn config(extra: &str) -> String {
    format!(
        r#"
identity: {{local: "{LOCAL}", trust_domains: [example.org, partner.example]}}
issuers: [{{issuer: "{ISSUER}", jwks_file: jwks.json, algorithms: [ES256]}}]
delegation:
  max_depth: 3
  edges:
    - {{from: "user:*", to: "*"}}
    - {{from: "spiffe://example.org/agent/orchestrator", to: "spiffe://example.org/agent/*"}}
    - {{from: "spiffe://example.org/agent/scheduler", to: "spiffe://example.org/agent/planner"}}
    - {{from: "spiffe://partner.example/agent/broker", to: "spiffe://example.org/agent/orchestrator"}}
routes:
  - {{name: read, methods: [GET], path_prefix: /calendar, require_scopes: [calendar:read]}}
  - {{name: admin, path_prefix: /admin, require_scopes: [admin], allow_callers: ["spiffe://example.org/agent/orchestrator"]}}
  - {{name: hooks, path_prefix: /hooks, max_depth: 1}}
default: deny
{extra}
"#
    )
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let scratch = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::generate(ISSUER, "k1", DevAlgorithm::Es256).unwrap();
        std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
        let load = |extra: &str| Config::from_yaml(&config(extra), scratch.path()).unwrap();
        let ca = DevCa::new("example.org").unwrap();
        let certificates = AGENTS
            .iter()
            .map(|agent| ca.issue_svid(agent).unwrap().url_encoded())
            .collect();
        World {
            cached: Authorizer::new(load("").decision),
            uncached: Authorizer::new(load("cache: {max_entries: 0}").decision),
            issuer,
            certificates,
            _scratch: scratch,
        }
    })
}

/// A request: caller index, chain (agent indices, delegation order), scope, method, path.
fn request() -> impl Strategy<Value = (usize, Vec<usize>, &'static str, &'static str, &'static str)>
{
    (
        0..AGENTS.len(),
        prop::collection::vec(0..AGENTS.len(), 0..5),
        prop::sample::select(vec!["calendar:read", "admin", "calendar:read admin", ""]),
        prop::sample::select(vec!["GET", "POST"]),
        prop::sample::select(vec![
            "/calendar/events",
            "/admin/users",
            "/hooks/x",
            "/other",
        ]),
    )
}

fn decide(
    authorizer: &Authorizer,
    caller: usize,
    token: &str,
    method: &str,
    path: &str,
) -> Result<Vec<String>, DenyReason> {
    let check = envoy_check_request(
        &world().certificates[caller],
        method,
        "calendar.example.org",
        path,
        token,
    );
    let facts = RequestFacts::from_check_request(&check);
    authorizer
        .evaluate(&facts, NOW)
        .outcome
        .map(|grant| grant.chain().map(str::to_owned).collect())
        .map_err(|denial| denial.reason)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn a_cached_decision_equals_an_uncached_one((caller, chain, scope, method, path) in request()) {
        let world = world();
        let actors: Vec<&str> = chain.iter().map(|&index| AGENTS[index]).collect();
        let claims = delegated_claims(ISSUER, "user:alice", LOCAL, scope, &actors, NOW - 60, 600);
        let token = world.issuer.sign(&claims).unwrap();
        let uncached = decide(&world.uncached, caller, &token, method, path);
        let miss = decide(&world.cached, caller, &token, method, path);
        let hit = decide(&world.cached, caller, &token, method, path);
        prop_assert_eq!(&miss, &uncached);
        prop_assert_eq!(&hit, &uncached);
    }

    #[test]
    fn the_chain_is_read_outermost_first_and_ends_at_the_caller(
        chain in prop::sample::subsequence((0..AGENTS.len()).collect::<Vec<_>>(), 2..=3)
            .prop_shuffle(),
    ) {
        let world = world();
        let actors: Vec<&str> = chain.iter().map(|&index| AGENTS[index]).collect();
        let claims = delegated_claims(ISSUER, "user:alice", LOCAL, "calendar:read", &actors, NOW - 60, 600);
        let token = world.issuer.sign(&claims).unwrap();
        let current = *chain.last().unwrap();
        // Only the current actor (the last delegate, the outermost `act`) may present it.
        for (caller, agent) in AGENTS.iter().enumerate() {
            let answer = decide(&world.uncached, caller, &token, "GET", "/calendar/events");
            if caller != current {
                prop_assert_eq!(answer, Err(DenyReason::ActorMismatch), "caller {}", agent);
            } else if let Ok(reported) = &answer {
                // Allowed chains are reported first delegate → current actor, as given.
                prop_assert_eq!(reported, &actors.iter().map(|a| a.to_string()).collect::<Vec<_>>());
            }
        }
        // Edges are directed: a chain allowed one way round is refused reversed, whenever the
        // reverse uses an edge the configuration does not have.
        let forward = decide(&world.uncached, current, &token, "GET", "/calendar/events");
        let mut reversed_actors = actors.clone();
        reversed_actors.reverse();
        let reversed_claims = delegated_claims(ISSUER, "user:alice", LOCAL, "calendar:read", &reversed_actors, NOW - 60, 600);
        let reversed_token = world.issuer.sign(&reversed_claims).unwrap();
        let reversed = decide(&world.uncached, chain[0], &reversed_token, "GET", "/calendar/events");
        if forward.is_ok() {
            prop_assert_eq!(reversed, Err(DenyReason::DelegationEdgeDenied), "{:?} reversed", actors);
        }
    }
}

/// The generated chain property checks allowed chains only when the configuration allows some:
/// this one is, and its reverse is not.
#[test]
fn a_known_chain_is_allowed_forward_and_refused_reversed() {
    let world = world();
    let (orchestrator, scheduler) = (0, 1);
    let forward = [AGENTS[orchestrator], AGENTS[scheduler]];
    let token = |actors: &[&str]| {
        let claims = delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            actors,
            NOW - 60,
            600,
        );
        world.issuer.sign(&claims).unwrap()
    };
    assert_eq!(
        decide(
            &world.uncached,
            scheduler,
            &token(&forward),
            "GET",
            "/calendar/events"
        ),
        Ok(forward.iter().map(|a| a.to_string()).collect())
    );
    let reversed = [AGENTS[scheduler], AGENTS[orchestrator]];
    assert_eq!(
        decide(
            &world.uncached,
            orchestrator,
            &token(&reversed),
            "GET",
            "/calendar/events"
        ),
        Err(DenyReason::DelegationEdgeDenied)
    );
}
