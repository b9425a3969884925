//! The Kubernetes manifests agree with the code that runs in them: every actguard
//! configuration in a ConfigMap loads (as `actguard serve` would load it), the injector's
//! configuration loads, and the names, ports and socket paths the pieces share line up
//! (Envoy's ext_authz socket is actguard's, probes hit `listen.probes`, the SPIRE socket lives
//! in the CSI mount, the injector's defaults name the ConfigMaps the base ships).
//! Schema validation of the manifests and kustomize outputs: tests/kubernetes/validate.py.

use actguard::config::{Config, ListenAddress};
use actguard::devkit::{DevAlgorithm, DevIssuer};
use actguard::inject::config::{CSI_MOUNT, InjectorConfig, JWKS_MOUNT};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(relative)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn config_map_key(relative: &str, name: &str, key: &str) -> String {
    documents(relative)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .and_then(|d| d["data"][key].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{relative}: no ConfigMap {name} with key {key}"))
}

/// Loads an actguard.yaml from a manifest, with the JWKS mount pointing at a real JWKS file.
fn load_actguard(relative: &str, scratch: &Path) -> Config {
    let yaml = config_map_key(relative, "actguard", "actguard.yaml");
    assert!(
        yaml.contains(&format!("{JWKS_MOUNT}/jwks.json")),
        "{relative}: the JWKS is read from the mounted ConfigMap"
    );
    let issuer = DevIssuer::generate("https://sts.example.org", "k1", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let yaml = yaml.replace(JWKS_MOUNT, scratch.to_str().unwrap());
    Config::from_yaml(&yaml, scratch).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn envoy_pipes(envoy_yaml: &str) -> Vec<(String, String)> {
    let envoy: Value = serde_saphyr::from_str(envoy_yaml).unwrap();
    envoy["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|cluster| {
            let endpoint = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
            let pipe = endpoint["endpoint"]["address"]["pipe"]["path"].as_str()?;
            Some((cluster["name"].as_str()?.to_owned(), pipe.to_owned()))
        })
        .collect()
}

#[test]
fn base_actguard_config_loads_and_envoy_dials_its_socket() {
    let scratch = tempfile::tempdir().unwrap();
    let config = load_actguard("base/actguard-config.yaml", scratch.path());
    let ListenAddress::Unix(socket) = &config.listen.grpc else {
        panic!("base: ext_authz on a Unix socket")
    };
    assert!(socket.starts_with(actguard::inject::SOCKET_DIR));
    let Some(ListenAddress::Unix(admin)) = &config.listen.admin else {
        panic!("the revocation API stays off the network")
    };
    // In the volume only actguard mounts, not in the socket directory Envoy shares.
    assert!(admin.starts_with(actguard::inject::ADMIN_DIR), "{admin:?}");
    let probes = config
        .listen
        .probes
        .expect("kubelet probes need listen.probes");
    let deployment = documents("base/deployment.yaml").remove(0);
    let pod = &deployment["spec"]["template"]["spec"];
    let actguard = &pod["initContainers"][0];
    assert_eq!(actguard["name"], "actguard");
    // The admin socket: a memory emptyDir of its own, mounted by the actguard container only.
    let admin_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == actguard::inject::ADMIN_VOLUME)
        .expect("the admin socket's volume");
    assert_eq!(admin_volume["emptyDir"]["medium"], "Memory");
    let admin_mounts: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .filter(|container| {
            container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|mount| mount["name"] == actguard::inject::ADMIN_VOLUME)
        })
        .map(|container| &container["name"])
        .collect();
    assert_eq!(admin_mounts, [&Value::from("actguard")]);
    assert_eq!(actguard["restartPolicy"], "Always");
    assert_eq!(
        actguard["startupProbe"]["httpGet"]["port"],
        u64::from(probes.port())
    );
    let envoy = config_map_key("base/envoy-config.yaml", "actguard-envoy", "envoy.yaml");
    assert_eq!(
        envoy_pipes(&envoy),
        [("actguard".to_owned(), socket.display().to_string())]
    );
    assert_eq!(
        config.decision.local_identity.to_string(),
        "spiffe://example.org/ns/actguard-demo/sa/calendar"
    );
}

#[test]
fn spire_overlay_reads_the_agent_socket_from_the_csi_mount() {
    let envoy = config_map_key(
        "overlays/spire/envoy-sds.yaml",
        "actguard-envoy",
        "envoy.yaml",
    );
    let pipes = envoy_pipes(&envoy);
    let agent = pipes
        .iter()
        .find(|(name, _)| name == "spire_agent")
        .expect("an SDS cluster for the SPIRE agent");
    assert!(agent.1.starts_with(CSI_MOUNT), "{agent:?}");
    let patch = documents("overlays/spire/deployment-spire.yaml").remove(0);
    let envoy_patch = patch["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "actguard-envoy")
        .unwrap();
    let mounts = envoy_patch["volumeMounts"].clone();
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == CSI_MOUNT),
        "{mounts}"
    );
}

