//! JWKS over HTTPS against a real TLS server with a test CA: rotation, unknown-kid storm,
//! issuer down (stale keys until max_stale, then fail closed), malformed JWKS ignored, discovery.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::CertificateParams;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the test issuer serves, and what it was asked.
#[derive(Default)]
struct Served {
    jwks: String,
    discovery: String,
    /// Answer 500 to everything.
    down: bool,
    jwks_hits: usize,
}

struct JwksServer {
    url: String,
    served: Arc<Mutex<Served>>,
}

/// An HTTPS server (rustls, certificate from `ca`) answering `/jwks` and discovery.
async fn jwks_server(ca: &DevCa) -> JwksServer {
    let certificate = ca
        .issue(CertificateParams::new(vec!["localhost".to_owned()]).unwrap())
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let served = Arc::new(Mutex::new(Served::default()));
    let state = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                let (status, body) = {
                    let mut served = state.lock().unwrap();
                    if served.down {
                        ("500 Internal Server Error", String::new())
                    } else if path == "/jwks" {
                        served.jwks_hits += 1;
                        ("200 OK", served.jwks.clone())
                    } else if path == "/.well-known/openid-configuration" {
                        ("200 OK", served.discovery.clone())
                    } else if path == "/moved" {
                        // Where the keys "moved": answered as a redirect to the real /jwks.
                        ("302 Found\r\nlocation: /jwks", String::new())
                    } else {
                        ("404 Not Found", String::new())
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    JwksServer { url, served }
}

struct World {
    ca: DevCa,
    server: JwksServer,
    scratch: tempfile::TempDir,
}

async fn world() -> World {
    let ca = DevCa::new("example.org").unwrap();
    let server = jwks_server(&ca).await;
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("ca.pem"), ca.bundle_pem()).unwrap();
    World {
        ca,
        server,
        scratch,
    }
}

impl World {
    fn serve_keys(&self, issuers: &[&DevIssuer]) {
        let keys: Vec<_> = issuers
            .iter()
            .map(|issuer| issuer.jwks()["keys"][0].clone())
            .collect();
        self.server.served.lock().unwrap().jwks = serde_json::json!({ "keys": keys }).to_string();
    }

    /// The configuration with this server as the issuer (its CA in `ca.pem`) and an admin
    /// listener.
    fn yaml(&self, issuer_settings: &str) -> String {
        let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
            "listen:\n  grpc: 127.0.0.1:0",
            "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0",
        );
        let settings = format!("    ca_file: ca.pem\n{issuer_settings}");
        with_issuer(&yaml, &self.server.url, &settings)
    }

    async fn start(
        &self,
        issuer_settings: &str,
    ) -> (Sidecar, AuthorizationClient<tonic::transport::Channel>) {
        let yaml = self.yaml(issuer_settings);
        let sidecar = runtime::start(Config::from_yaml(&yaml, self.scratch.path()).unwrap())
            .await
            .unwrap();
        let client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        (sidecar, client)
    }

    fn token(&self, signer: &DevIssuer) -> String {
        let claims = delegated_claims(
            &self.server.url,
            "user:alice",
            LOCAL,
            "calendar:read",
            &[SCHEDULER],
            unix_now(),
            300,
        );
        signer.sign(&claims).unwrap()
    }

    /// `Ok(reason)` for an answer, `Err(grpc code)` for a gRPC error.
    async fn ask(
        &self,
        client: &mut AuthorizationClient<tonic::transport::Channel>,
        token: &str,
    ) -> Result<String, tonic::Code> {
        let certificate = self.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        let request = RequestSpec::get("/calendar/events")
            .certificate(&certificate)
            .bearer(token)
            .build();
        match client.check(request).await {
            Ok(response) => Ok(Answer::from(response.into_inner()).reason),
            Err(status) => Err(status.code()),
        }
    }

    fn jwks_hits(&self) -> usize {
        self.server.served.lock().unwrap().jwks_hits
    }
}

