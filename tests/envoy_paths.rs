//! Path agreement through real Envoy: a generated corpus of tricky request targets (dot
//! segments, `//`, `;` parameters, percent-encodings, encoded separators, non-ASCII) is sent,
//! byte for byte, through Envoy to the tool. For every request Envoy forwards, the route
//! actguard chose (its audit record, by Envoy's `x-request-id`) must be the route of the path
//! the tool received, read both as an RFC 3986 server reads it and as a lenient one does
//! (everything percent-decoded, empty segments merged and parameters cut before dot segments
//! are resolved). Run with the shipped HCM settings and with
//! Envoy's defaults (no path normalisation): actguard must never allow a path that the
//! upstream reads as another route.

mod common;

use actguard::config::Config;
use common::envoy::{self, Envoy, Relocation, Upstream};
use common::upstream::Tool;
use common::world::{HOST, Mode, World};
use common::{ORCHESTRATOR, SCHEDULER};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Targets built from route prefixes and the tricks that confuse path matching.
fn corpus() -> Vec<String> {
    let prefixes = ["/calendar", "/admin", "/Calendar", "/calendarx"];
    let tricks = [
        "",
        "/..",
        "/.",
        "//..",
        "/;x/..",
        "/;/..",
        "/%3Bx/..",
        "/%2e%2e",
        "/%2E%2E",
        "/.%2e",
        "/%2e.",
        "/%2e",
        "//",
        "///..",
        "/%2F..",
        "/%2f",
        "/%5C..",
        "\\..",
        "/%252e%252e",
        "/%00",
        "/%C3%A9",
        "/é",
        "/x/../..",
        "/;",
        "/%20..",
        "/..;/",
    ];
    let suffixes = [
        "/events",
        "/admin/users",
        "",
        "/calendar/events",
        "?q=/../admin",
    ];
    let mut targets = Vec::new();
    for prefix in prefixes {
        for trick in tricks {
            for suffix in suffixes {
                targets.push(format!("{prefix}{trick}{suffix}"));
            }
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

/// The path as an RFC 3986 server reads it: percent-encoded unreserved characters decoded
/// (§6.2.2.2), then `remove_dot_segments` (§5.2.4), empty segments and `;` kept as they are.
fn rfc3986_reading(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let mut decoded = String::new();
    let bytes = path.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| path.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(byte));
        match escaped {
            Some(byte) => {
                decoded.push(byte as char);
                index += 3;
            }
            None => {
                let next = path[index..].chars().next().unwrap();
                decoded.push(next);
                index += next.len_utf8();
            }
        }
    }
    let mut input = decoded;
    let mut output = String::new();
    let pop = |output: &mut String| output.truncate(output.rfind('/').unwrap_or(0));
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop(&mut output);
        } else if input == "/.." {
            input = "/".into();
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..]
                .find('/')
                .map_or(input.len(), |at| at + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

/// The path as a lenient upstream reads it: the query cut, every percent-encoding decoded
/// (lossily), `\` as `/`, `;` parameters dropped, dot segments resolved, empty segments merged.
fn upstream_reading(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.replace('\\', "/").split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    format!("/{}", segments.join("/"))
}

/// A TLS client presenting the scheduler's SVID.
fn connector(world: &World) -> tokio_rustls::TlsConnector {
    let config = world.tls_config(SCHEDULER, &[]);
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends `target` verbatim (HTTP/1.1 over mutual TLS) and returns the status.
async fn send_raw(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    target: &str,
    token: &str,
    id: &str,
) -> u16 {
    use rustls::pki_types::ServerName;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(HOST).unwrap(), stream)
        .await
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    // The status line is all that is needed: read up to the end of the headers, no further
    // (waiting for Envoy to close costs its delayed-close timeout per request).
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    while !response.windows(4).any(|window| window == b"\r\n\r\n") {
        match tls.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => response.extend_from_slice(&buffer[..read]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    forwarded: usize,
    denied_by_envoy: usize,
    denied_by_actguard: usize,
}

/// Runs the corpus through `bootstrap` and checks agreement for every forwarded request.
async fn run_corpus(label: &str, bootstrap: Value) -> Outcome {
    let world = World::new();
    let audit = world.path().join("audit.log");
    // actguard with its audit log in a file: the route it chose, per Envoy request id.
    let sidecar = start_audited(&world, &audit).await;
    let tool = Tool::start().await;
    let port: u16 = sidecar
        .grpc_address
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let relocation = Relocation::new(world.path(), Upstream::Tcp(port), tool.port);
    let envoy = Envoy::start(&relocation.apply(bootstrap), world.path()).await;
    // Every scope every route asks for: a forwarded request is allowed unless it has no route.
    let token = world.token(&[ORCHESTRATOR, SCHEDULER], "calendar:read admin");
    let routes = Config::from_yaml(&world.config_yaml(Mode::Tcp, ""), world.path())
        .unwrap()
        .decision
        .routes;
    let targets = corpus();
    let connector = connector(&world);
    let mut statuses = HashMap::new();
    let started = std::time::Instant::now();
    for (index, target) in targets.iter().enumerate() {
        let id = format!("corpus-{index}");
        let status = send_raw(&connector, envoy.listen_port, target, &token, &id).await;
        statuses.insert(id, (target.clone(), status));
    }
    eprintln!("{label}: sent {} in {:?}", targets.len(), started.elapsed());
    let decisions = audit_routes(&audit, statuses.len()).await;
    let received = tool.take();
    let mut outcome = Outcome {
        forwarded: 0,
        denied_by_envoy: 0,
        denied_by_actguard: 0,
    };
    let mut disagreements = Vec::new();
    for request in &received {
        let id = request
            .header("x-request-id")
            .unwrap_or_default()
            .to_owned();
        let (target, _) = &statuses[&id];
        let chosen = decisions.get(&id).cloned().flatten();
        // Both ways a server may read what it received must land on actguard's route.
        for reading in [
            upstream_reading(&request.target),
            rfc3986_reading(&request.target),
        ] {
            let upstream_route = routes
                .select("GET", HOST, &reading)
                .map(|route| route.name.to_string());
            if chosen != upstream_route {
                disagreements.push(format!(
                    "{target:?}: actguard chose {chosen:?}, the tool received {:?} (read as {reading:?}: {upstream_route:?})",
                    request.target
                ));
            }
        }
        outcome.forwarded += 1;
    }
    for (id, (_, status)) in &statuses {
        if *status == 200 {
            continue;
        }
        if decisions.contains_key(id) {
            outcome.denied_by_actguard += 1;
        } else {
            outcome.denied_by_envoy += 1;
        }
    }
    assert!(
        disagreements.is_empty(),
        "{label}: {} of {} forwarded requests disagree:\n{}",
        disagreements.len(),
        received.len(),
        disagreements.join("\n")
    );
    eprintln!(
        "{label}: {} targets, {} forwarded (all agree), {} denied by actguard, {} refused by Envoy",
        targets.len(),
        outcome.forwarded,
        outcome.denied_by_actguard,
        outcome.denied_by_envoy
    );
    outcome
}

async fn start_audited(
    world: &World,
    audit: &std::path::Path,
) -> actguard::serve::runtime::Sidecar {
    let yaml = world.config_yaml_audited(Mode::Tcp, audit);
    let config = Config::from_yaml(&yaml, world.path()).unwrap();
    actguard::serve::runtime::start(config).await.unwrap()
}

/// The route actguard recorded for each request id (`None`: decided before a route matched).
async fn audit_routes(audit: &std::path::Path, sent: usize) -> HashMap<String, Option<String>> {
    // Envoy's own refusals (400s) never reach actguard; wait for the writer to settle.
    let mut last = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let lines = std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .count();
        if lines == last || lines >= sent {
            break;
        }
        last = lines;
    }
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            (
                record["request_id"].as_str().unwrap().to_owned(),
                record["route"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn the_two_readings_differ_where_servers_do() {
    assert_eq!(
        rfc3986_reading("/admin//../calendar/events"),
        "/admin/calendar/events"
    );
    assert_eq!(
        upstream_reading("/admin//../calendar/events"),
        "/calendar/events"
    );
    assert_eq!(rfc3986_reading("/a/%2e%2e/b?x=/../y"), "/b");
    assert_eq!(rfc3986_reading("/a/;x/../b"), "/a/b");
    assert_eq!(upstream_reading("/a/;x/../b"), "/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_agree_with_the_upstream_under_the_shipped_path_settings() {
    let outcome = run_corpus("shipped HCM settings", envoy::shipped("envoy/sidecar.yaml")).await;
    assert!(outcome.forwarded > 0, "the corpus must reach the tool");
    assert!(outcome.denied_by_envoy > 0, "Envoy refuses encoded slashes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_agree_with_the_upstream_under_envoys_default_path_settings() {
    let mut bootstrap = envoy::shipped("envoy/sidecar.yaml");
    let manager = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        [0]["typed_config"];
    for setting in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
    ] {
        assert!(
            manager.as_object_mut().unwrap().remove(setting).is_some(),
            "{setting}"
        );
    }
    let outcome = run_corpus("Envoy's defaults", bootstrap).await;
    assert!(outcome.forwarded > 0);
}
