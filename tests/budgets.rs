//! Budgets per execution branch and per session (issue #17) against a real redis-server
//! (Debian's 7.x): siblings spend their own budgets, the session cap stops them all, a claim
//! can only lower a budget, concurrency never overshoots, and a Redis that is down, slow or
//! failing fails closed (or, opted in, open and counted). Routes without a budget never touch
//! Redis.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::nats::GapProxy;
use common::redis::RedisServer;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

struct World {
    issuer: DevIssuer,
    ca: DevCa,
    scratch: tempfile::TempDir,
}

/// The calendar-read route with `budget` (YAML lines under it) and `cost`.
fn budgeted(budget: &str, cost: u64) -> String {
    format!(
        "    require_scopes: [calendar:read]\n    cost: {cost}\n    budget:\n{}",
        budget
            .lines()
            .map(|line| format!("      {line}\n"))
            .collect::<String>()
    )
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

    /// The shared test configuration, calendar-read budgeted by `budget`, the ledger at `url`
    /// (`budgets_extra`: more lines under `budgets`), decisions audited to `audit.jsonl`.
    fn yaml(&self, url: &str, budget: &str, cost: u64, budgets_extra: &str) -> String {
        config_yaml(
            "  leeway: 30s\n  branch_claim: execution_branch_id",
            &format!(
                "audit:\n  output: {}\n  sample_allows: 1.0\nbudgets:\n  redis:\n    url: {url}\n    timeout: 50ms\n{budgets_extra}",
                self.dir().join("audit.jsonl").display()
            ),
        )
        .replacen(
            "    require_scopes: [calendar:read]\n",
            &budgeted(budget, cost),
            1,
        )
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0",
        )
    }

    async fn sidecar(&self, url: &str, budget: &str) -> Sidecar {
        self.sidecar_with(url, budget, 1, "").await
    }

    async fn sidecar_with(&self, url: &str, budget: &str, cost: u64, extra: &str) -> Sidecar {
        let yaml = self.yaml(url, budget, cost, extra);
        runtime::start(Config::from_yaml(&yaml, self.dir()).unwrap())
            .await
            .unwrap()
    }

    /// A token of `user:alice` in session `sid` through `actors` (the scheduler last), with
    /// extra `claims`.
    fn token(&self, sid: &str, actors: &[&str], claims: Value) -> String {
        let mut all = delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            actors,
            unix_now(),
            300,
        );
        all["sid"] = json!(sid);
        for (name, value) in claims.as_object().into_iter().flatten() {
            all[name] = value.clone();
        }
        self.issuer.sign(&all).unwrap()
    }

    fn request(
        &self,
        path: &str,
        token: &str,
    ) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
        let certificate = self.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        RequestSpec::get(path)
            .certificate(&certificate)
            .bearer(token)
            .build()
    }

    /// The answer for GET `path` with `token` from the scheduler; `Err` with the gRPC status
    /// when the check failed (Envoy denies).
    async fn check(
        &self,
        sidecar: &Sidecar,
        path: &str,
        token: &str,
    ) -> Result<Answer, tonic::Code> {
        let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        match client.check(self.request(path, token)).await {
            Ok(answer) => Ok(Answer::from(answer.into_inner())),
            Err(status) => Err(status.code()),
        }
    }

    /// The reason for GET /calendar/events (`UNAVAILABLE` for that gRPC error), and which
    /// budget a `budget_exhausted` names.
    async fn decide(&self, sidecar: &Sidecar, token: &str) -> String {
        match self.check(sidecar, "/calendar/events", token).await {
            Ok(answer) if answer.reason == "budget_exhausted" => {
                assert_eq!(answer.http_status, 429);
                assert_eq!(answer.grpc_code, tonic::Code::ResourceExhausted as i32);
                assert!(
                    answer.raw_header("retry-after").is_none(),
                    "a branch budget does not come back by waiting"
                );
                format!(
                    "budget_exhausted:{}",
                    answer.body["budget"].as_str().unwrap()
                )
            }
            Ok(answer) => answer.reason,
            Err(tonic::Code::Unavailable) => "UNAVAILABLE".into(),
            Err(code) => panic!("unexpected {code:?}"),
        }
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

trait RawHeader {
    fn raw_header(&self, name: &str) -> Option<String>;
}

impl RawHeader for Answer {
    /// A header of a denied response (`DeniedHttpResponse.headers`).
    fn raw_header(&self, name: &str) -> Option<String> {
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        match &self.raw.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied
                .headers
                .iter()
                .filter_map(|option| option.header.as_ref())
                .find(|header| header.key.eq_ignore_ascii_case(name))
                .map(|header| header.value.clone()),
            _ => None,
        }
    }
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
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
    (raw[9..12].parse().unwrap(), raw)
}