fn jwks_uri_settings(world: &World, extra: &str) -> String {
    format!("    jwks_uri: {}/jwks\n{extra}", world.server.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_rotation_accepts_new_kid_and_cuts_removed_key_even_when_cached() {
    let world = world().await;
    let (old_key, new_key) = (
        DevIssuer::generate("x", "k-old", DevAlgorithm::Es256).unwrap(),
        DevIssuer::generate("x", "k-new", DevAlgorithm::Es256).unwrap(),
    );
    world.serve_keys(&[&old_key]);
    let (sidecar, mut client) = world
        .start(&jwks_uri_settings(&world, "    unknown_kid_cooldown: 1s\n"))
        .await;
    let old_token = world.token(&old_key);
    assert_eq!(world.ask(&mut client, &old_token).await, Ok("allow".into()));
    assert_eq!(
        world.ask(&mut client, &old_token).await,
        Ok("allow".into()),
        "cached"
    );
    // The issuer rotates: only the new key is published.
    world.serve_keys(&[&new_key]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_token = world.token(&new_key);
    assert_eq!(
        world.ask(&mut client, &new_token).await,
        Ok("allow".into()),
        "unknown kid → refetch → accepted"
    );
    assert_eq!(
        world.ask(&mut client, &old_token).await,
        Ok("token_key_unknown".into()),
        "removed key: the cached allow is gone"
    );
    // The issuer replaces the material behind `k-new` (and adds `k-third`, whose unknown kid
    // makes actguard fetch again): the cached allow of the new token was verified by a key that
    // is no longer published, so it is verified again — against the replacement.
    assert_eq!(
        world.ask(&mut client, &new_token).await,
        Ok("allow".into()),
        "cached"
    );
    let replaced = DevIssuer::generate("x", "k-new", DevAlgorithm::Es256).unwrap();
    let third = DevIssuer::generate("x", "k-third", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&replaced, &third]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        world.ask(&mut client, &world.token(&third)).await,
        Ok("allow".into()),
        "unknown kid → refetch"
    );
    assert_eq!(
        world.ask(&mut client, &new_token).await,
        Ok("token_signature_invalid".into()),
        "replaced key material: the cached allow is gone"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_unknown_kid_storm_fetches_at_most_once_per_cooldown() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let (sidecar, client) = world
        .start(&jwks_uri_settings(
            &world,
            "    unknown_kid_cooldown: 60s\n",
        ))
        .await;
    let hits_before = world.jwks_hits();
    let mut storm = Vec::new();
    for index in 0..40 {
        let random =
            DevIssuer::generate("x", &format!("random-{index}"), DevAlgorithm::Es256).unwrap();
        let token = world.token(&random);
        let mut client = client.clone();
        let certificate = world.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        storm.push(tokio::spawn(async move {
            let request = RequestSpec::get("/calendar")
                .certificate(&certificate)
                .bearer(&token)
                .build();
            Answer::from(client.check(request).await.unwrap().into_inner()).reason
        }));
    }
    for answer in storm {
        assert_eq!(answer.await.unwrap(), "token_key_unknown");
    }
    // Exactly one: the first unknown kid refetches (a rotation may have happened), the other
    // 39 fall inside the cooldown. Zero would mean rotation is never picked up on demand.
    assert_eq!(
        world.jwks_hits() - hits_before,
        1,
        "fetches for 40 random kids"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_issuer_down_keeps_keys_until_max_stale_then_fails_closed() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let settings = jwks_uri_settings(&world, "    refresh_interval: 1s\n    max_stale: 3s\n");
    let (sidecar, mut client) = world.start(&settings).await;
    let token = world.token(&key);
    assert_eq!(world.ask(&mut client, &token).await, Ok("allow".into()));
    // A malformed JWKS never replaces good keys.
    world.server.served.lock().unwrap().jwks = "{\"keys\": \"nope\"}".into();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        world.ask(&mut client, &token).await,
        Ok("allow".into()),
        "malformed JWKS ignored"
    );
    // Good keys again, and one refresh with them: the last good fetch is then at most 1 s
    // (refresh_interval) before the issuer goes down.
    world.serve_keys(&[&key]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    world.server.served.lock().unwrap().down = true;
    let down = std::time::Instant::now();
    // The issuer is down: the keys fetched last keep serving until max_stale (3 s) after that
    // fetch, so for at least 2 s from now — not only until the first failed refresh.
    while down.elapsed() < Duration::from_millis(1800) {
        assert_eq!(
            world.ask(&mut client, &token).await,
            Ok("allow".into()),
            "{:?} after the issuer went down, within max_stale",
            down.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = sidecar.admin_address.unwrap();
    let mut answer = world.ask(&mut client, &token).await;
    for _ in 0..60 {
        if answer.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = world.ask(&mut client, &token).await;
    }
    assert_eq!(
        answer,
        Err(tonic::Code::Unavailable),
        "stale beyond max_stale: fail closed"
    );
    let ready = admin_get(admin, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("no usable keys"),
        "{ready}"
    );
    // The issuer comes back: the background refresh restores service.
    world.server.served.lock().unwrap().down = false;
    world.serve_keys(&[&key]);
    let mut recovered = Err(tonic::Code::Unknown);
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        recovered = world.ask(&mut client, &token).await;
        if recovered.is_ok() {
            break;
        }
    }
    assert_eq!(recovered, Ok("allow".into()));
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_reload_fetches_remote_keys_before_it_serves() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let (sidecar, mut client) = world.start(&jwks_uri_settings(&world, "")).await;
    let token = world.token(&key);
    assert_eq!(world.ask(&mut client, &token).await, Ok("allow".into()));
    // Reload the same configuration from a file: its fresh remote key set is fetched first.
    let file = world.scratch.path().join("reloaded.yaml");
    std::fs::write(&file, world.yaml(&jwks_uri_settings(&world, ""))).unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(
        world.ask(&mut client, &token).await,
        Ok("allow".into()),
        "keys fetched before the swap"
    );
    // An unreachable issuer makes the reload fail; the running configuration keeps serving.
    world.server.served.lock().unwrap().down = true;
    assert!(sidecar.reload(&file).await.is_err());
    assert_eq!(world.ask(&mut client, &token).await, Ok("allow".into()));
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_jwks_uri() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    world.server.served.lock().unwrap().discovery =
        serde_json::json!({"issuer": world.server.url, "jwks_uri": format!("{}/jwks", world.server.url)}).to_string();
    let (sidecar, mut client) = world.start("    discovery: true\n").await;
    assert_eq!(
        world.ask(&mut client, &world.token(&key)).await,
        Ok("allow".into())
    );
    sidecar.shutdown().await.unwrap();
}

async fn admin_get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

impl World {
    /// Starts actguard with these issuer settings, and asks once: the answer, or the start's
    /// error. Either way, how often the server's real `/jwks` was read.
    async fn outcome(&self, issuer_settings: &str) -> (Result<String, String>, usize) {
        let outcome = match Config::from_yaml(&self.yaml(issuer_settings), self.scratch.path()) {
            Err(errors) => Err(errors.to_string()),
            Ok(config) => match runtime::start(config).await {
                Err(error) => Err(error),
                Ok(sidecar) => {
                    let mut client =
                        AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
                            .await
                            .unwrap();
                    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
                    let answer = self.ask(&mut client, &self.token(&key)).await;
                    sidecar.shutdown().await.unwrap();
                    answer.map_err(|code| format!("{code:?}"))
                }
            },
        };
        let hits = self.server.served.lock().unwrap().jwks_hits;
        (outcome, hits)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_jwks_redirects_are_not_followed() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let (outcome, hits) = world
        .outcome(&format!("    jwks_uri: {}/moved\n", world.server.url))
        .await;
    assert_eq!(hits, 0, "the redirect's target was fetched");
    assert!(
        outcome.is_err(),
        "keys behind a redirect were used: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_discovery_document_naming_another_issuer_is_refused() {
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    world.server.served.lock().unwrap().discovery = serde_json::json!({
        "issuer": "https://evil.example",
        "jwks_uri": format!("{}/jwks", world.server.url),
    })
    .to_string();
    let (outcome, hits) = world.outcome("    discovery: true\n").await;
    assert_eq!(
        hits, 0,
        "the keys of a document for another issuer were fetched"
    );
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_running_issuers_discovery_naming_another_issuer_leaves_its_keys_unchanged() {
    // The issuer rotates to k2 while its discovery document names another issuer: neither the
    // refresh nor an unknown kid may fetch keys through that document; k1 keeps verifying.
    let world = world().await;
    let (k1, k2) = (
        DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap(),
        DevIssuer::generate("x", "k2", DevAlgorithm::Es256).unwrap(),
    );
    let discovery = |issuer: &str| {
        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{}/jwks", world.server.url)})
            .to_string()
    };
    world.serve_keys(&[&k1]);
    world.server.served.lock().unwrap().discovery = discovery(&world.server.url);
    let settings = "    discovery: true\n    refresh_interval: 1s\n    unknown_kid_cooldown: 1s\n";
    let (sidecar, mut client) = world.start(settings).await;
    let (old_token, new_token) = (world.token(&k1), world.token(&k2));
    assert_eq!(world.ask(&mut client, &old_token).await, Ok("allow".into()));
    world.serve_keys(&[&k2]);
    world.server.served.lock().unwrap().discovery = discovery("https://evil.example");
    let hits_before = world.jwks_hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        world.ask(&mut client, &new_token).await,
        Ok("token_key_unknown".into()),
        "k2 learned through a document for another issuer"
    );
    assert_eq!(
        world.ask(&mut client, &old_token).await,
        Ok("allow".into()),
        "keys unchanged"
    );
    assert_eq!(
        world.jwks_hits(),
        hits_before,
        "keys fetched through the bad document"
    );
    // The control: once the document names the issuer again, the next refresh rotates.
    world.server.served.lock().unwrap().discovery = discovery(&world.server.url);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(world.ask(&mut client, &new_token).await, Ok("allow".into()));
    assert_eq!(
        world.ask(&mut client, &old_token).await,
        Ok("token_key_unknown".into())
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_jwks_server_not_certified_by_ca_file_is_refused() {
    // ca_file holds another CA than the one that certified the server: no keys, although the
    // server answers and its certificate is valid for its own CA.
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let other = DevCa::new("example.org").unwrap();
    std::fs::write(world.scratch.path().join("ca.pem"), other.bundle_pem()).unwrap();
    let (outcome, hits) = world
        .outcome(&format!("    jwks_uri: {}/jwks\n", world.server.url))
        .await;
    assert_eq!(
        hits, 0,
        "a TLS session with an untrusted server went as far as the request"
    );
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_keys_stay_fresh_while_the_issuer_answers() {
    // refresh_interval 1s, max_stale 3s, the issuer up throughout: never stale. (A 10 s floor
    // on the configured interval once made such keys expire between refreshes.)
    let world = world().await;
    let key = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    world.serve_keys(&[&key]);
    let settings = jwks_uri_settings(&world, "    refresh_interval: 1s\n    max_stale: 3s\n");
    let (sidecar, mut client) = world.start(&settings).await;
    let token = world.token(&key);
    let hits_before = world.jwks_hits();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        assert_eq!(
            world.ask(&mut client, &token).await,
            Ok("allow".into()),
            "{:?} in",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        world.jwks_hits() - hits_before >= 3,
        "refreshed about every second"
    );
    sidecar.shutdown().await.unwrap();
}
