#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes and of the real `actguard inject` webhook.

1. Every YAML file (and every YAML document embedded in a ConfigMap) parses without duplicate
   keys.
2. `kubectl kustomize` renders base, both overlays and the injector; every object of every
   output, the examples and the Istio mesh configuration validate: built-in kinds against the
   Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors) for the oldest
   and newest versions we support; Istio and cert-manager kinds against their published CRD
   models (cloudcoil), with unknown fields refused; SPIRE's ClusterSPIFFEID and the IstioOperator
   mesh configuration against the fields their APIs define (no published schema package exists).
3. The webhook end to end over HTTPS: real AdmissionReview v1 requests (plain, annotated,
   already-injected, own-Envoy, contradictory, malformed), each patch applied with `jsonpatch`,
   each patched Pod validated against the Pod schema and checked for the sidecars, volumes and
   security context.

Usage: validate.py path/to/actguard
"""

import base64
import copy
import json
import pathlib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import jsonpatch
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
# Native sidecars (initContainers with restartPolicy: Always) are on by default from 1.29;
# the injector's API types are those of 1.33.
VERSIONS = ["1.30", "1.33"]
KUSTOMIZATIONS = ["base", "overlays/spire", "overlays/istio", "overlays/nats-revocation", "injector"]
EXTRA = ["examples/injected-tool.yaml", "overlays/istio/istio-mesh-config.yaml"]

failures = []
quiet = []  # non-empty while the self-test expects failures


def fail(message):
    failures.append(message)
    if not quiet:
        print(f"FAIL {message}")


# --- 1. YAML without duplicate keys --------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_all(text, origin):
    try:
        return [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as error:
        fail(f"{origin}: {error}")
        return []


def check_yaml_files():
    files = sorted(K8S.rglob("*.yaml"))
    for path in files:
        for document in load_all(path.read_text(), path.relative_to(ROOT)):
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                for key, text in (document.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        load_all(text, f"{path.relative_to(ROOT)} data.{key}")
    print(f"ok   {len(files)} YAML files parse without duplicate keys")


# --- 2. Schemas ----------------------------------------------------------------------------


def unknown_fields(value, schema, defs, path):
    """Paths in `value` that `schema` (a pydantic JSON schema) does not define."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            branches = [
                unknown_fields(value, branch, defs, path)
                for branch in schema[combinator]
                if branch.get("type") != "null"
            ]
            return min(branches, key=len) if branches else []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(child, schema["properties"][key], defs, f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, child in value.items():
            found += unknown_fields(child, schema["additionalProperties"], defs, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            found += unknown_fields(child, schema["items"], defs, f"{path}[{index}]")
    return found


def crd_models():
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.istio.networking import v1 as networking
    from cloudcoil.models.istio.security import v1 as security

    return {
        ("security.istio.io/v1", "AuthorizationPolicy"): security.AuthorizationPolicy,
        ("security.istio.io/v1", "PeerAuthentication"): security.PeerAuthentication,
        ("networking.istio.io/v1", "ServiceEntry"): networking.ServiceEntry,
        ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
        ("cert-manager.io/v1", "Issuer"): cert_manager.Issuer,
    }


LABEL_SELECTOR = {"matchLabels", "matchExpressions"}
# spire-controller-manager api/v1alpha1 ClusterSPIFFEIDSpec.
CLUSTER_SPIFFE_ID_SPEC = {
    "spiffeIDTemplate", "namespaceSelector", "podSelector", "workloadSelectorTemplates",
    "dnsNameTemplates", "ttl", "jwtTtl", "federatesWith", "admin", "downstream",
    "autoPopulateDNSNames", "fallback", "className", "hint",
}
# istio/api mesh/v1alpha1 EnvoyExternalAuthorizationGrpcProvider.
EXT_AUTHZ_GRPC = {
    "service", "port", "timeout", "failOpen", "clearRouteCache", "statusOnError",
    "includeRequestBodyInCheck",
}


def check_known_keys(value, allowed, where):
    if not isinstance(value, dict):
        fail(f"{where}: must be a mapping")
        return
    for key in value:
        if key not in allowed:
            fail(f"{where}.{key}: not a field of this API")


def check_cluster_spiffe_id(document, where):
    check_known_keys(document, {"apiVersion", "kind", "metadata", "spec"}, where)
    spec = document.get("spec") or {}
    check_known_keys(spec, CLUSTER_SPIFFE_ID_SPEC, f"{where}.spec")
    template = spec.get("spiffeIDTemplate")
    if not isinstance(template, str) or not template.startswith("spiffe://"):
        fail(f"{where}.spec.spiffeIDTemplate: required, a spiffe:// template")
    for selector in ("namespaceSelector", "podSelector"):
        if selector in spec:
            check_known_keys(spec[selector], LABEL_SELECTOR, f"{where}.spec.{selector}")


def check_istio_operator(document, where):
    check_known_keys(document, {"apiVersion", "kind", "metadata", "spec"}, where)
    providers = (((document.get("spec") or {}).get("meshConfig") or {}).get("extensionProviders")) or []
    if not providers:
        fail(f"{where}: no spec.meshConfig.extensionProviders")
    for index, provider in enumerate(providers):
        at = f"{where}.spec.meshConfig.extensionProviders[{index}]"
        check_known_keys(provider, {"name", "envoyExtAuthzGrpc"}, at)
        grpc = provider.get("envoyExtAuthzGrpc") or {}
        check_known_keys(grpc, EXT_AUTHZ_GRPC, f"{at}.envoyExtAuthzGrpc")
        if not isinstance(grpc.get("service"), str) or not isinstance(grpc.get("port"), int):
            fail(f"{at}.envoyExtAuthzGrpc: service (string) and port (integer) are required")


def validate_object(document, where, models):
    api, kind = document.get("apiVersion"), document.get("kind")
    name = (document.get("metadata") or {}).get("name")
    where = f"{where} {kind}/{name}"
    if not name:
        fail(f"{where}: metadata.name is required")
        return
    if (api, kind) in models:
        model = models[(api, kind)]
        try:
            model.model_validate(document)
        except Exception as error:  # pydantic.ValidationError
            fail(f"{where}: {error}")
        schema = model.model_json_schema(by_alias=True)
        for path in unknown_fields(document, schema, schema.get("$defs", {}), ""):
            fail(f"{where}: {path.lstrip('.')}: unknown field")
        return
    if (api, kind) == ("spire.spiffe.io/v1alpha1", "ClusterSPIFFEID"):
        check_cluster_spiffe_id(document, where)
        return
    if (api, kind) == ("install.istio.io/v1alpha1", "IstioOperator"):
        check_istio_operator(document, where)
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{where}: no schema for {api} {kind}")
            return
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            fail(f"{where} (Kubernetes {version}): {path}: {error.message}")


def self_test(models):
    """The checks above must catch what breaks a manifest: each mutation has to fail."""
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays/istio")],
                              capture_output=True, text=True, check=True).stdout
    documents = {d["kind"]: d for d in load_all(rendered, "self-test")}
    spire = {d["kind"]: d for d in load_all((K8S / "overlays/spire/clusterspiffeids.yaml").read_text(), "")}
    mesh = load_all((K8S / "overlays/istio/istio-mesh-config.yaml").read_text(), "")[0]

    def typo_in_container(d):
        d["spec"]["template"]["spec"]["initContainers"][0]["restartPolcy"] = "Always"

    def typo_in_policy(d):
        d["spec"]["provder"] = d["spec"].pop("provider")

    def bad_enum_in_policy(d):
        d["spec"]["action"] = "CUSTOMX"

    def typo_in_service_entry(d):
        d["spec"]["endpoints"][0]["adress"] = d["spec"]["endpoints"][0].pop("address")

    def typo_in_spiffe_id(d):
        d["spec"]["podSelecter"] = d["spec"].pop("podSelector")

    def typo_in_provider(d):
        d["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]["failopen"] = False

    cases = [
        (documents["Deployment"], typo_in_container),
        (documents["AuthorizationPolicy"], typo_in_policy),
        (documents["AuthorizationPolicy"], bad_enum_in_policy),
        (documents["ServiceEntry"], typo_in_service_entry),
        (spire["ClusterSPIFFEID"], typo_in_spiffe_id),
        (mesh, typo_in_provider),
    ]
    for document, mutate in cases:
        broken = copy.deepcopy(document)
        mutate(broken)
        before = len(failures)
        quiet.append(True)
        validate_object(broken, "self-test", models)
        quiet.pop()
        caught = len(failures) > before
        del failures[before:]
        if not caught:
            fail(f"self-test: {mutate.__name__} was not caught")
    for what, mutate in [
        ("policy outside the namespace", lambda docs: docs["AuthorizationPolicy"]["metadata"].pop("namespace")),
        ("another sidecar before actguard",
         lambda docs: docs["Deployment"]["spec"]["template"]["spec"]["initContainers"].insert(
             0, {"name": "actguard-envoy", "image": "envoyproxy/envoy:v1.40.0"})),
        ("the tool mounting the admin socket",
         lambda docs: docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
         .setdefault("volumeMounts", []).append({"name": "actguard-admin", "mountPath": "/x"})),
        ("the sockets on the node's disk",
         lambda docs: docs["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
         .__setitem__("emptyDir", {})),
    ]:
        broken = copy.deepcopy(documents)
        mutate(broken)
        before = len(failures)
        quiet.append(True)
        check_rendered("overlays/istio", list(broken.values()))
        quiet.pop()
        caught = len(failures) > before
        del failures[before:]
        if not caught:
            fail(f"self-test: {what} was not caught")
    print(f"ok   self-test: {len(cases) + 4} broken manifests caught")


# Kinds that live in a namespace (the rest here are cluster-scoped).
CLUSTER_SCOPED = {"Namespace", "ClusterSPIFFEID", "MutatingWebhookConfiguration"}
EXPECTED_NAMESPACE = {
    "base": "actguard-demo", "overlays/spire": "actguard-demo",
    "overlays/istio": "actguard-demo", "overlays/nats-revocation": "actguard-demo",
    "injector": "actguard-system",
}


def check_socket_volumes(spec, where):
    """The sockets live in memory (never on the node's disk) and only actguard reaches the admin
    socket: any other container mounting actguard-admin could revoke and unrevoke."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for name in ["actguard-socket", "actguard-admin"]:
        medium = volumes.get(name, {}).get("emptyDir", {}).get("medium")
        if medium != "Memory":
            fail(f"{where}: volume {name} is not a memory-backed emptyDir ({volumes.get(name)})")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        mounts = [m["name"] for m in container.get("volumeMounts", [])]
        if "actguard-admin" in mounts and container["name"] != "actguard":
            fail(f"{where}: container {container['name']} mounts actguard-admin")


def check_rendered(directory, documents):
    """What schemas cannot see: every namespaced object lands in the overlay's namespace (an
    AuthorizationPolicy elsewhere selects nothing), and actguard is the first native sidecar."""
    expected = EXPECTED_NAMESPACE[directory]
    for document in documents:
        kind, metadata = document["kind"], document.get("metadata", {})
        if kind not in CLUSTER_SCOPED and metadata.get("namespace") != expected:
            fail(f"kustomize {directory}: {kind}/{metadata.get('name')} is in namespace "
                 f"{metadata.get('namespace')!r}, not {expected!r}")
        if kind == "Deployment" and directory != "injector":
            names = [c["name"] for c in document["spec"]["template"]["spec"].get("initContainers", [])]
            if not names or names[0] != "actguard":
                fail(f"kustomize {directory}: initContainers {names}: actguard must come first")
            check_socket_volumes(document["spec"]["template"]["spec"], f"kustomize {directory}")


def check_manifests():
    models = crd_models()
    self_test(models)
    count = 0
    for directory in KUSTOMIZATIONS:
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(K8S / directory)],
            capture_output=True, text=True,
        )
        if rendered.returncode != 0 or not rendered.stdout.strip():
            fail(f"kubectl kustomize {directory}: {rendered.stderr.strip() or 'empty output'}")
            continue
        documents = load_all(rendered.stdout, f"kustomize {directory}")
        check_rendered(directory, documents)
        for document in documents:
            validate_object(document, f"kustomize {directory}:", models)
            count += 1
    for relative in EXTRA:
        for document in load_all((K8S / relative).read_text(), relative):
            validate_object(document, f"{relative}:", models)
            count += 1
    print(f"ok   {count} objects from {len(KUSTOMIZATIONS)} kustomizations and {len(EXTRA)} files checked")


# --- 3. The webhook ------------------------------------------------------------------------


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Webhook:
    def __init__(self, binary, scratch, config=None):
        subprocess.run([binary, "dev", "ca", "--trust-domain", "example.org", "--out", f"{scratch}/ca"],
                       check=True, capture_output=True)
        subprocess.run([binary, "dev", "svid", "--ca", f"{scratch}/ca",
                        "--id", "spiffe://example.org/ns/actguard-system/sa/actguard-injector",
                        "--dns", "localhost", "--out", f"{scratch}/tls"], check=True, capture_output=True)
        self.port = free_port()
        command = [binary, "inject", "--listen", f"127.0.0.1:{self.port}",
                   "--cert", f"{scratch}/tls/svid.pem", "--key", f"{scratch}/tls/svid-key.pem"]
        if config:
            command += ["--config", config]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.context = ssl.create_default_context(cafile=f"{scratch}/ca/ca.pem")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.request("GET", "/readyz")
                return
            except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"webhook did not start: {self.process.stderr.read().decode()}")
                time.sleep(0.05)

    def request(self, method, path, body=None):
        request = urllib.request.Request(
            f"https://localhost:{self.port}{path}", data=body, method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def review(self, pod, operation="CREATE"):
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "tools",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
            },
        }
        status, body = self.request("POST", "/mutate", json.dumps(review).encode())
        return status, json.loads(body)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def example_pod():
    """The pod the example Deployment's ReplicaSet creates (template + what the API fills in)."""
    documents = load_all((K8S / "examples/injected-tool.yaml").read_text(), "example")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    pod["metadata"]["generateName"] = "scheduler-tool-5d8f7c9b6-"
    pod["metadata"]["namespace"] = "tools"
    return pod


def apply_patch(pod, response, where):
    if response.get("patchType") != "JSONPatch":
        fail(f"{where}: patchType {response.get('patchType')!r}")
        return pod
    operations = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, operations)


def check_pod_schema(pod, where):
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("name", pod["metadata"].get("generateName", "") + "x7k2p")
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            fail(f"{where} (Kubernetes {version}): {'.'.join(map(str, error.path))}: {error.message}")


RESTRICTED = {
    "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def check_injected(pod, where, expect_envoy, svid):
    spec = pod["spec"]
    names = [c["name"] for c in spec.get("initContainers", [])]
    expected = ["actguard", "actguard-envoy"] if expect_envoy else ["actguard"]
    if names[: len(expected)] != expected:
        fail(f"{where}: initContainers {names}, expected {expected} first")
    for container in spec.get("initContainers", [])[: len(expected)]:
        if container.get("restartPolicy") != "Always":
            fail(f"{where}: {container['name']} is not a native sidecar")
        context = container.get("securityContext", {})
        for key, value in RESTRICTED.items():
            if context.get(key) != value:
                fail(f"{where}: {container['name']} securityContext.{key} = {context.get(key)!r}")
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        if mounts.get("actguard-socket") != "/var/run/actguard":
            fail(f"{where}: {container['name']} lacks the shared socket directory")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for name in ["actguard-socket", "actguard-config", "actguard-jwks"]:
        if name not in volumes:
            fail(f"{where}: no volume {name}")
    if expect_envoy:
        source = volumes.get("actguard-svid", {})
        if svid not in source:
            fail(f"{where}: actguard-svid is {source}, expected a {svid} volume")
    elif "actguard-svid" in volumes:
        fail(f"{where}: SVID volume injected without Envoy")
    if pod["metadata"].get("annotations", {}).get("actguard.io/status") != "injected":
        fail(f"{where}: no actguard.io/status annotation")
    check_socket_volumes(spec, where)


def check_webhook(binary):
    with tempfile.TemporaryDirectory() as scratch:
        shipped = K8S / "injector" / "injector-config.yaml"
        config_map = load_all(shipped.read_text(), "injector config")[0]
        config_file = pathlib.Path(scratch) / "inject.yaml"
        config_file.write_text(config_map["data"]["inject.yaml"])
        webhook = Webhook(binary, scratch, str(config_file))
        try:
            run_webhook_cases(webhook, "secret")
        finally:
            webhook.stop()
        # The SPIRE variant of the injector configuration.
        spire = config_map["data"]["inject.yaml"].replace(
            "svid: { source: secret, secret: actguard-svid }", "svid: { source: spiffe_csi }")
        if spire == config_map["data"]["inject.yaml"]:
            fail("injector-config.yaml: svid line not found for the SPIRE variant")
        config_file.write_text(spire)
        webhook = Webhook(binary, scratch, str(config_file))
        try:
            pod = example_pod()
            status, review = webhook.review(pod)
            patched = apply_patch(pod, review["response"], "spiffe_csi")
            check_pod_schema(patched, "spiffe_csi: patched Pod")
            check_injected(patched, "spiffe_csi", True, "csi")
        finally:
            webhook.stop()


def run_webhook_cases(webhook, svid):
    pod = example_pod()

    plain = copy.deepcopy(pod)
    del plain["metadata"]["annotations"]
    status, review = webhook.review(plain)
    response = review["response"]
    if status != 200 or not response["allowed"] or "patch" in response:
        fail(f"plain Pod: expected allowed without patch, got {status} {response}")
    if response.get("uid") != "0df28fbd-5f5f-11e8-bc74-36e6bb280816":
        fail("plain Pod: the response does not carry the request's uid")

    status, review = webhook.review(pod)
    response = review["response"]
    if status != 200 or not response["allowed"]:
        fail(f"annotated Pod: expected an allowed patch, got {status} {response}")
        return
    injected = apply_patch(pod, response, "annotated Pod")
    check_pod_schema(injected, "annotated Pod: patched Pod")
    check_injected(injected, "annotated Pod", True, svid)
    if [c["name"] for c in injected["spec"]["containers"]] != ["scheduler-tool"]:
        fail("annotated Pod: the application containers changed")

    status, review = webhook.review(injected)
    if status != 200 or not review["response"]["allowed"] or "patch" in review["response"]:
        fail(f"already-injected Pod: expected no patch, got {review['response']}")

    own_envoy = copy.deepcopy(pod)
    del own_envoy["metadata"]["annotations"]["actguard.io/envoy-config"]
    own_envoy["spec"]["containers"].append({"name": "proxy", "image": "envoyproxy/envoy:v1.31.2"})
    status, review = webhook.review(own_envoy)
    response = review["response"]
    patched = apply_patch(own_envoy, response, "own-Envoy Pod")
    check_pod_schema(patched, "own-Envoy Pod: patched Pod")
    check_injected(patched, "own-Envoy Pod", False, svid)
    if not any("Envoy not injected" in w for w in response.get("warnings") or []):
        fail(f"own-Envoy Pod: no warning that Envoy was not injected: {response}")

    contradictory = copy.deepcopy(pod)
    contradictory["metadata"]["annotations"]["actguard.io/envoy"] = "false"
    status, review = webhook.review(contradictory)
    response = review["response"]
    if response["allowed"] or "contradictory" not in response.get("status", {}).get("message", ""):
        fail(f"contradictory annotations: expected a refusal naming them, got {response}")

    for body, what in [(b"{\"apiVersion\": \"admission.k8s.io/v1\"", "truncated JSON"),
                       (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
                        "review without request")]:
        status, answer = webhook.request("POST", "/mutate", body)
        review = json.loads(answer)
        if status != 400 or review["response"]["allowed"]:
            fail(f"malformed review ({what}): expected 400 and not allowed, got {status} {review}")
    print("ok   webhook: plain, annotated, already-injected, own-Envoy, contradictory, malformed")


def main():
    binary = sys.argv[1]
    check_yaml_files()
    check_manifests()
    check_webhook(binary)
    if failures:
        print(f"{len(failures)} problem(s) in deploy/kubernetes or the webhook", file=sys.stderr)
        sys.exit(1)
    print("deploy/kubernetes: all checks passed")


if __name__ == "__main__":
    main()
