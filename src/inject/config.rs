//! `actguard inject --config FILE`: what the webhook injects (images, resources, default
//! ConfigMaps, where Envoy gets its SVID). Every key is optional; unknown keys and bad values
//! are errors naming the key, like the sidecar's own configuration.

use crate::config::ConfigErrors;
use crate::config::reader::{self, Reader, child};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// CPU and memory requests and limits, as Kubernetes quantities (`50m`, `64Mi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    fn new(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect()
        };
        Self {
            requests: map(requests),
            limits: map(limits),
        }
    }
}

/// Where the injected Envoy reads its X509-SVID and trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvidSource {
    /// A Secret (`svid.pem`, `svid-key.pem`, `bundle.pem`) mounted at [`SECRET_MOUNT`].
    Secret(String),
    /// The SPIRE agent's Workload API socket through the SPIFFE CSI driver, mounted at
    /// [`CSI_MOUNT`]; Envoy asks it over SDS.
    SpiffeCsi,
}

/// Where the JWKS ConfigMap is mounted in the actguard container.
pub const JWKS_MOUNT: &str = "/etc/actguard-jwks";
/// Where a Secret SVID is mounted in the Envoy container.
pub const SECRET_MOUNT: &str = "/run/svid";
/// Where the SPIFFE CSI driver's socket directory is mounted in the Envoy container.
pub const CSI_MOUNT: &str = "/spiffe-workload-api";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActguardSidecar {
    pub image: String,
    pub image_pull_policy: String,
    /// ConfigMap (key `actguard.yaml`) used when the pod names none.
    pub config_map: String,
    /// ConfigMap of the issuers' keys, mounted (when it exists) at [`JWKS_MOUNT`] for
    /// `issuers[].jwks_file`.
    pub jwks_config_map: String,
    /// `listen.probes` in that configuration: the kubelet's probes go here.
    pub probes_port: u16,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoySidecar {
    pub image: String,
    pub image_pull_policy: String,
    /// ConfigMap (key `envoy.yaml`) used when the pod names none.
    pub config_map: String,
    pub svid: SvidSource,
    /// The listener port in that configuration: declared and probed.
    pub port: u16,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorConfig {
    pub actguard: ActguardSidecar,
    pub envoy: EnvoySidecar,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            actguard: ActguardSidecar {
                image: "ghcr.io/actguard/actguard:0.1.0".into(),
                image_pull_policy: "IfNotPresent".into(),
                config_map: "actguard".into(),
                jwks_config_map: "actguard-jwks".into(),
                probes_port: 9902,
                resources: Resources::new(
                    &[("cpu", "50m"), ("memory", "32Mi")],
                    &[("memory", "128Mi")],
                ),
            },
            envoy: EnvoySidecar {
                image: "envoyproxy/envoy:v1.40.0".into(),
                image_pull_policy: "IfNotPresent".into(),
                config_map: "actguard-envoy".into(),
                svid: SvidSource::Secret("actguard-svid".into()),
                port: 8443,
                resources: Resources::new(
                    &[("cpu", "50m"), ("memory", "64Mi")],
                    &[("memory", "256Mi")],
                ),
            },
        }
    }
}

/// A Kubernetes object name (RFC 1123 subdomain: lower-case alphanumerics, `-` and `.`,
/// starting and ending alphanumeric, at most 253 characters).
pub fn is_object_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// A resource quantity such as `100m`, `0.5`, `64Mi`, `1G`.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            let mut parts = number.splitn(2, '.');
            let whole = parts.next().unwrap_or("");
            let fraction = parts.next();
            !whole.is_empty()
                && whole.chars().all(|c| c.is_ascii_digit())
                && fraction.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
        })
    })
}

impl InjectorConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        Self::from_yaml(&reader::read_text(path)?)
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigErrors> {
        let document = reader::parse_yaml(text)?;
        let mut reader = Reader::default();
        let mut config = Self::default();
        // An empty document is the defaults.
        if !document.is_null()
            && let Some(top) = reader.mapping("", &document, &["actguard", "envoy"])
        {
            if let Some(value) = top.get("actguard") {
                read_actguard(&mut reader, value, &mut config.actguard);
            }
            if let Some(value) = top.get("envoy") {
                read_envoy(&mut reader, value, &mut config.envoy);
            }
        }
        if reader.has_errors() {
            Err(ConfigErrors(reader.into_errors()))
        } else {
            Ok(config)
        }
    }
}

