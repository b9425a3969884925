//! `actguard inject` end to end: the real webhook over HTTPS, real AdmissionReview v1 bodies
//! (shaped as the API server sends them), the returned JSONPatch applied with a JSON-Patch
//! library, and the patched Pod read back as a Kubernetes Pod. (The schema validation of the
//! patched Pods against the Kubernetes API is in tests/kubernetes/validate.py.)

use actguard::devkit::DevCa;
use actguard::inject::config::InjectorConfig;
use actguard::serve::tls::TlsGate;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

struct Webhook {
    address: SocketAddr,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    scratch: tempfile::TempDir,
    ca: DevCa,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn write_server_cert(ca: &DevCa, dir: &Path) {
    let issued = ca
        .issue_svid_with_dns(
            "spiffe://example.org/actguard/injector",
            &["localhost".to_owned()],
        )
        .unwrap();
    std::fs::write(dir.join("tls.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &issued.key_pem).unwrap();
}

fn client_trusting(ca: &DevCa) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(ca.bundle_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A scratch directory with a server certificate from a new CA, and the webhook's TLS gate
/// on it (files checked every `reload`).
fn gate(reload: Duration) -> (tempfile::TempDir, DevCa, TlsGate) {
    let scratch = tempfile::tempdir().unwrap();
    let ca = DevCa::new("example.org").unwrap();
    write_server_cert(&ca, scratch.path());
    let gate = TlsGate::server_only(
        scratch.path().join("tls.crt"),
        scratch.path().join("tls.key"),
        reload,
    )
    .unwrap();
    (scratch, ca, gate)
}

async fn start(settings: InjectorConfig, reload: Duration) -> Webhook {
    let (scratch, ca, gate) = gate(reload);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(actguard::inject::server::serve(
        listener,
        gate,
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    Webhook {
        address,
        client: client_trusting(&ca),
        stop: Some(stop),
        scratch,
        ca,
    }
}

impl Webhook {
    async fn post(&self, body: String) -> (u16, Value) {
        let answer = self
            .client
            .post(format!("https://localhost:{}/mutate", self.address.port()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Sends a Pod CREATE review; returns the review's `response`.
    async fn review(&self, pod: &Value) -> Value {
        let (status, review) = self.post(review_of(pod).to_string()).await;
        assert_eq!(status, 200, "{review}");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = review["response"].clone();
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        response
    }
}

/// An AdmissionReview as the API server sends it for `kubectl apply` of a Pod.
fn review_of(pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": "tools",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                          "uid": "4d2c1b2a", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "calendar-7d9f8", "namespace": "tools",
                     "labels": {"app": "calendar"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": "calendar",
            "containers": [{
                "name": "calendar",
                "image": "registry.example.org/calendar:1.4",
                "ports": [{"containerPort": 8080}],
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]
        }
    })
}

/// Applies the response's JSONPatch (base64 in `patch`) to `pod`.
fn apply(pod: &Value, response: &Value) -> Value {
    use base64::Engine;
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

fn names(containers: &Option<Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<&str> {
    containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

fn assert_restricted(container: &k8s_openapi::api::core::v1::Container) {
    let context = container.security_context.as_ref().unwrap();
    assert_eq!(context.run_as_non_root, Some(true), "{}", container.name);
    assert_eq!(context.read_only_root_filesystem, Some(true));
    assert_eq!(context.allow_privilege_escalation, Some(false));
    assert_eq!(
        context.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        context.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(container.restart_policy.as_deref(), Some("Always"));
}

#[tokio::test]
async fn plain_pod_is_admitted_unchanged() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    for annotations in [json!({}), json!({"actguard.io/inject": "false"})] {
        let response = webhook.review(&pod(annotations)).await;
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
    }
}

#[tokio::test]
async fn annotated_pod_gets_actguard_and_envoy_as_native_sidecars() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let original = pod(json!({"actguard.io/inject": "true"}));
    let response = webhook.review(&original).await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched: Pod = serde_json::from_value(apply(&original, &response)).unwrap();
    let spec = patched.spec.as_ref().unwrap();
    assert_eq!(names(&spec.init_containers), ["actguard", "actguard-envoy"]);
    assert_eq!(
        names(&Some(spec.containers.clone())),
        ["calendar"],
        "the app is untouched"
    );
    let init = spec.init_containers.as_ref().unwrap();
    for container in init {
        assert_restricted(container);
    }
    let actguard = &init[0];
    assert_eq!(
        actguard.image.as_deref(),
        Some("ghcr.io/actguard/actguard:0.1.0")
    );
    assert_eq!(
        actguard.args.as_ref().unwrap().join(" "),
        "serve --config /etc/actguard/actguard.yaml"
    );
    let startup = actguard.startup_probe.as_ref().unwrap().http_get.as_ref();
    assert_eq!(startup.unwrap().path.as_deref(), Some("/readyz"));
    // The admin (revocation) socket's volume is actguard's alone.
    let admin_mounts: Vec<&str> = init
        .iter()
        .filter(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "actguard-admin")
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(admin_mounts, ["actguard"]);
    let envoy = &init[1];
    let port = envoy.ports.as_ref().unwrap()[0].container_port;
    assert_eq!(port, 8443);
    assert!(envoy.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    // The app's own port is reachable around Envoy unless it listens on loopback: say so.
    let warnings = response["warnings"][0].as_str().unwrap();
    assert!(warnings.contains("containerPort 8080"), "{warnings}");
    let volumes: Vec<(String, Value)> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), serde_json::to_value(v).unwrap()))
        .collect();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no volume {name}: {volumes:?}"))
    };
    assert!(volume("kube-api-access").get("projected").is_some());
    assert_eq!(volume("actguard-socket")["emptyDir"]["medium"], "Memory");
    // The admin socket's directory is memory-backed too: nothing of it reaches the node's disk.
    assert_eq!(volume("actguard-admin")["emptyDir"]["medium"], "Memory");
    assert_eq!(volume("actguard-config")["configMap"]["name"], "actguard");
    assert_eq!(volume("actguard-jwks")["configMap"]["optional"], true);
    assert_eq!(
        volume("actguard-envoy-config")["configMap"]["name"],
        "actguard-envoy"
    );
    assert_eq!(
        volume("actguard-svid")["secret"]["secretName"],
        "actguard-svid"
    );
    // Both sidecars share the socket directory.
    for container in init {
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "actguard-socket" && m.mount_path == "/var/run/actguard"),
            "{}",
            container.name
        );
    }
    assert_eq!(
        patched.metadata.annotations.unwrap()["actguard.io/status"],
        "injected"
    );
}

#[tokio::test]
async fn injected_pod_is_left_alone() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let original = pod(json!({"actguard.io/inject": "true"}));
    let once = apply(&original, &webhook.review(&original).await);
    // Reinvocation (reinvocationPolicy: IfNeeded) or a re-applied injected manifest.
    let again = webhook.review(&once).await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");
}

#[tokio::test]
async fn pod_with_its_own_envoy_gets_actguard_only() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let mut original = pod(json!({"actguard.io/inject": "true"}));
    original["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "proxy", "image": "docker.io/envoyproxy/envoy:v1.31.2"}));
    let response = webhook.review(&original).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = response["warnings"][0].as_str().unwrap();
    assert!(
        warnings.contains("Envoy not injected") && warnings.contains("\"proxy\""),
        "{warnings}"
    );
    let patched: Pod = serde_json::from_value(apply(&original, &response)).unwrap();
    let spec = patched.spec.unwrap();
    assert_eq!(names(&spec.init_containers), ["actguard"]);
    let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(
        volumes,
        [
            "kube-api-access",
            "actguard-socket",
            "actguard-admin",
            "actguard-config",
            "actguard-jwks"
        ]
    );

    // Istio's sidecar counts as an Envoy too; explicit "false" skips Envoy.
    for annotations in [
        json!({"actguard.io/inject": "true", "sidecar.istio.io/inject": "true"}),
        json!({"actguard.io/inject": "true", "istio.io/rev": "stable"}),
        json!({"actguard.io/inject": "true", "actguard.io/envoy": "false"}),
    ] {
        let istio = annotations.get("actguard.io/envoy").is_none();
        let original = pod(annotations);
        let response = webhook.review(&original).await;
        let patched: Pod = serde_json::from_value(apply(&original, &response)).unwrap();
        assert_eq!(names(&patched.spec.unwrap().init_containers), ["actguard"]);
        // Under Istio, the kubelet's probes of actguard must bypass istio-proxy, and Istio must
        // not rewrite them to istio-proxy's port (a deadlock when it is not a native sidecar).
        let added = patched.metadata.annotations.unwrap();
        let excluded = added
            .get("traffic.sidecar.istio.io/excludeInboundPorts")
            .cloned();
        assert_eq!(excluded, istio.then(|| "9902".to_owned()));
        let rewrite = added.get("sidecar.istio.io/rewriteAppHTTPProbers").cloned();
        assert_eq!(rewrite, istio.then(|| "false".to_owned()));
    }
}

#[tokio::test]
async fn svid_secret_annotation_names_the_pods_own_certificate() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let original =
        pod(json!({"actguard.io/inject": "true", "actguard.io/svid-secret": "calendar-svid"}));
    let patched: Pod =
        serde_json::from_value(apply(&original, &webhook.review(&original).await)).unwrap();
    let svid = patched
        .spec
        .unwrap()
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "actguard-svid")
        .unwrap();
    assert_eq!(
        svid.secret.unwrap().secret_name.as_deref(),
        Some("calendar-svid")
    );
}

#[tokio::test]
async fn own_init_containers_run_after_the_sidecars() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let mut original = pod(json!({"actguard.io/inject": "true",
        "actguard.io/config": "calendar-policy", "actguard.io/envoy-config": "calendar-envoy"}));
    original["spec"]["initContainers"] = json!([{"name": "migrate", "image": "busybox:1.36"}]);
    let patched: Pod =
        serde_json::from_value(apply(&original, &webhook.review(&original).await)).unwrap();
    let spec = patched.spec.unwrap();
    assert_eq!(
        names(&spec.init_containers),
        ["actguard", "actguard-envoy", "migrate"]
    );
    let config_maps: Vec<String> = spec
        .volumes
        .unwrap()
        .into_iter()
        .filter_map(|v| v.config_map.map(|c| c.name))
        .collect();
    assert_eq!(
        config_maps,
        ["calendar-policy", "actguard-jwks", "calendar-envoy"]
    );
}

#[tokio::test]
async fn contradictory_or_malformed_annotations_are_refused_with_a_reason() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let mut with_envoy = pod(json!({"actguard.io/inject": "true", "actguard.io/envoy": "true"}));
    with_envoy["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "envoy", "image": "envoyproxy/envoy:v1.31-latest"}));
    let mut clash = pod(json!({"actguard.io/inject": "true"}));
    clash["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "actguard-socket", "emptyDir": {}}));
    let mut host_network = pod(json!({"actguard.io/inject": "true"}));
    host_network["spec"]["hostNetwork"] = json!(true);
    // A container of the Pod mounting a volume actguard adds: it would get actguard's admin
    // socket or Envoy's SVID key.
    let mounting = |volume: &str| {
        let mut pod = pod(json!({"actguard.io/inject": "true"}));
        pod["spec"]["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": volume, "mountPath": "/stolen"}));
        pod
    };
    // A container that takes actguard's name: not injected, not "already injected" either.
    let impostor = |status: Option<&str>, init: bool| {
        let mut annotations = json!({"actguard.io/inject": "true"});
        if let Some(status) = status {
            annotations["actguard.io/status"] = json!(status);
        }
        let mut pod = pod(annotations);
        let container = json!({"name": "actguard", "image": "registry.example.org/impostor:1"});
        if init {
            pod["spec"]["initContainers"] = json!([container]);
        } else {
            pod["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(container);
        }
        pod
    };
    let cases = [
        (
            impostor(None, false),
            "already has a container named \"actguard\" that this injector did not add",
        ),
        (
            impostor(None, true),
            "already has a container named \"actguard\" that this injector did not add",
        ),
        (
            impostor(Some("injected"), true),
            "already has a container named \"actguard\" that this injector did not add",
        ),
        (host_network, "hostNetwork Pods cannot be protected"),
        (
            mounting("actguard-admin"),
            "container \"calendar\" mounts \"actguard-admin\"",
        ),
        (
            mounting("actguard-svid"),
            "container \"calendar\" mounts \"actguard-svid\"",
        ),
        (
            pod(json!({"actguard.io/inject": "yes"})),
            "actguard.io/inject must be \"true\" or \"false\"",
        ),
        (
            pod(json!({"actguard.io/inject": "true", "actguard.io/envoy": "no"})),
            "actguard.io/envoy must be",
        ),
        (
            pod(
                json!({"actguard.io/inject": "true", "actguard.io/envoy": "false", "actguard.io/envoy-config": "x"}),
            ),
            "contradictory annotations",
        ),
        (
            pod(json!({"actguard.io/inject": "true", "actguard.io/config": "Bad_Name"})),
            "must name a ConfigMap",
        ),
        (with_envoy, "already has an Envoy (container \"envoy\")"),
        (
            pod(json!({"actguard.io/inject": "true", "actguard.io/status": "injected"})),
            "has no \"actguard\" container",
        ),
        (clash, "volume \"actguard-socket\""),
    ];
    for (pod, expected) in cases {
        let response = webhook.review(&pod).await;
        assert_eq!(response["allowed"], false, "{expected}: {response}");
        assert!(response.get("patch").is_none());
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[tokio::test]
async fn malformed_reviews_get_400_and_a_reason() {
    let webhook = start(InjectorConfig::default(), Duration::from_secs(10)).await;
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let mut v1beta1 = review_of(&pod(json!({"actguard.io/inject": "true"})));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut bad_object = review_of(&pod(json!({})));
    bad_object["request"]["object"]["spec"]["containers"] = json!("calendar");
    let cases = [
        ("{not json".to_owned(), "not an AdmissionReview"),
        (no_request.to_string(), "has no request"),
        (
            v1beta1.to_string(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (bad_object.to_string(), "not an AdmissionReview"),
    ];
    for (body, expected) in cases {
        let (status, review) = webhook.post(body).await;
        assert_eq!(status, 400, "{review}");
        assert_eq!(review["response"]["allowed"], false);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    // Other kinds and operations are not ours to change, whatever their object looks like.
    let mut update = review_of(&pod(json!({"actguard.io/inject": "true"})));
    update["request"]["operation"] = json!("UPDATE");
    let mut config_map = review_of(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {"actguard.io/inject": "true"}}, "data": {"a": "b"}}));
    config_map["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    for review in [update, config_map] {
        let (status, answer) = webhook.post(review.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        assert!(answer["response"].get("patch").is_none());
    }
}

#[tokio::test]
async fn spiffe_csi_and_custom_images_come_from_the_injector_config() {
    let settings = InjectorConfig::from_yaml(
        "actguard: {image: registry.example.org/actguard:9.9}\nenvoy: {svid: {source: spiffe_csi}}\n",
    )
    .unwrap();
    let webhook = start(settings, Duration::from_secs(10)).await;
    let original = pod(json!({"actguard.io/inject": "true"}));
    let patched: Pod =
        serde_json::from_value(apply(&original, &webhook.review(&original).await)).unwrap();
    let spec = patched.spec.unwrap();
    let init = spec.init_containers.unwrap();
    assert_eq!(
        init[0].image.as_deref(),
        Some("registry.example.org/actguard:9.9")
    );
    let svid = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "actguard-svid")
        .unwrap();
    let csi = svid.csi.unwrap();
    assert_eq!(
        (csi.driver.as_str(), csi.read_only),
        ("csi.spiffe.io", Some(true))
    );
    assert!(
        init[1]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "actguard-svid" && m.mount_path == "/spiffe-workload-api")
    );
}

#[tokio::test]
async fn renewed_certificate_is_served_without_restart() {
    let webhook = start(InjectorConfig::default(), Duration::from_millis(100)).await;
    let url = format!("https://localhost:{}/healthz", webhook.address.port());
    assert_eq!(webhook.client.get(&url).send().await.unwrap().status(), 200);
    // cert-manager renews from a new CA: clients trusting only the old one must now fail, and
    // clients trusting the new one succeed, once the files are re-read.
    let renewed = DevCa::new("example.org").unwrap();
    write_server_cert(&renewed, webhook.scratch.path());
    let new_client = client_trusting(&renewed);
    let mut served_new = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if new_client.get(&url).send().await.is_ok() {
            served_new = true;
            break;
        }
    }
    assert!(served_new, "the renewed certificate was never served");
    let old_client = client_trusting(&webhook.ca);
    assert!(old_client.get(&url).send().await.is_err());
}

/// Shutdown waits for in-flight reviews for at most the drain deadline: a client that sends a
/// review's headers and then trickles nothing of its body does not keep the webhook from
/// stopping (hyper's graceful shutdown alone waits for that request for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_shutdown_cuts_reviews_still_in_flight_at_the_drain_deadline() {
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_scratch, ca, gate) = gate(Duration::from_secs(10));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = Duration::from_millis(300);
    let served = tokio::spawn(actguard::inject::server::serve_draining(
        listener,
        gate,
        InjectorConfig::default(),
        async move {
            let _ = stopped.await;
        },
        drain,
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.bundle_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut review = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    review
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"kind\"")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(drain + Duration::from_secs(3), served)
        .await
        .expect("the webhook kept running past its drain deadline")
        .unwrap()
        .unwrap();
    assert!(stopping.elapsed() >= drain, "cut before the deadline");
    // The trickling client's connection is gone.
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), review.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}
