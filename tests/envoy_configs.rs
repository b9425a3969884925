//! Offline validation of envoy/*.yaml (and of every `envoy.yaml` inside a ConfigMap under
//! deploy/kubernetes) against Envoy's own API definitions (the `.proto` files
//! shipped in the envoy-types crate source), the way `envoy --mode validate` checks the schema:
//! every field must exist, every `@type` must resolve, every value must have the right type.
//! Then what the schema cannot see: clusters referenced but not defined, and the ext_authz
//! settings actguard depends on.

mod common;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

const PROTOS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let Some(includes) = option_env!("ACTGUARD_ENVOY_PROTO_INCLUDES") else {
            panic!("build.rs did not find the envoy-types proto sources in the Cargo registry")
        };
        let includes: Vec<PathBuf> = std::env::split_paths(includes).collect();
        let set = protox::compile(PROTOS, includes).expect("Envoy's protos compile");
        DescriptorPool::from_file_descriptor_set(set).expect("descriptor pool")
    })
}

/// Schema problems (as Envoy's own validation would report them) and reference problems.
fn validate(yaml: &str) -> Result<(), String> {
    let document: Value = serde_saphyr::from_str(yaml).map_err(|e| format!("YAML: {e}"))?;
    validate_document(&document)
}

/// [`validate`] for a bootstrap already parsed.
fn validate_document(document: &Value) -> Result<(), String> {
    let bootstrap = pool()
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap is in the pool");
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(bootstrap, document.clone(), &options)
        .map_err(|e| format!("schema: {e}"))?;
    check_references(document)
}

fn walk<'a>(value: &'a Value, visit: &mut dyn FnMut(&'a serde_json::Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            visit(map);
            map.values().for_each(|child| walk(child, visit));
        }
        Value::Array(items) => items.iter().for_each(|child| walk(child, visit)),
        _ => {}
    }
}

