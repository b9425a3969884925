//! `actguard inject`: a mutating admission webhook that adds actguard, and unless the pod has
//! one, an Envoy, to Pods annotated `actguard.io/inject: "true"`.
//!
//! What it adds (all as native sidecars: init containers with `restartPolicy: Always`, placed
//! before the pod's own init containers, actguard first so ext_authz is ready before Envoy
//! takes traffic and both before the application starts):
//! - the `actguard` container, its configuration (ConfigMap from `actguard.io/config`, or the
//!   injector's default; key `actguard.yaml`), the issuers' JWKS ConfigMap when it exists
//!   (optional volume at `/etc/actguard-jwks`), probes on `listen.probes`;
//! - the `actguard-envoy` container with its configuration (ConfigMap from
//!   `actguard.io/envoy-config` or the default; key `envoy.yaml`) and its SVID source;
//! - an `emptyDir` shared by both, where actguard's ext_authz Unix socket lives, and one only
//!   actguard mounts, for its admin (revocation) socket;
//! - the annotation `actguard.io/status: injected`.
//!
//! Guarantees: a pod that already has an `actguard` container is left alone (idempotent, so
//! reinvocation is harmless); contradictory or malformed annotations, name clashes and a pod
//! that claims to be injected without the container are rejected with a message saying what
//! to change. Pods without the annotation (or with `"false"`) pass unchanged.

pub mod config;
mod containers;
pub mod server;

use config::{CSI_MOUNT, InjectorConfig, JWKS_MOUNT, Resources, SECRET_MOUNT, SvidSource};
use containers::{actguard_container, envoy_container, planned_volumes};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, HTTPGetAction, Pod, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const ANNOTATION_INJECT: &str = "actguard.io/inject";
pub const ANNOTATION_CONFIG: &str = "actguard.io/config";
pub const ANNOTATION_ENVOY: &str = "actguard.io/envoy";
pub const ANNOTATION_ENVOY_CONFIG: &str = "actguard.io/envoy-config";
pub const ANNOTATION_SVID_SECRET: &str = "actguard.io/svid-secret";
pub const ANNOTATION_STATUS: &str = "actguard.io/status";
/// Namespaces opt in with this label (`enabled`), matched by the webhook's namespaceSelector.
pub const NAMESPACE_LABEL: &str = "actguard.io/injection";

pub const ACTGUARD_CONTAINER: &str = "actguard";
pub const ENVOY_CONTAINER: &str = "actguard-envoy";
pub const SOCKET_VOLUME: &str = "actguard-socket";
pub const CONFIG_VOLUME: &str = "actguard-config";
pub const ENVOY_CONFIG_VOLUME: &str = "actguard-envoy-config";
pub const SVID_VOLUME: &str = "actguard-svid";
pub const JWKS_VOLUME: &str = "actguard-jwks";
pub const ADMIN_VOLUME: &str = "actguard-admin";
/// Where the shared socket directory is mounted in both sidecars: actguard listens on
/// `unix:/var/run/actguard/ext_authz.sock`.
pub const SOCKET_DIR: &str = "/var/run/actguard";
/// The admin (revocation) socket's directory, mounted by actguard alone:
/// `listen.admin: unix:/var/run/actguard-admin/admin.sock`.
pub const ADMIN_DIR: &str = "/var/run/actguard-admin";
pub const CONFIG_DIR: &str = "/etc/actguard";
pub const ENVOY_CONFIG_DIR: &str = "/etc/envoy";
/// The distroless `nonroot` user of actguard's image, and the `envoy` user of Envoy's.
const ACTGUARD_UID: i64 = 65532;
const ENVOY_UID: i64 = 101;

/// What the webhook answers for one Pod.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Admit without changes; the reason is logged, and returned as a warning when the user
    /// asked for something that did not happen.
    Unchanged {
        reason: String,
        warning: Option<String>,
    },
    /// Admit with this patch; warnings tell the user what was decided for them.
    Inject { patch: Patch, warnings: Vec<String> },
    /// Refuse the Pod: the message says which annotation or name to change.
    Reject(String),
}

fn unchanged(reason: impl Into<String>) -> Outcome {
    Outcome::Unchanged {
        reason: reason.into(),
        warning: None,
    }
}