#[test]
fn istio_overlay_config_takes_the_caller_from_the_principal() {
    let scratch = tempfile::tempdir().unwrap();
    let config = load_actguard("overlays/istio/actguard-istio.yaml", scratch.path());
    assert_eq!(
        config.decision.local_identity.to_string(),
        "spiffe://cluster.local/ns/actguard-demo/sa/calendar"
    );
    // Istio never sends the peer certificate; its principal is the verified peer's SPIFFE ID.
    assert_eq!(
        config.decision.identity_sources,
        [actguard::decision::identity::IdentitySource::Principal]
    );
    let ListenAddress::Tcp(address) = config.listen.grpc else {
        panic!("istio-proxy reaches actguard over TCP")
    };
    assert!(address.ip().is_loopback());
    let entry = documents("overlays/istio/serviceentry.yaml").remove(0);
    assert_eq!(entry["spec"]["endpoints"][0]["address"], "127.0.0.1");
    assert_eq!(
        entry["spec"]["ports"][0]["number"],
        u64::from(address.port())
    );
    let mesh = documents("overlays/istio/istio-mesh-config.yaml").remove(0);
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["service"],
        entry["spec"]["hosts"][0]
    );
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["port"],
        u64::from(address.port())
    );
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    let policy = documents("overlays/istio/authorizationpolicy.yaml").remove(0);
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
}

#[test]
fn injector_config_loads_and_names_what_the_base_ships() {
    let yaml = config_map_key(
        "injector/injector-config.yaml",
        "actguard-injector",
        "inject.yaml",
    );
    let settings = InjectorConfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.actguard.config_map, "actguard");
    assert_eq!(settings.actguard.jwks_config_map, "actguard-jwks");
    assert_eq!(settings.envoy.config_map, "actguard-envoy");
    let scratch = tempfile::tempdir().unwrap();
    let base = load_actguard("base/actguard-config.yaml", scratch.path());
    assert_eq!(
        base.listen.probes.map(|a| a.port()),
        Some(settings.actguard.probes_port)
    );
    let webhook = documents("injector/mutatingwebhookconfiguration.yaml").remove(0);
    let hook = &webhook["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(
        hook["namespaceSelector"]["matchLabels"][actguard::inject::NAMESPACE_LABEL],
        "enabled"
    );
    assert_eq!(hook["failurePolicy"], "Fail");
}

#[test]
fn services_target_native_sidecar_ports_by_number() {
    // A named targetPort resolves only against regular containers before Kubernetes 1.32, and
    // Envoy is a native sidecar (an init container): the Service would get no endpoints.
    let service = documents("base/service.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert!(
            port["targetPort"].is_u64(),
            "targetPort {} is not a number",
            port["targetPort"]
        );
    }
}

#[test]
fn cluster_spiffe_ids_name_the_class_the_spire_charts_controller_watches() {
    let ids: Vec<Value> = documents("overlays/spire/clusterspiffeids.yaml");
    assert!(!ids.is_empty());
    for id in ids {
        assert_eq!(
            id["spec"]["className"], "spire-server-spire",
            "{}: a classless ClusterSPIFFEID is ignored by the charts' default controller",
            id["metadata"]["name"]
        );
    }
}

#[test]
fn the_nats_revocation_component_adds_revocation_nats_to_the_base_config_and_nothing_else() {
    let base = config_map_key("base/actguard-config.yaml", "actguard", "actguard.yaml");
    let component = config_map_key(
        "components/nats-revocation/actguard-config.yaml",
        "actguard",
        "actguard.yaml",
    );
    let (unchanged, added) = component
        .split_once("\nrevocation:\n")
        .expect("the component adds revocation:");
    assert_eq!(
        format!("{unchanged}\n"),
        base,
        "everything but revocation is the base's"
    );
    assert!(added.starts_with("  nats:\n"), "{added}");
    // It loads, with the mounted files where the Deployment patch mounts them.
    let scratch = tempfile::tempdir().unwrap();
    let ca = actguard::devkit::DevCa::new("example.org").unwrap();
    let svid = ca
        .issue_svid("spiffe://example.org/ns/actguard-demo/sa/calendar")
        .unwrap();
    for (name, text) in [
        ("ca.crt", ca.bundle_pem()),
        ("password", "sidecar-secret\n"),
        ("svid.pem", svid.cert_pem.as_str()),
        ("svid-key.pem", svid.key_pem.as_str()),
    ] {
        std::fs::write(scratch.path().join(name), text).unwrap();
    }
    let issuer = DevIssuer::generate("https://sts.example.org", "k1", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let root = scratch.path().to_str().unwrap();
    let yaml = component
        .replace(JWKS_MOUNT, root)
        .replace("/run/actguard-nats", root)
        .replace("/run/actguard-svid", root);
    let config = Config::from_yaml(&yaml, scratch.path()).unwrap_or_else(|e| panic!("{e}"));
    let nats = config.revocation_nats.expect("revocation.nats");
    assert_eq!(nats.user.as_deref(), Some("actguard-sidecar"));
    assert!(nats.tls.is_some() && nats.servers[0].starts_with("tls://"));
    // The Deployment patch mounts exactly those two volumes into the actguard container.
    let patch = documents("components/nats-revocation/deployment-nats.yaml").remove(0);
    let container = &patch["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(container["name"], "actguard");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mount| mount["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/run/actguard-svid", "/run/actguard-nats"]);
}