fn check_references(document: &Value) -> Result<(), String> {
    let defined: Vec<&str> = document["static_resources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|cluster| cluster["name"].as_str())
        .collect();
    let mut problems = Vec::new();
    let mut ext_authz_filters = 0;
    walk(document, &mut |map| {
        let referenced = map
            .get("envoy_grpc")
            .and_then(|grpc| grpc["cluster_name"].as_str())
            .or_else(|| map.get("route").and_then(|route| route["cluster"].as_str()));
        if let Some(name) = referenced
            && !defined.contains(&name)
        {
            problems.push(format!("cluster {name:?} is referenced but not defined"));
        }
        if map.get("name").and_then(Value::as_str) == Some("envoy.filters.http.ext_authz") {
            ext_authz_filters += 1;
            let config = &map["typed_config"];
            // gRPC: the caller's certificate travels in the CheckRequest. HTTP mode reads the
            // caller from the x-forwarded-client-cert Envoy sets instead.
            if config.get("http_service").is_some() {
                if !document.to_string().contains("\"SANITIZE_SET\"") {
                    problems.push(
                        "http_service without forward_client_cert_details: SANITIZE_SET".into(),
                    );
                }
            } else if config["include_peer_certificate"] != Value::Bool(true) {
                problems.push("ext_authz without include_peer_certificate: true".into());
            }
            if config["transport_api_version"] != "V3" {
                problems.push("ext_authz without transport_api_version: V3".into());
            }
            if config["failure_mode_allow"] != Value::Bool(false) {
                problems.push("ext_authz without failure_mode_allow: false".into());
            }
        }
    });
    if ext_authz_filters == 0 {
        problems.push("no ext_authz filter".into());
    }
    let (managers, tls_contexts) = security_settings(document, &mut problems);
    if managers == 0 || tls_contexts == 0 {
        problems.push(format!(
            "{managers} HTTP connection managers and {tls_contexts} downstream TLS contexts found"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn type_is(map: &serde_json::Map<String, Value>, suffix: &str) -> bool {
    map.get("@type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with(suffix))
}

/// Every setting of a shipped bootstrap that actguard's answers depend on, on every HTTP
/// connection manager and every downstream TLS context: the path Envoy routes on is the one
/// actguard checked (normalised, slashes merged, escaped slashes refused), the client
/// certificate header cannot be forged (sanitised), and the caller must present a certificate
/// of the expected trust domain. Returns how many of each were found.
fn security_settings(document: &Value, problems: &mut Vec<String>) -> (usize, usize) {
    let (mut managers, mut tls_contexts) = (0, 0);
    walk(document, &mut |map| {
        if type_is(map, "HttpConnectionManager") {
            managers += 1;
            let setting = |name: &str| map.get(name).cloned().unwrap_or(Value::Null);
            for (name, wanted) in [
                ("normalize_path", Value::Bool(true)),
                ("merge_slashes", Value::Bool(true)),
                (
                    "path_with_escaped_slashes_action",
                    Value::from("REJECT_REQUEST"),
                ),
            ] {
                if setting(name) != wanted {
                    problems.push(format!("HTTP connection manager without {name}: {wanted}"));
                }
            }
            let forwarding = setting("forward_client_cert_details");
            if forwarding != "SANITIZE" && forwarding != "SANITIZE_SET" {
                problems.push(format!(
                    "HTTP connection manager with forward_client_cert_details {forwarding}"
                ));
            }
        }
        if type_is(map, "DownstreamTlsContext") {
            tls_contexts += 1;
            if map.get("require_client_certificate") != Some(&Value::Bool(true)) {
                problems.push("downstream TLS without require_client_certificate: true".into());
            }
            let text = Value::Object(map.clone()).to_string();
            if !text.contains("\"match_typed_subject_alt_names\"") || !text.contains("\"spiffe://")
            {
                problems.push(
                    "downstream TLS without match_typed_subject_alt_names on a spiffe:// URI"
                        .into(),
                );
            }
        }
    });
    (managers, tls_contexts)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn shipped_envoy_configs_validate() {
    let files = common::envoy::shipped_files();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        validate(&read(&file)).unwrap_or_else(|problem| panic!("{file}: {problem}"));
    }
}

#[test]
fn kubernetes_envoy_configmaps_validate() {
    let configs = common::envoy::kubernetes_bootstraps();
    // base (file-based SDS) and overlays/spire (SDS): a walk that finds nothing must not pass.
    assert!(configs.len() >= 2, "found only {}", configs.len());
    for shipped in configs {
        validate_document(&shipped.bootstrap)
            .unwrap_or_else(|problem| panic!("{}: {problem}", shipped.file));
    }
}

#[test]
fn validation_catches_what_breaks_envoy_configs() {
    let good = read("envoy/sidecar.yaml");
    let cases = [
        (
            "misspelled field",
            "normalize_path: true",
            "normalise_path: true",
            "schema",
        ),
        (
            "wrong @type",
            "ext_authz.v3.ExtAuthz",
            "ext_authz.v3.ExtAuthorization",
            "schema",
        ),
        (
            "wrong value type",
            "require_client_certificate: true",
            "require_client_certificate: sometimes",
            "schema",
        ),
        (
            "unknown enum value",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: REJECT",
            "schema",
        ),
        (
            "undefined cluster",
            "envoy_grpc: { cluster_name: actguard }",
            "envoy_grpc: { cluster_name: actgaurd }",
            "referenced but not defined",
        ),
        (
            "routed to nowhere",
            "route: { cluster: tool }",
            "route: { cluster: tools }",
            "referenced but not defined",
        ),
        (
            "no peer certificate",
            "include_peer_certificate: true",
            "include_peer_certificate: false",
            "include_peer_certificate",
        ),
        (
            "fail open",
            "failure_mode_allow: false",
            "failure_mode_allow: true",
            "failure_mode_allow",
        ),
        (
            "client certificate optional",
            "require_client_certificate: true",
            "require_client_certificate: false",
            "require_client_certificate",
        ),
        (
            "client certificate header forwarded as sent",
            "forward_client_cert_details: SANITIZE",
            "forward_client_cert_details: FORWARD_ONLY",
            "forward_client_cert_details",
        ),
        (
            "escaped slashes kept",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
            "path_with_escaped_slashes_action",
        ),
        (
            "slashes not merged",
            "merge_slashes: true",
            "merge_slashes: false",
            "merge_slashes",
        ),
        (
            "path not normalised",
            "normalize_path: true",
            "normalize_path: false",
            "normalize_path",
        ),
        (
            "any certificate of the CA accepted",
            "                  match_typed_subject_alt_names:\n                    - san_type: URI\n                      matcher: { prefix: \"spiffe://example.org/\" }\n",
            "",
            "match_typed_subject_alt_names",
        ),
    ];
    for (name, from, to, expected) in cases {
        assert!(good.contains(from), "case {name}: the fixture changed");
        let broken = good.replacen(from, to, 1);
        let problem = validate(&broken).expect_err(name);
        assert!(problem.contains(expected), "case {name}: {problem}");
    }
}