/// `"true"`/`"false"` annotations; anything else is an error naming the annotation.
fn flag(annotations: &BTreeMap<String, String>, name: &str) -> Result<Option<bool>, String> {
    match annotations.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!(
            "annotation {name} must be \"true\" or \"false\", not {other:?}"
        )),
    }
}

fn config_map_annotation(
    annotations: &BTreeMap<String, String>,
    name: &str,
    default: &str,
) -> Result<String, String> {
    match annotations.get(name) {
        None => Ok(default.to_owned()),
        Some(value) if config::is_object_name(value) => Ok(value.clone()),
        Some(value) => Err(format!(
            "annotation {name} must name a ConfigMap (lower-case letters, digits, '-' and '.'), not {value:?}"
        )),
    }
}

/// Istio's sidecar is (or will be) in the Pod: an `istio-proxy` container, or injection asked
/// on the Pod (`sidecar.istio.io/inject: "true"`, or an `istio.io/rev` revision label).
/// Namespace-level injection (`istio-injection=enabled`) is invisible to us: Pods there must
/// say `actguard.io/envoy: "false"` (see deploy/kubernetes/README.md).
fn istio(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let has_proxy = spec.is_some_and(|spec| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .any(|c| c.name == "istio-proxy")
    });
    let asked = |map: Option<&BTreeMap<String, String>>| {
        map.is_some_and(|m| {
            m.get("sidecar.istio.io/inject")
                .is_some_and(|v| v == "true")
                || m.contains_key("istio.io/rev")
        })
    };
    has_proxy || asked(pod.metadata.labels.as_ref()) || asked(pod.metadata.annotations.as_ref())
}

/// The Envoy the pod already has, if any: a container named like one, an Envoy or Istio proxy
/// image, or Istio's sidecar on its way.
fn existing_envoy(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        let image = container.image.as_deref().unwrap_or("");
        // `registry/path/name:tag@digest` → `name`.
        let repository = image.split('@').next().unwrap_or("");
        let last = repository.rsplit('/').next().unwrap_or("");
        let image_name = last.split(':').next().unwrap_or("");
        if ["envoy", "istio-proxy", ENVOY_CONTAINER].contains(&container.name.as_str())
            || ["envoy", "envoy-distroless", "proxyv2"].contains(&image_name)
        {
            return Some(format!("container {:?}", container.name));
        }
    }
    istio(pod).then(|| "Istio's sidecar".to_owned())
}