fn set_string(reader: &mut Reader, path: &str, value: Option<&Value>, target: &mut String) {
    if let Some(text) = value.and_then(|value| reader.string(path, value)) {
        *target = text.to_owned();
    }
}

fn set_pull_policy(reader: &mut Reader, path: &str, value: Option<&Value>, target: &mut String) {
    let Some(text) = value.and_then(|value| reader.string(path, value)) else {
        return;
    };
    if ["Always", "IfNotPresent", "Never"].contains(&text) {
        *target = text.to_owned();
    } else {
        reader.error(path, "must be Always, IfNotPresent or Never");
    }
}

fn set_object_name(reader: &mut Reader, path: &str, value: Option<&Value>, target: &mut String) {
    let Some(text) = value.and_then(|value| reader.string(path, value)) else {
        return;
    };
    if is_object_name(text) {
        *target = text.to_owned();
    } else {
        reader.error(
            path,
            "must be a Kubernetes object name (lower-case letters, digits, '-' and '.')",
        );
    }
}

fn read_resources(reader: &mut Reader, path: &str, value: &Value, target: &mut Resources) {
    let Some(map) = reader.mapping(path, value, &["requests", "limits"]) else {
        return;
    };
    for (key, slot) in [
        ("requests", &mut target.requests),
        ("limits", &mut target.limits),
    ] {
        let Some(value) = map.get(key) else { continue };
        let section = child(path, key);
        let Some(entries) = reader.mapping(&section, value, &["cpu", "memory"]) else {
            continue;
        };
        slot.clear();
        for (name, quantity) in entries {
            let entry = child(&section, name);
            let Some(text) = reader.string(&entry, quantity) else {
                continue;
            };
            if is_quantity(text) {
                slot.insert(name.clone(), text.to_owned());
            } else {
                reader.error(
                    entry,
                    "must be a Kubernetes quantity such as 50m, 0.5, 64Mi",
                );
            }
        }
    }
}

fn read_actguard(reader: &mut Reader, value: &Value, target: &mut ActguardSidecar) {
    let keys = [
        "image",
        "image_pull_policy",
        "config_map",
        "jwks_config_map",
        "probes_port",
        "resources",
    ];
    let Some(map) = reader.mapping("actguard", value, &keys) else {
        return;
    };
    set_string(
        reader,
        "actguard.image",
        map.get("image"),
        &mut target.image,
    );
    set_pull_policy(
        reader,
        "actguard.image_pull_policy",
        map.get("image_pull_policy"),
        &mut target.image_pull_policy,
    );
    set_object_name(
        reader,
        "actguard.config_map",
        map.get("config_map"),
        &mut target.config_map,
    );
    set_object_name(
        reader,
        "actguard.jwks_config_map",
        map.get("jwks_config_map"),
        &mut target.jwks_config_map,
    );
    if let Some(port) = map
        .get("probes_port")
        .and_then(|value| reader.integer("actguard.probes_port", value, 1, 65535))
    {
        target.probes_port = port as u16;
    }
    if let Some(value) = map.get("resources") {
        read_resources(reader, "actguard.resources", value, &mut target.resources);
    }
}

