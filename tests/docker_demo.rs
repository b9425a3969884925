//! The Docker demo, checked without Docker: compose and Dockerfile reference only files that
//! exist, the demo script's requests match the demo config's routes, and the demo's exact
//! actguard config with dev-minted credentials gives, through the real server and the
//! CheckRequests Envoy sends for each curl call, the statuses the script promises.

mod common;

use actguard::cli::dev::{self, TokenRequest};
use actguard::config::Config;
use actguard::devkit::url_encode;
use actguard::serve::runtime;
use common::{Answer, RequestSpec};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn docker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines of a `NAME='…'` block of demo.sh, split on `|`.
fn table(script: &str, name: &str) -> Vec<Vec<String>> {
    let start = script
        .find(&format!("{name}='"))
        .unwrap_or_else(|| panic!("{name} block"))
        + name.len()
        + 2;
    let end = start + script[start..].find('\'').unwrap();
    script[start..end]
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split('|').map(str::to_owned).collect())
        .collect()
}

#[test]
fn compose_and_dockerfile_reference_only_existing_files() {
    let dir = docker_dir();
    let compose: Value = serde_saphyr::from_str(&read(&dir.join("compose.yaml"))).unwrap();
    let services = compose["services"].as_object().unwrap();
    for (name, service) in services {
        if let Some(build) = service.get("build") {
            let context = dir.join(build["context"].as_str().unwrap());
            assert!(context.is_dir(), "{name}: build context");
            assert!(
                context
                    .join(build["dockerfile"].as_str().unwrap())
                    .is_file(),
                "{name}: dockerfile"
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    dir.join(source).exists(),
                    "{name}: volume source {source} is missing"
                );
            } else {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name}: named volume {source} undeclared"
                );
            }
        }
        for dependency in service["depends_on"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                services.contains_key(dependency),
                "{name}: depends on unknown {dependency}"
            );
        }
    }
    let dockerfile = read(&dir.join("Dockerfile"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                root.join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
}

struct Minted {
    _dir: tempfile::TempDir,
    certs: PathBuf,
}

/// The /certs volume, made with the same `actguard dev` steps as certs.sh.
fn mint() -> Minted {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_path_buf();
    dev::ca("example.org", &certs.join("ca")).unwrap();
    dev::svid(
        &certs.join("ca"),
        "spiffe://example.org/tool/calendar",
        &["envoy".to_owned()],
        &certs.join("envoy"),
    )
    .unwrap();
    for agent in ["orchestrator", "scheduler", "planner"] {
        dev::svid(
            &certs.join("ca"),
            &format!("spiffe://example.org/agent/{agent}"),
            &[],
            &certs.join(agent),
        )
        .unwrap();
    }
    dev::issuer("https://sts.example.org", "demo-1", &certs.join("issuer")).unwrap();
    // curl dials https://envoy:8443: Envoy's SVID must also name that host.
    let envoy_pem = read(&certs.join("envoy/svid.pem"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(envoy_pem.as_bytes()).unwrap();
    let certificate = pem.parse_x509().unwrap();
    let names = certificate.subject_alternative_name().unwrap().unwrap();
    assert!(
        names
            .value
            .general_names
            .iter()
            .any(|name| matches!(name, x509_parser::extensions::GeneralName::DNSName("envoy")))
    );
    Minted { _dir: dir, certs }
}

fn mint_token(certs: &Path, arguments: &str) -> String {
    let words: Vec<&str> = arguments.split_whitespace().collect();
    let flag = |name: &str| words.iter().position(|w| *w == name).map(|i| words[i + 1]);
    dev::token(&TokenRequest {
        issuer_dir: &certs.join("issuer"),
        subject: flag("--sub").unwrap(),
        actors: flag("--act")
            .map(|list| list.split(',').collect())
            .unwrap_or_default(),
        audience: flag("--aud").unwrap(),
        scope: flag("--scope").unwrap_or(""),
        ttl: Duration::from_secs(300),
        client_id: flag("--client-id"),
        jti: None,
        sid: None,
        authorization_details: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_script_promises_hold_against_the_real_server() {
    let script = read(&docker_dir().join("demo.sh"));
    let minted = mint();
    let certs = minted.certs.display().to_string();
    let yaml = read(&docker_dir().join("actguard.yaml"))
        .replace("/certs/", &format!("{certs}/"))
        .replace("0.0.0.0:9191", "127.0.0.1:0")
        .replace(
            "unix:/tmp/actguard-admin.sock",
            &format!("unix:{certs}/admin.sock"),
        )
        .replace("0.0.0.0:9194", "127.0.0.1:0")
        + "audit:\n  output: \"off\"\n";
    let config = Config::from_yaml(&yaml, &minted.certs).unwrap();
    let routes_config = Config::from_yaml(&yaml, &minted.certs).unwrap();
    let sidecar = runtime::start(config).await.unwrap();
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();

    let tokens: Vec<(String, String)> = table(&script, "TOKENS")
        .into_iter()
        .map(|row| (row[0].clone(), mint_token(&minted.certs, &row[1])))
        .collect();
    let cases = table(&script, "CASES");
    assert_eq!(cases.len(), 7, "the scenario of the issue");
    for case in cases {
        let [title, agent, method, path, token, status, reason] = &case[..] else {
            panic!("{case:?}")
        };
        let bearer = &tokens
            .iter()
            .find(|(name, _)| name == token)
            .unwrap_or_else(|| panic!("token {token}"))
            .1;
        let normalized = actguard::decision::path::normalize(path).unwrap();
        let route = routes_config
            .decision
            .routes
            .select(method, "envoy:8443", &normalized);
        assert!(
            route.is_some(),
            "{title}: {method} {path} matches no route of actguard.yaml"
        );
        let mut spec = RequestSpec::new(method, path).bearer(bearer);
        spec.host = "envoy:8443".into();
        if agent != "none" {
            let pem = read(&minted.certs.join(agent).join("svid.pem"));
            spec = spec.certificate(&url_encode(&pem));
        }
        let answer = Answer::from(client.check(spec.build()).await.unwrap().into_inner());
        if agent == "none" {
            // Envoy refuses the TLS handshake (status 000 in the script); actguard would deny too.
            assert_eq!((status.as_str(), reason.as_str()), ("000", "tls_refused"));
            assert_eq!(answer.reason, "caller_identity_missing", "{title}");
            continue;
        }
        assert_eq!(&answer.reason, reason, "{title}");
        assert_eq!(answer.http_status.to_string(), *status, "{title}");
    }
    sidecar.shutdown().await.unwrap();
}

#[test]
fn demo_scripts_parse() {
    for script in ["demo.sh", "certs.sh"] {
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg(docker_dir().join(script))
            .status()
            .unwrap();
        assert!(status.success(), "{script} has a syntax error");
    }
}

#[test]
fn the_demo_keeps_the_revocation_api_off_the_compose_network() {
    // Every container on the compose network could otherwise lift a revocation.
    let config: Value = serde_saphyr::from_str(&read(&docker_dir().join("actguard.yaml"))).unwrap();
    let admin = config["listen"]["admin"].as_str().unwrap();
    assert!(admin.starts_with("unix:"), "listen.admin is {admin}");
    // The demo waits for actguard's readiness on the probes listener, which serves no API.
    let script = read(&docker_dir().join("demo.sh"));
    let probes = config["listen"]["probes"].as_str().unwrap();
    let port = probes.rsplit(':').next().unwrap();
    assert!(
        script.contains(&format!("http://actguard:{port}/readyz")),
        "demo.sh waits on /readyz"
    );
}