/// Decides what to do with a Pod being created.
pub fn decide(pod: &Pod, settings: &InjectorConfig) -> Outcome {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    match flag(annotations, ANNOTATION_INJECT) {
        Err(message) => return Outcome::Reject(message),
        Ok(None) => return unchanged(format!("no {ANNOTATION_INJECT} annotation")),
        Ok(Some(false)) => return unchanged(format!("{ANNOTATION_INJECT} is \"false\"")),
        Ok(Some(true)) => {}
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Outcome::Reject("the Pod has no spec".into());
    };
    let all_containers = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
    };
    if let Some(existing) = all_containers().find(|c| c.name == ACTGUARD_CONTAINER) {
        // Left alone only when it is this injector's work (reinvocation, a re-applied injected
        // manifest): the status annotation and the configured image. A container that merely
        // takes the name would otherwise pass as protection that is not there.
        let injected = annotations.get(ANNOTATION_STATUS).map(String::as_str) == Some("injected")
            && existing.image.as_deref() == Some(settings.actguard.image.as_str());
        if injected {
            return unchanged("already has an actguard container");
        }
        return Outcome::Reject(format!(
            "the Pod already has a container named {ACTGUARD_CONTAINER:?} that this injector did \
             not add (no {ANNOTATION_STATUS}: injected, or another image): rename it"
        ));
    }
    if annotations.contains_key(ANNOTATION_STATUS) {
        return Outcome::Reject(format!(
            "the Pod carries {ANNOTATION_STATUS} but has no {ACTGUARD_CONTAINER:?} container \
             (annotation copied from an injected Pod?): remove {ANNOTATION_STATUS}"
        ));
    }
    if spec.host_network == Some(true) {
        // On the node's network, the tool's loopback port is the node's: every process and
        // hostNetwork Pod on the node would reach it around Envoy.
        return Outcome::Reject(
            "hostNetwork Pods cannot be protected: the tool's loopback port would be the node's"
                .into(),
        );
    }
    let plan = match Plan::from_annotations(pod, annotations, settings) {
        Ok(plan) => plan,
        Err(message) => return Outcome::Reject(message),
    };
    let mut warnings = plan.warnings.clone();

    let volumes = planned_volumes(settings, &plan);
    let mut clashes: Vec<String> = Vec::new();
    let mut names = vec![ACTGUARD_CONTAINER];
    if plan.add_envoy {
        names.push(ENVOY_CONTAINER);
    }
    for name in names {
        if all_containers().any(|c| c.name == name) {
            clashes.push(format!("container {name:?}"));
        }
    }
    for volume in &volumes {
        if spec.volumes.iter().flatten().any(|v| v.name == volume.name) {
            clashes.push(format!("volume {:?}", volume.name));
        }
        // A container of the Pod mounting a volume we add would get actguard's sockets or
        // Envoy's private key (the volume is added before the API server validates the Pod).
        for container in all_containers() {
            if container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == volume.name)
            {
                clashes.push(format!(
                    "container {:?} mounts {:?}",
                    container.name, volume.name
                ));
            }
        }
    }
    if !clashes.is_empty() {
        return Outcome::Reject(format!(
            "the Pod already uses names actguard injects: {}; rename them",
            clashes.join(", ")
        ));
    }
    let exposed: Vec<String> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port.to_string())
        .collect();
    if !exposed.is_empty() {
        warnings.push(format!(
            "actguard: the Pod declares containerPort {}; a port open on the Pod IP is reachable \
             around Envoy: make the app listen on 127.0.0.1 or allow only Envoy's port in a \
             NetworkPolicy",
            exposed.join(", ")
        ));
    }

    let mut sidecars = vec![actguard_container(settings)];
    if plan.add_envoy {
        sidecars.push(envoy_container(settings));
    }
    let mut extra_annotations = Vec::new();
    if istio(pod) {
        // istio-proxy would intercept the kubelet's probes of actguard.
        let key = "traffic.sidecar.istio.io/excludeInboundPorts";
        let port = settings.actguard.probes_port.to_string();
        match annotations.get(key) {
            None => extra_annotations.push((key, port)),
            Some(ports) if ports.split(',').any(|p| p.trim() == port) => {}
            Some(_) => warnings.push(format!(
                "actguard: add {port} to {key}, or istio-proxy intercepts actguard's probes"
            )),
        }
        // Istio rewrites HTTP probes, init containers' too, to istio-proxy's port: when
        // istio-proxy is not a native sidecar it starts after actguard, whose startup probe
        // then never passes.
        let key = "sidecar.istio.io/rewriteAppHTTPProbers";
        match annotations.get(key).map(String::as_str) {
            None => extra_annotations.push((key, "false".to_owned())),
            Some("false") => {}
            Some(_) => warnings.push(format!(
                "actguard: set {key}: \"false\", or Istio redirects actguard's probes to istio-proxy"
            )),
        }
    }
    match patch(spec, &sidecars, &volumes, &extra_annotations) {
        Ok(patch) => Outcome::Inject { patch, warnings },
        // Plain data always serialises; should it not, the Pod is refused, never let through
        // half-injected.
        Err(error) => Outcome::Reject(format!("actguard injector internal error: {error}")),
    }
}

/// What the annotations ask for, once they are known to be consistent.
struct Plan {
    actguard_config: String,
    envoy_config: String,
    add_envoy: bool,
    svid: SvidSource,
    warnings: Vec<String>,
}

