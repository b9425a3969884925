//! Budgets as deployed (issue #17): one `actguard serve` process (the release binary, audit to
//! a discarded stdout, admin off) charging a real redis-server on loopback, beside a second
//! process with the same configuration but no `budgets`. One cached token; requests to a
//! budgeted route (`/search`, per_branch and per_session far above what the run spends) and
//! to an unbudgeted one (`/calendar`) with the same rules.
//!
//! Measures, alternating rounds: sequential p50/p99 of a budgeted check against the same
//! check on the unbudgeted route of the same process (the overhead of the charge: one Redis
//! script round trip); throughput with 64 concurrent streams on each; and the unbudgeted
//! route's throughput on the process with `budgets` against the process without (routes
//! without a budget never touch Redis: the target is ≥ 0.98×).
//!
//! Writes target/budgets-bench.md (and its section of docs/benchmarks.md).

#[allow(dead_code)]
mod common;
#[path = "../tests/common/envoy.rs"]
#[allow(dead_code)]
mod envoy;
#[path = "../tests/common/redis.rs"]
#[allow(dead_code)]
mod redis;

use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use common::{Client, ISSUER, LOCAL, ORCHESTRATOR, SCHEDULER};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADING: &str = "## Budgets on Redis: what a charge adds to a check";

/// One `actguard serve` process and a client on its socket; killed when dropped.
struct Sidecar {
    child: Child,
    client: Client,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sidecar(dir: &Path, binary: &Path, name: &str, budgets: Option<&str>) -> Sidecar {
    let socket = dir.join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&socket);
    let ledger = budgets.map_or_else(String::new, |url| {
        format!("budgets:\n  redis:\n    url: {url}\n")
    });
    let budget = if budgets.is_some() {
        "\n    budget: {per_branch: 1000000000000, per_session: 1000000000000}"
    } else {
        ""
    };
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "listen: {{grpc: \"unix:{}\", admin: \"off\"}}\n\
             identity: {{local: \"{LOCAL}\", trust_domains: [example.org]}}\n\
             issuers: [{{issuer: \"{ISSUER}\", jwks_file: jwks.json, algorithms: [ES256]}}]\n\
             routes:\n  - name: search\n    path_prefix: /search\n    require_scopes: [calendar:read]{budget}\n  - name: calendar-read\n    path_prefix: /calendar\n    require_scopes: [calendar:read]\n{ledger}",
            socket.display()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        assert!(Instant::now() < deadline, "sidecar {name} did not start");
        if socket.exists()
            && let Ok(channel) =
                actguard::cli::admin::unix_channel(&socket.display().to_string()).await
        {
            break Client::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Sidecar { child, client }
}

fn request(
    certificate: &str,
    token: &str,
    path: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    actguard::devkit::envoy_check_request(certificate, "GET", "calendar.example.org", path, token)
}

/// Latencies of `count` sequential checks of `request` (each must allow).
async fn sequential(
    client: &mut Client,
    request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
    count: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let code = client.check(request.clone()).await.expect("a check");
        latencies.push(started.elapsed());
        assert_eq!(code, 0, "the benchmark's checks are allowed");
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Allowed checks per second over one socket, 64 in flight, for `slice`.
async fn throughput(
    sidecar: &Sidecar,
    request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
    slice: Duration,
) -> f64 {
    let stop = Instant::now() + slice;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut client = sidecar.client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop {
                if matches!(client.check(request.clone()).await, Ok(0)) {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / slice.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "k1", DevAlgorithm::Es256).unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let ca = DevCa::new("example.org").unwrap();
    let scheduler = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let binary: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/actguard");
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release (make bench does)"
    );
    let redis = redis::RedisServer::start();
    let mut claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        actguard::decision::token::unix_now(),
        3600,
    );
    claims["sid"] = "bench-session".into();
    let token = issuer.sign(&claims).unwrap();
    let budgeted = request(&scheduler, &token, "/search/q");
    let plain = request(&scheduler, &token, "/calendar/events");
    let mut with = sidecar(dir.path(), &binary, "with", Some(&redis.url())).await;
    let without = sidecar(dir.path(), &binary, "without", None).await;
    // Warm: the token cached, the script loaded, connections up.
    for _ in 0..200 {
        assert_eq!(with.client.check(budgeted.clone()).await.unwrap(), 0);
        assert_eq!(with.client.check(plain.clone()).await.unwrap(), 0);
        let mut client = without.client.clone();
        assert_eq!(client.check(plain.clone()).await.unwrap(), 0);
    }
    let rounds = 5;
    let (mut p50, mut p99, mut base_p50, mut base_p99) = (vec![], vec![], vec![], vec![]);
    let (mut charged_rate, mut plain_rate, mut unbudgeted_rate, mut no_budgets_rate) =
        (vec![], vec![], vec![], vec![]);
    let slice = Duration::from_secs(1);
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let charged = sequential(&mut with.client, &budgeted, 2000).await;
        let base = sequential(&mut with.client, &plain, 2000).await;
        p50.push(micros(percentile(&charged, 0.5)) - micros(percentile(&base, 0.5)));
        p99.push(micros(percentile(&charged, 0.99)) - micros(percentile(&base, 0.99)));
        base_p50.push(micros(percentile(&base, 0.5)));
        base_p99.push(micros(percentile(&base, 0.99)));
        charged_rate.push(throughput(&with, &budgeted, slice).await);
        plain_rate.push(throughput(&with, &plain, slice).await);
        let unbudgeted = throughput(&with, &plain, slice).await;
        let no_budgets = throughput(&without, &plain, slice).await;
        unbudgeted_rate.push(unbudgeted);
        no_budgets_rate.push(no_budgets);
    }
    let spent = redis
        .command(&["KEYS", "actguard:budget:*"])
        .map(|key| redis.command(&["HGET", &key, "s"]).unwrap_or_default())
        .unwrap_or_default();
    drop(with);
    drop(without);
    let ratio = median(
        unbudgeted_rate
            .iter()
            .zip(&no_budgets_rate)
            .map(|(a, b)| a / b)
            .collect(),
    );
    let (p50, p99) = (median(p50), median(p99));
    let mut section = format!(
        "{HEADING}\n\nMeasured {} (unix time). Two release-binary sidecars on Unix sockets (audit to a discarded stdout, admin off), one with `budgets` on a loopback redis-server 7 (Debian's), one without; our client on the same 2 cores; one cached token. {rounds} rounds alternating: 2000 sequential checks of the budgeted route, then of the unbudgeted route of the same process (overhead = the difference of their percentiles), then 1-second slices of 64 concurrent streams; medians over the rounds. Units charged in the run: {spent}.\n\n",
        actguard::decision::token::unix_now(),
    );
    let _ = writeln!(
        section,
        "| measure | value | target | |\n|---|---|---|---|\n| sequential p50 overhead of a charge | {p50:.0} µs (unbudgeted p50 {:.0} µs) | ≤ 150 µs | {} |\n| sequential p99 overhead of a charge | {p99:.0} µs (unbudgeted p99 {:.0} µs) | ≤ 1000 µs | {} |\n| checks/s, 64 streams: budgeted route / unbudgeted route, same process | {:.0} / {:.0} = {:.2}× | reported | |\n| checks/s, 64 streams, unbudgeted route: process with `budgets` / without | {:.0} / {:.0} = {ratio:.3}× | ≥ 0.98× | {} |\n",
        median(base_p50),
        verdict(p50 <= 150.0),
        median(base_p99),
        verdict(p99 <= 1000.0),
        median(charged_rate.clone()),
        median(plain_rate.clone()),
        median(charged_rate) / median(plain_rate),
        median(unbudgeted_rate),
        median(no_budgets_rate),
        verdict(ratio >= 0.98),
    );
    let _ = writeln!(
        section,
        "Reading: a charge is one `EVALSHA` round trip to Redis on loopback, awaited after the decision (the decision itself is unchanged); its throughput is bounded by Redis and by the one multiplexed connection each sidecar keeps to it. The unbudgeted row holds that routes without a budget never wait for Redis. What every allow pays for budgets whether or not they are configured — the `x-actguard-branch` header and `branch`/`session`/`cost` metadata — is in the as-deployed and criterion numbers above."
    );
    println!("{section}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(root.join("target/budgets-bench.md"), &section).unwrap();
    common::put_section(HEADING, &section);
}
