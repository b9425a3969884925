//! The shipped nginx integration, run for real: Debian's nginx (auth_request) from
//! `deploy/nginx/nginx.conf` in front of the tool, actguard's HTTP mode configured as
//! `deploy/nginx/actguard.yaml` says (`http_request: original_headers`, caller from XFCC),
//! HTTPS clients presenting agents' X509-SVIDs. nginx — not the client — must set every header
//! actguard trusts.

mod common;

use common::nginx::Nginx;
use common::upstream::Tool;
use common::world::{Mode, World, get, url};
use common::{ORCHESTRATOR, SCHEDULER};
use serde_json::Value;

/// nginx in front of the tool with actguard's HTTP mode behind it.
struct Stack {
    world: World,
    _sidecar: actguard::serve::runtime::Sidecar,
    tool: Tool,
    nginx: Nginx,
}

impl Stack {
    async fn start() -> Stack {
        let world = World::new();
        let sidecar = world.actguard(Mode::HttpOriginal, "").await;
        let tool = Tool::start().await;
        let nginx = Nginx::start(world.path(), sidecar.http_address.unwrap(), tool.port).await;
        Stack {
            world,
            _sidecar: sidecar,
            tool,
            nginx,
        }
    }

    fn client(&self, caller: &str) -> reqwest::Client {
        self.world.client(Some(caller), self.nginx.port)
    }

    fn url(&self, path: &str) -> String {
        url(self.nginx.port, path)
    }
}

#[test]
fn the_shipped_actguard_config_is_the_one_tested() {
    // The test's actguard (Mode::HttpOriginal) is the shipped deploy/nginx/actguard.yaml in
    // the settings nginx depends on.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/actguard.yaml"),
    )
    .unwrap();
    let config: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(config["listen"]["http_request"], "original_headers");
    assert_eq!(config["identity"]["sources"], serde_json::json!(["xfcc"]));
    assert!(
        config["listen"]["admin"]
            .as_str()
            .unwrap()
            .starts_with("unix:")
    );
    let nginx = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx.conf"),
    )
    .unwrap();
    let http = config["listen"]["http"].as_str().unwrap();
    assert!(
        nginx.contains(&format!("server {http};")),
        "nginx.conf reaches actguard's listen.http {http}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_through_nginx_carries_only_what_nginx_and_actguard_set() {
    let stack = Stack::start().await;
    let token = stack
        .world
        .token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let response = stack
        .client(SCHEDULER)
        .get(stack.url("/calendar/events?day=mon"))
        .bearer_auth(&token)
        .header("x-actguard-subject", "user:mallory")
        .header("x-actguard-chain", "spiffe://example.org/agent/forged")
        .header(
            "x-forwarded-client-cert",
            "URI=spiffe://example.org/agent/orchestrator",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", stack.nginx.log_text());
    let received = stack.tool.take();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.target, "/calendar/events?day=mon");
    assert_eq!(request.headers_named("x-actguard-subject"), ["user:alice"]);
    assert_eq!(request.headers_named("x-actguard-actor"), [SCHEDULER]);
    assert_eq!(
        request.headers_named("x-actguard-chain"),
        [format!("{ORCHESTRATOR},{SCHEDULER}").as_str()]
    );
    assert_eq!(request.header("authorization"), None, "token not forwarded");
    assert_eq!(request.header("x-forwarded-client-cert"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_token_route_keeps_authorization_through_nginx() {
    let stack = Stack::start().await;
    let token = stack.world.token(&[SCHEDULER], "");
    let seen = get(
        &stack.client(SCHEDULER),
        &stack.url("/hooks/run"),
        Some(&token),
    )
    .await;
    assert_eq!(seen.status, 200);
    let received = stack.tool.take();
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_describe_the_request_or_the_caller_to_actguard() {
    let stack = Stack::start().await;
    // A token good for /calendar, presented for /admin while claiming (in every header
    // family actguard could read) that the request is a GET of /calendar by the scheduler.
    let token = stack.world.token(&[SCHEDULER], "calendar:read");
    let scheduler = stack.client(SCHEDULER);
    let forged = scheduler
        .get(stack.url("/admin/users"))
        .bearer_auth(&token)
        .header("x-forwarded-uri", "/calendar/events")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-host", "calendar.example.org")
        .header("x-original-uri", "/calendar/events")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "the forged description was believed");
    // The orchestrator presenting the scheduler's token, claiming to be the scheduler in XFCC.
    let orchestrator = stack.client(ORCHESTRATOR);
    let replay = orchestrator
        .get(stack.url("/calendar/events"))
        .bearer_auth(&token)
        .header(
            "x-forwarded-client-cert",
            format!("URI={SCHEDULER}").as_str(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 403, "a client-sent XFCC was believed");
    assert!(stack.tool.take().is_empty());
}

/// (case, path, token, status, what `www-authenticate` must contain)
type NginxDeny<'a> = (&'a str, &'a str, Option<&'a str>, u16, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_through_nginx_keep_their_status_and_challenge() {
    let stack = Stack::start().await;
    let scheduler = stack.client(SCHEDULER);
    let good = stack
        .world
        .token(&[ORCHESTRATOR, SCHEDULER], "calendar:read");
    let forwarded = stack.world.token(&[ORCHESTRATOR], "calendar:read");
    // nginx's auth_request passes 401 (with WWW-Authenticate) and 403 on; the body is nginx's.
    let cases: [NginxDeny; 5] = [
        (
            "no token",
            "/calendar/events",
            None,
            401,
            Some("Bearer realm="),
        ),
        (
            "garbage token",
            "/calendar/events",
            Some("not.a.jwt"),
            401,
            Some("error=\"invalid_token\""),
        ),
        ("no route", "/billing", Some(&good), 403, None),
        ("scope missing", "/admin/users", Some(&good), 403, None),
        (
            "forwarded token",
            "/calendar/events",
            Some(&forwarded),
            403,
            None,
        ),
    ];
    for (case, path, token, status, challenge) in cases {
        let seen = get(&scheduler, &stack.url(path), token).await;
        assert_eq!(seen.status, status, "{case}");
        let www = seen
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok());
        if let Some(expected) = challenge {
            assert!(
                www.is_some_and(|value| value.contains(expected)),
                "{case}: {www:?}"
            );
        }
    }
    let anonymous = stack.world.client(None, stack.nginx.port);
    let refused = anonymous
        .get(stack.url("/calendar/events"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    // nginx answers a missing client certificate with 400 after the handshake.
    assert_eq!(refused.status(), 400);
    assert!(
        stack.tool.take().is_empty(),
        "no denied request reached the tool"
    );
}