impl Plan {
    fn from_annotations(
        pod: &Pod,
        annotations: &BTreeMap<String, String>,
        settings: &InjectorConfig,
    ) -> Result<Self, String> {
        let envoy_wanted = flag(annotations, ANNOTATION_ENVOY)?;
        let envoy_only = [ANNOTATION_ENVOY_CONFIG, ANNOTATION_SVID_SECRET];
        if envoy_wanted == Some(false)
            && let Some(name) = envoy_only.iter().find(|a| annotations.contains_key(**a))
        {
            return Err(format!(
                "contradictory annotations: {ANNOTATION_ENVOY} is \"false\" but {name} \
                 configures the Envoy; remove one of them"
            ));
        }
        let actguard_config = config_map_annotation(
            annotations,
            ANNOTATION_CONFIG,
            &settings.actguard.config_map,
        )?;
        let envoy_config = config_map_annotation(
            annotations,
            ANNOTATION_ENVOY_CONFIG,
            &settings.envoy.config_map,
        )?;
        let mut svid = settings.envoy.svid.clone();
        if let Some(secret) = annotations.get(ANNOTATION_SVID_SECRET) {
            if !config::is_object_name(secret) {
                return Err(format!(
                    "annotation {ANNOTATION_SVID_SECRET} must name a Secret (lower-case letters, \
                     digits, '-' and '.'), not {secret:?}"
                ));
            }
            if svid == SvidSource::SpiffeCsi {
                return Err(format!(
                    "{ANNOTATION_SVID_SECRET} is set but this injector gives Envoy its SVID \
                     from SPIRE (envoy.svid.source: spiffe_csi); remove the annotation"
                ));
            }
            svid = SvidSource::Secret(secret.clone());
        }
        let mut warnings = Vec::new();
        let add_envoy = match (envoy_wanted, existing_envoy(pod)) {
            (Some(true), Some(envoy)) => {
                return Err(format!(
                    "{ANNOTATION_ENVOY} is \"true\" but the Pod already has an Envoy \
                     ({envoy}); set it to \"false\" to use that Envoy, or remove it"
                ));
            }
            (None, Some(envoy)) => {
                if let Some(name) = envoy_only.iter().find(|a| annotations.contains_key(**a)) {
                    return Err(format!(
                        "{name} is set but the Pod already has an Envoy ({envoy}), so none is \
                         injected; remove the annotation"
                    ));
                }
                warnings.push(if istio(pod) {
                    format!(
                        "actguard: Envoy not injected, the Pod gets {envoy}; ask actguard from \
                         Istio with an extension provider (TCP listen.grpc and a ServiceEntry, \
                         see deploy/kubernetes/README.md)"
                    )
                } else {
                    format!(
                        "actguard: Envoy not injected, the Pod already has one ({envoy}); point \
                         its ext_authz filter at unix:{SOCKET_DIR}/ext_authz.sock"
                    )
                });
                false
            }
            (Some(false), _) => false,
            (_, None) => true,
        };
        Ok(Self {
            actguard_config,
            envoy_config,
            add_envoy,
            svid,
            warnings,
        })
    }
}

/// The JSON Patch adding `sidecars` (first, in order, before the Pod's own init containers),
/// `volumes`, the status annotation and `annotations`.
fn patch(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    sidecars: &[Container],
    volumes: &[Volume],
    annotations: &[(&str, String)],
) -> Result<Patch, serde_json::Error> {
    let add = |path: PointerBuf, value: serde_json::Value| {
        PatchOperation::Add(AddOperation { path, value })
    };
    let mut operations = Vec::new();
    if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
        operations.push(add(
            PointerBuf::from_tokens(["spec", "initContainers"]),
            serde_json::to_value(sidecars)?,
        ));
    } else {
        // Each inserted at 0 in reverse: ours come first, in order, before the Pod's own.
        for container in sidecars.iter().rev() {
            operations.push(add(
                PointerBuf::from_tokens(["spec", "initContainers", "0"]),
                serde_json::to_value(container)?,
            ));
        }
    }
    if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
        operations.push(add(
            PointerBuf::from_tokens(["spec", "volumes"]),
            serde_json::to_value(volumes)?,
        ));
    } else {
        for volume in volumes {
            operations.push(add(
                PointerBuf::from_tokens(["spec", "volumes", "-"]),
                serde_json::to_value(volume)?,
            ));
        }
    }
    // The inject annotation is present, so the annotations map exists.
    let status = [(ANNOTATION_STATUS, "injected".to_owned())];
    for (key, value) in status.iter().chain(annotations) {
        operations.push(add(
            PointerBuf::from_tokens(["metadata", "annotations", key]),
            serde_json::Value::String(value.clone()),
        ));
    }
    Ok(Patch(operations))
}