fn read_envoy(reader: &mut Reader, value: &Value, target: &mut EnvoySidecar) {
    let keys = [
        "image",
        "image_pull_policy",
        "config_map",
        "svid",
        "port",
        "resources",
    ];
    let Some(map) = reader.mapping("envoy", value, &keys) else {
        return;
    };
    set_string(reader, "envoy.image", map.get("image"), &mut target.image);
    set_pull_policy(
        reader,
        "envoy.image_pull_policy",
        map.get("image_pull_policy"),
        &mut target.image_pull_policy,
    );
    set_object_name(
        reader,
        "envoy.config_map",
        map.get("config_map"),
        &mut target.config_map,
    );
    if let Some(value) = map.get("svid")
        && let Some(svid) = reader.mapping("envoy.svid", value, &["source", "secret"])
    {
        let source = reader
            .required("envoy.svid", svid, "source")
            .and_then(|value| reader.string("envoy.svid.source", value));
        match (source, svid.get("secret")) {
            (Some("spiffe_csi"), None) => target.svid = SvidSource::SpiffeCsi,
            (Some("spiffe_csi"), Some(_)) => {
                reader.error("envoy.svid.secret", "only with source: secret");
            }
            (Some("secret"), None) => reader.error("envoy.svid.secret", "is required"),
            (Some("secret"), Some(value)) => {
                let mut name = String::new();
                set_object_name(reader, "envoy.svid.secret", Some(value), &mut name);
                if !name.is_empty() {
                    target.svid = SvidSource::Secret(name);
                }
            }
            (Some(_), _) => reader.error("envoy.svid.source", "must be secret or spiffe_csi"),
            (None, _) => {}
        }
    }
    if let Some(port) = map
        .get("port")
        .and_then(|value| reader.integer("envoy.port", value, 1, 65535))
    {
        target.port = port as u16;
    }
    if let Some(value) = map.get("resources") {
        read_resources(reader, "envoy.resources", value, &mut target.resources);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match InjectorConfig::from_yaml(yaml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            InjectorConfig::from_yaml("").unwrap(),
            InjectorConfig::default()
        );
        assert_eq!(
            InjectorConfig::from_yaml("{}").unwrap(),
            InjectorConfig::default()
        );
    }

    #[test]
    fn every_key_is_read() {
        let config = InjectorConfig::from_yaml(
            r#"
actguard:
  image: registry.example.org/actguard:1.2.3
  image_pull_policy: Always
  config_map: tool-policy
  jwks_config_map: sts-keys
  probes_port: 19902
  resources: {requests: {cpu: 100m, memory: 48Mi}, limits: {cpu: "1", memory: 96Mi}}
envoy:
  image: envoyproxy/envoy:v1.32.1
  config_map: envoy-spire
  svid: {source: spiffe_csi}
  port: 9443
  resources: {limits: {memory: 1Gi}}
"#,
        )
        .unwrap();
        assert_eq!(config.actguard.image, "registry.example.org/actguard:1.2.3");
        assert_eq!(config.actguard.image_pull_policy, "Always");
        assert_eq!(config.actguard.config_map, "tool-policy");
        assert_eq!(config.actguard.probes_port, 19902);
        assert_eq!(config.actguard.jwks_config_map, "sts-keys");
        assert_eq!(config.actguard.resources.limits["cpu"], "1");
        assert_eq!(config.envoy.svid, SvidSource::SpiffeCsi);
        assert_eq!(config.envoy.config_map, "envoy-spire");
        assert_eq!(config.envoy.port, 9443);
        assert_eq!(config.envoy.resources.limits["memory"], "1Gi");
        // Requests not named keep their defaults.
        assert_eq!(config.envoy.resources.requests["memory"], "64Mi");
    }

    #[test]
    fn bad_values_name_their_key() {
        let found = errors(
            r#"
actguard:
  image_pull_policy: Sometimes
  config_map: Not_A_Name
  probes_port: 0
  resources: {requests: {cpu: lots}}
  extra: 1
envoy:
  svid: {source: secret}
"#,
        );
        for expected in [
            "actguard.image_pull_policy: must be Always, IfNotPresent or Never",
            "actguard.config_map: must be a Kubernetes object name",
            "actguard.probes_port: must be a whole number from 1 to 65535",
            "actguard.resources.requests.cpu: must be a Kubernetes quantity",
            "actguard.extra: unknown key",
            "envoy.svid.secret: is required",
        ] {
            assert!(
                found.iter().any(|error| error.starts_with(expected)),
                "{expected:?} not in {found:?}"
            );
        }
        assert_eq!(
            errors("envoy: {svid: {source: spiffe_csi, secret: x}}"),
            vec!["envoy.svid.secret: only with source: secret"]
        );
    }

    #[test]
    fn quantities_and_names() {
        for good in ["50m", "0.5", "64Mi", "1", "2Gi", "1.5G"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "1.", ".5", "5mb", "-1", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(is_object_name("actguard-envoy.v2"));
        for bad in ["", "-x", "x-", "UPPER", "a_b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