async fn readyz(sidecar: &Sidecar) -> (u16, String) {
    http_get(sidecar.admin_address.unwrap(), "/readyz").await
}

/// Polls `condition` until it holds or `within` passes.
async fn until(within: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The `EVAL`/`EVALSHA` calls Redis has run (its commandstats).
fn script_calls(redis: &RedisServer) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_eval"))
        .filter_map(|line| {
            line.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

const A: &[&str] = &[ORCHESTRATOR, SCHEDULER];
const B: &[&str] = &[PLANNER, SCHEDULER];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_sibling_branches_spend_their_own_budgets_and_the_session_cap_stops_them_all() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world
        .sidecar(&redis.url(), "per_branch: 3\nper_session: 5")
        .await;
    let (a, b) = (
        world.token("s1", A, json!({})),
        world.token("s1", B, json!({})),
    );
    for _ in 0..3 {
        assert_eq!(world.decide(&sidecar, &a).await, "allow");
    }
    // Branch A spent: it alone is cut.
    assert_eq!(world.decide(&sidecar, &a).await, "budget_exhausted:branch");
    assert_eq!(world.decide(&sidecar, &b).await, "allow");
    assert_eq!(world.decide(&sidecar, &b).await, "allow");
    // 5 units spent in the session: every branch of it stops, a new one too.
    assert_eq!(world.decide(&sidecar, &b).await, "budget_exhausted:session");
    let c = world.token("s1", &[ORCHESTRATOR, PLANNER, SCHEDULER], json!({}));
    assert_eq!(world.decide(&sidecar, &c).await, "budget_exhausted:session");
    // Another session of the same user is untouched.
    let other = world.token("s2", A, json!({}));
    assert_eq!(world.decide(&sidecar, &other).await, "allow");
    // The denials are audited with the budget they found spent, and never charged: the
    // session spent exactly its cap.
    sidecar.shutdown().await.unwrap();
    let lines = world.audit_lines();
    let exhausted: Vec<&Value> = lines
        .iter()
        .filter(|line| line["reason"] == "budget_exhausted")
        .collect();
    assert_eq!(exhausted.len(), 3);
    assert_eq!(exhausted[0]["budget"], "branch");
    assert_eq!(exhausted[1]["budget"], "session");
    let keys = redis.command(&["KEYS", "actguard:budget:*:s1"]).unwrap();
    assert_eq!(redis.command(&["HGET", &keys, "s"]).as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_an_allow_names_its_branch_session_and_cost_for_the_upstream_and_envoy() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world
        .sidecar_with(&redis.url(), "per_branch: 100", 7, "")
        .await;
    let named = world.token("s1", A, json!({"execution_branch_id": "br-research-1"}));
    let answer = world
        .check(&sidecar, "/calendar/events", &named)
        .await
        .unwrap();
    assert!(answer.is_allow());
    assert_eq!(answer.header("x-actguard-branch"), Some("br-research-1"));
    let metadata = &answer.raw.dynamic_metadata.as_ref().unwrap().fields;
    let text = |key: &str| {
        use envoy_types::pb::google::protobuf::value::Kind;
        match metadata.get(key).and_then(|value| value.kind.as_ref()) {
            Some(Kind::StringValue(text)) => text.clone(),
            other => panic!("{key}: {other:?}"),
        }
    };
    assert_eq!(text("branch"), "br-research-1");
    assert_eq!(text("cost"), "7");
    assert!(text("session").starts_with("b-") && text("session").len() == 24);
    // Charged 7 units, to that branch.
    let key = redis.command(&["KEYS", "actguard:budget:*:s1"]).unwrap();
    assert_eq!(
        redis.command(&["HGET", &key, "b:br-research-1"]).as_deref(),
        Some("7")
    );
    // A client-sent x-actguard-branch never reaches the upstream.
    let certificate = world.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let spoofed = RequestSpec::get("/calendar/events")
        .certificate(&certificate)
        .bearer(&named)
        .header("x-actguard-branch", "br-someone-else")
        .build();
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    let answer = Answer::from(client.check(spoofed).await.unwrap().into_inner());
    assert_eq!(answer.header("x-actguard-branch"), Some("br-research-1"));
    sidecar.shutdown().await.unwrap();
    let audit = world.audit_lines();
    assert_eq!(audit.last().unwrap()["branch"], "br-research-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_budget_claim_lowers_the_branch_budget_never_raises_it_and_a_malformed_one_is_token_malformed()
 {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world
        .sidecar(&redis.url(), "per_branch: 3\nclaim: budget")
        .await;
    let lowered = world.token("s1", A, json!({"budget": 1}));
    assert_eq!(world.decide(&sidecar, &lowered).await, "allow");
    assert_eq!(
        world.decide(&sidecar, &lowered).await,
        "budget_exhausted:branch"
    );
    let raised = world.token("s2", A, json!({"budget": 1000}));
    for _ in 0..3 {
        assert_eq!(world.decide(&sidecar, &raised).await, "allow");
    }
    assert_eq!(
        world.decide(&sidecar, &raised).await,
        "budget_exhausted:branch"
    );
    for bad in [json!(-1), json!(2.5), json!("5"), json!(null), json!([1])] {
        let malformed = world.token("s3", A, json!({ "budget": bad }));
        assert_eq!(
            world.decide(&sidecar, &malformed).await,
            "token_malformed",
            "{bad}"
        );
    }
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_sixteen_concurrent_clients_on_one_branch_get_exactly_the_budget() {
    let redis = RedisServer::start();
    let world = std::sync::Arc::new(World::new());
    let sidecar = std::sync::Arc::new(world.sidecar(&redis.url(), "per_branch: 40").await);
    let token = world.token("s1", A, json!({}));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (world, sidecar, token) = (world.clone(), sidecar.clone(), token.clone());
            tokio::spawn(async move {
                let mut client =
                    AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
                        .await
                        .unwrap();
                let mut allowed = 0;
                for _ in 0..10 {
                    let request = world.request("/calendar/events", &token);
                    let answer = Answer::from(client.check(request).await.unwrap().into_inner());
                    match answer.reason.as_str() {
                        "allow" => allowed += 1,
                        "budget_exhausted" => {}
                        other => panic!("{other}"),
                    }
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for client in clients {
        allowed += client.await.unwrap();
    }
    assert_eq!(allowed, 40, "160 requests on a budget of 40");
    let key = redis.command(&["KEYS", "actguard:budget:*:s1"]).unwrap();
    assert_eq!(redis.command(&["HGET", &key, "s"]).as_deref(), Some("40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_redis_down_fails_closed_and_not_ready_then_recovers() {
    let mut redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 100").await;
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    assert!(
        until(Duration::from_secs(5), async || readyz(&sidecar).await.0
            == 200)
        .await
    );
    redis.stop();
    assert_eq!(world.decide(&sidecar, &token).await, "UNAVAILABLE");
    let (status, body) = readyz(&sidecar).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("budgets"), "{body}");
    // Routes without a budget go on deciding: they never touch Redis.
    let direct = world.token("s1", &[SCHEDULER], json!({}));
    let unbudgeted = world.check(&sidecar, "/hooks/x", &direct).await.unwrap();
    assert!(unbudgeted.is_allow(), "{}", unbudgeted.reason);
    redis.restart();
    assert!(
        until(Duration::from_secs(10), async || {
            world.decide(&sidecar, &token).await == "allow"
        })
        .await,
        "recovers when Redis is back"
    );
    assert!(
        until(Duration::from_secs(5), async || readyz(&sidecar).await.0
            == 200)
        .await
    );
    // The failures were counted and audited.
    let (_, metrics) = http_get(sidecar.admin_address.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("actguard_budget_errors_total{request=\"denied\"}"),
        "{metrics}"
    );
    sidecar.shutdown().await.unwrap();
    let lines = world.audit_lines();
    assert!(
        lines
            .iter()
            .any(|line| line["reason"] == "budgets_unavailable" && line["budget"] == "unavailable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_redis_slower_than_the_timeout_fails_closed_and_recovers_when_it_speeds_up() {
    let redis = RedisServer::start();
    let proxy = GapProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let world = World::new();
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let sidecar = world.sidecar(&url, "per_branch: 100").await;
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    // Slower than budgets.redis.timeout (50 ms): not an answer.
    proxy.slow_down(Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(world.decide(&sidecar, &token).await, "UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    proxy.slow_down(Duration::ZERO);
    assert!(
        until(Duration::from_secs(10), async || {
            world.decide(&sidecar, &token).await == "allow"
        })
        .await
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_redis_answering_errors_fails_closed() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 100").await;
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    // Out of memory: Redis refuses every script that may write.
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    assert_eq!(world.decide(&sidecar, &token).await, "UNAVAILABLE");
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_on_error_allow_lets_budgeted_requests_through_uncharged_counted_and_audited() {
    let mut redis = RedisServer::start();
    let world = World::new();
    let sidecar = world
        .sidecar_with(&redis.url(), "per_branch: 1", 1, "  on_error: allow\n")
        .await;
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    redis.stop();
    // Over budget, but the ledger cannot say so: allowed, as the configuration chose.
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    // Ready: failing open keeps the pod in service (the warning says so).
    assert_eq!(readyz(&sidecar).await.0, 200);
    let (_, metrics) = http_get(sidecar.admin_address.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("actguard_budget_errors_total{request=\"allowed\"} 2"),
        "{metrics}"
    );
    sidecar.shutdown().await.unwrap();
    let lines = world.audit_lines();
    let unchecked: Vec<&Value> = lines
        .iter()
        .filter(|line| line["budget"] == "unavailable")
        .collect();
    assert_eq!(unchecked.len(), 2);
    assert!(unchecked.iter().all(|line| line["decision"] == "allow"));
    let yaml = world.yaml(&redis.url(), "per_branch: 1", 1, "  on_error: allow\n");
    let warnings = Config::from_yaml(&yaml, world.dir()).unwrap().warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("budgets.on_error: allow"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_routes_without_a_budget_never_touch_redis() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 100").await;
    let token = world.token("s1", A, json!({}));
    let before = script_calls(&redis);
    let direct = world.token("s1", &[SCHEDULER], json!({}));
    for _ in 0..20 {
        let answer = world.check(&sidecar, "/hooks/x", &direct).await.unwrap();
        assert!(answer.is_allow(), "{}", answer.reason);
    }
    assert_eq!(
        script_calls(&redis),
        before,
        "no script ran for unbudgeted routes"
    );
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some("0"));
    // A denied request on a budgeted route spends nothing either.
    let other_caller = world.ca.issue_svid(PLANNER).unwrap().url_encoded();
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    let denied = RequestSpec::get("/calendar/events")
        .certificate(&other_caller)
        .bearer(&token)
        .build();
    let answer = Answer::from(client.check(denied).await.unwrap().into_inner());
    assert_eq!(answer.reason, "actor_mismatch");
    assert_eq!(script_calls(&redis), before);
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    // (The first charge runs EVALSHA, finds no script, loads it and runs it again.)
    assert!(
        script_calls(&redis) > before,
        "the counter reads what is charged"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_counters_expire_with_the_token_and_never_after_max_window() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 100").await;
    // The token lives 300 s and is accepted 30 s longer (leeway): its session's counters live
    // that long plus a minute for clock skew, no longer.
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    let key = redis.command(&["KEYS", "actguard:budget:*:s1"]).unwrap();
    let ttl: i64 = redis.command(&["TTL", &key]).unwrap().parse().unwrap();
    assert!((330..=390).contains(&ttl), "ttl {ttl}");
    sidecar.shutdown().await.unwrap();
    // With max_window 2s the counters go after 2 s although the token lives on.
    let sidecar = world
        .sidecar_with(&redis.url(), "per_branch: 1", 1, "  max_window: 2s\n")
        .await;
    let token = world.token("s2", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    assert_eq!(
        world.decide(&sidecar, &token).await,
        "budget_exhausted:branch"
    );
    let key = redis.command(&["KEYS", "actguard:budget:*:s2"]).unwrap();
    let ttl: i64 = redis.command(&["TTL", &key]).unwrap().parse().unwrap();
    assert!((1..=2).contains(&ttl), "ttl {ttl}");
    sidecar.shutdown().await.unwrap();
    assert!(
        until(Duration::from_secs(4), async || {
            redis.command(&["EXISTS", &key]).as_deref() == Some("0")
        })
        .await,
        "the counter expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_token_in_its_leeway_keeps_its_spent_budget() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 1").await;
    // Past exp by 5 s, still accepted (leeway 30 s): its counters must outlive it as long as
    // it is accepted, or the spent branch would start again at zero.
    let mut claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        A,
        unix_now() - 100,
        95,
    );
    claims["sid"] = json!("s-late");
    let late = world.issuer.sign(&claims).unwrap();
    assert_eq!(world.decide(&sidecar, &late).await, "allow");
    assert_eq!(
        world.decide(&sidecar, &late).await,
        "budget_exhausted:branch"
    );
    let key = redis
        .command(&["KEYS", "actguard:budget:*:s-late"])
        .unwrap();
    let ttl: i64 = redis.command(&["TTL", &key]).unwrap().parse().unwrap();
    assert!(
        ttl >= 60,
        "ttl {ttl}: the counters expire before the token stops being accepted"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        world.decide(&sidecar, &late).await,
        "budget_exhausted:branch"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_budgeted_route_requires_a_session() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 1").await;
    // Without sid every token would be a session of its own, and a new token a new budget.
    let mut claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        A,
        unix_now(),
        300,
    );
    for jti in ["t-1", "t-2"] {
        claims["jti"] = json!(jti);
        let token = world.issuer.sign(&claims).unwrap();
        assert_eq!(world.decide(&sidecar, &token).await, "session_required");
    }
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some("0"));
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_revoked_branch_is_denied_before_any_charge() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world.sidecar(&redis.url(), "per_branch: 100").await;
    let token = world.token("s1", A, json!({"execution_branch_id": "br-loop"}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    let before = script_calls(&redis);
    sidecar
        .authorizer
        .current()
        .revocations()
        .revoke(actguard::decision::revocation::Revocation {
            kind: actguard::decision::revocation::RevocationKind::Branch,
            value: "br-loop".into(),
            created_at: unix_now(),
            expires_at: None,
        })
        .unwrap();
    assert_eq!(world.decide(&sidecar, &token).await, "token_revoked");
    assert_eq!(
        script_calls(&redis),
        before,
        "a revoked branch is never charged"
    );
    sidecar.shutdown().await.unwrap();
}

/// `actguard admin budgets …` against `redis`: its output, or its error.
fn admin_budgets(redis: &RedisServer, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["admin", "budgets", "--redis", &redis.url()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_budgets_shows_what_each_branch_spent_and_reset_gives_a_branch_its_budget_back() {
    let redis = RedisServer::start();
    let world = World::new();
    let sidecar = world
        .sidecar(&redis.url(), "per_branch: 2\nper_session: 10")
        .await;
    let looping = world.token("wf-7", A, json!({"execution_branch_id": "br-loop"}));
    let sibling = world.token("wf-7", B, json!({"execution_branch_id": "br-ok"}));
    for _ in 0..2 {
        assert_eq!(world.decide(&sidecar, &looping).await, "allow");
    }
    assert_eq!(world.decide(&sidecar, &sibling).await, "allow");
    assert_eq!(
        world.decide(&sidecar, &looping).await,
        "budget_exhausted:branch"
    );
    let shown = admin_budgets(&redis, &["--sid", "wf-7"]).unwrap();
    assert!(shown.contains("3 of 10 used, 7 remaining"), "{shown}");
    assert!(
        shown.contains("branch br-loop: 2 of 2 used, 0 remaining"),
        "{shown}"
    );
    assert!(
        shown.contains("branch br-ok: 1 of 2 used, 1 remaining"),
        "{shown}"
    );
    let one = admin_budgets(&redis, &["--branch", "br-ok"]).unwrap();
    assert!(one.contains("br-ok") && !one.contains("br-loop"), "{one}");
    // A glob character in a session id matches only itself.
    let none = admin_budgets(&redis, &["--sid", "wf-*"]).unwrap();
    assert!(none.contains("no budget has been charged"), "{none}");
    // Reset the looping branch: it may spend again, and its units are given back.
    admin_budgets(&redis, &["--branch", "br-loop", "--reset"]).unwrap();
    assert_eq!(world.decide(&sidecar, &looping).await, "allow");
    let shown = admin_budgets(&redis, &["--sid", "wf-7"]).unwrap();
    assert!(shown.contains("2 of 10 used"), "{shown}");
    admin_budgets(&redis, &["--sid", "wf-7", "--reset"]).unwrap();
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some("0"));
    let unreachable = admin_budgets(&RedisServer::stopped(), &["--sid", "wf-7"]).unwrap_err();
    assert!(unreachable.contains("cannot reach Redis"), "{unreachable}");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_charge_is_recorded_even_when_the_caller_gives_up_first() {
    let redis = RedisServer::start();
    let proxy = GapProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let world = World::new();
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let sidecar = world.sidecar(&url, "per_branch: 100").await;
    let token = world.token("s1", A, json!({}));
    assert_eq!(world.decide(&sidecar, &token).await, "allow");
    // Redis answers in ~30 ms (within budgets.redis.timeout); the caller waits 10 ms.
    proxy.slow_down(Duration::from_millis(15));
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    let mut request = tonic::Request::new(world.request("/calendar/events", &token));
    request.set_timeout(Duration::from_millis(10));
    assert!(client.check(request).await.is_err(), "the caller gave up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.slow_down(Duration::ZERO);
    sidecar.shutdown().await.unwrap();
    let key = redis.command(&["KEYS", "actguard:budget:*:s1"]).unwrap();
    let charged: usize = redis
        .command(&["HGET", &key, "s"])
        .unwrap()
        .parse()
        .unwrap();
    let recorded = world
        .audit_lines()
        .iter()
        .filter(|line| line["route"] == "calendar-read")
        .count();
    assert_eq!(charged, 2);
    assert_eq!(recorded, charged, "every charge made is in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_what_a_budgeted_request_would_be_charged_without_contacting_redis() {
    let world = World::new();
    // Nothing listens on this Redis: explain never contacts it.
    let yaml = world.yaml(
        &RedisServer::stopped().url(),
        "per_branch: 200\nper_session: 2000",
        3,
        "",
    );
    let config = world.dir().join("explain.yaml");
    std::fs::write(&config, yaml).unwrap();
    let token = world.token("s1", A, json!({"execution_branch_id": "br-7"}));
    let request = world.dir().join("request.json");
    std::fs::write(
        &request,
        json!({
            "caller": SCHEDULER, "method": "GET", "host": "calendar.example.org",
            "path": "/calendar/events", "headers": {"Authorization": format!("Bearer {token}")}
        })
        .to_string(),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["explain", "--config"])
        .arg(&config)
        .arg("--request")
        .arg(&request)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("would charge 3 unit(s) to branch br-7 (limit 200)")
            && text.contains("(limit 2000); not checked: explain does not contact Redis"),
        "{text}"
    );
    assert!(text.contains("decision: ALLOW"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_http_mode_charges_budgets_as_grpc_mode_does() {
    let redis = RedisServer::start();
    let world = World::new();
    let yaml = world
        .yaml(&redis.url(), "per_branch: 1", 1, "")
        .replace(
            "  admin: 127.0.0.1:0",
            "  admin: 127.0.0.1:0\n  http: 127.0.0.1:0",
        )
        .replace(
            "  trust_domains: [example.org, partner.example]",
            "  trust_domains: [example.org, partner.example]\n  sources: [certificate, principal, xfcc]",
        );
    let sidecar = runtime::start(Config::from_yaml(&yaml, world.dir()).unwrap())
        .await
        .unwrap();
    let token = world.token("s1", A, json!({}));
    let check = async || {
        reqwest::Client::new()
            .get(format!(
                "http://{}/calendar/events",
                sidecar.http_address.unwrap()
            ))
            .header("host", "calendar.example.org")
            .header("x-forwarded-client-cert", format!("URI={SCHEDULER}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    let allowed = check().await;
    assert_eq!(allowed.status(), 200);
    assert!(
        allowed
            .headers()
            .get("x-actguard-branch")
            .is_some_and(|branch| branch.to_str().unwrap().starts_with("b-"))
    );
    let spent = check().await;
    assert_eq!(spent.status(), 429);
    let body: Value = serde_json::from_str(&spent.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "budget_exhausted");
    assert_eq!(body["budget"], "branch");
    sidecar.shutdown().await.unwrap();
}
