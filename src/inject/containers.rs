//! The containers and volumes the webhook adds: images, resources, probes, a restricted
//! security context, and the mounts that keep the admin socket actguard's alone.

use super::*;

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(name, value)| (name.clone(), Quantity(value.clone())))
            .collect()
    })
}

fn resources(resources: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: quantities(&resources.requests),
        limits: quantities(&resources.limits),
        ..Default::default()
    }
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities, the
/// runtime's default seccomp profile.
fn restricted(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

pub(super) fn actguard_container(settings: &InjectorConfig) -> Container {
    let sidecar = &settings.actguard;
    Container {
        name: ACTGUARD_CONTAINER.into(),
        image: Some(sidecar.image.clone()),
        image_pull_policy: Some(sidecar.image_pull_policy.clone()),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/actguard.yaml"),
        ]),
        // Native sidecar: started before the app, stopped after it.
        restart_policy: Some("Always".into()),
        ports: Some(vec![ContainerPort {
            name: Some("ag-probes".into()),
            container_port: i32::from(sidecar.probes_port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // The app starts only once actguard is ready (a native sidecar's startup probe gates
        // the containers after it); then readiness follows /readyz and liveness /healthz.
        startup_probe: Some(http_probe("/readyz", sidecar.probes_port, 1, 30)),
        readiness_probe: Some(http_probe("/readyz", sidecar.probes_port, 5, 2)),
        liveness_probe: Some(http_probe("/healthz", sidecar.probes_port, 10, 3)),
        resources: Some(resources(&sidecar.resources)),
        security_context: Some(restricted(ACTGUARD_UID)),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(JWKS_VOLUME, JWKS_MOUNT, true),
            mount(SOCKET_VOLUME, SOCKET_DIR, false),
            mount(ADMIN_VOLUME, ADMIN_DIR, false),
        ]),
        ..Default::default()
    }
}

pub(super) fn envoy_container(settings: &InjectorConfig) -> Container {
    let envoy = &settings.envoy;
    let svid_mount = match envoy.svid {
        SvidSource::Secret(_) => SECRET_MOUNT,
        SvidSource::SpiffeCsi => CSI_MOUNT,
    };
    Container {
        name: ENVOY_CONTAINER.into(),
        image: Some(envoy.image.clone()),
        image_pull_policy: Some(envoy.image_pull_policy.clone()),
        command: Some(vec!["envoy".into()]),
        args: Some(vec![
            "--config-path".into(),
            format!("{ENVOY_CONFIG_DIR}/envoy.yaml"),
            // No hot restart: no shared memory, works with a read-only root filesystem.
            "--disable-hot-restart".into(),
        ]),
        restart_policy: Some("Always".into()),
        ports: Some(vec![ContainerPort {
            name: Some("ag-envoy".into()),
            container_port: i32::from(envoy.port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Ready once its listener accepts (the Pod is not Ready before Envoy can take traffic).
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(envoy.port)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(resources(&envoy.resources)),
        security_context: Some(restricted(ENVOY_UID)),
        volume_mounts: Some(vec![
            mount(ENVOY_CONFIG_VOLUME, ENVOY_CONFIG_DIR, true),
            mount(SOCKET_VOLUME, SOCKET_DIR, false),
            mount(SVID_VOLUME, svid_mount, true),
        ]),
        ..Default::default()
    }
}

pub(super) fn planned_volumes(settings: &InjectorConfig, plan: &Plan) -> Vec<Volume> {
    let config_map = |name: &str| ConfigMapVolumeSource {
        name: name.into(),
        ..Default::default()
    };
    let memory = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Mi".into())),
        }),
        ..Default::default()
    };
    let mut volumes = vec![
        memory(SOCKET_VOLUME),
        memory(ADMIN_VOLUME),
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(config_map(&plan.actguard_config)),
            ..Default::default()
        },
        // Optional: a configuration with jwks_uri or discovery needs no JWKS ConfigMap; one
        // with jwks_file fails its start-up check naming the missing file.
        Volume {
            name: JWKS_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                optional: Some(true),
                ..config_map(&settings.actguard.jwks_config_map)
            }),
            ..Default::default()
        },
    ];
    if plan.add_envoy {
        volumes.push(Volume {
            name: ENVOY_CONFIG_VOLUME.into(),
            config_map: Some(config_map(&plan.envoy_config)),
            ..Default::default()
        });
        volumes.push(match &plan.svid {
            SvidSource::Secret(secret) => Volume {
                name: SVID_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SvidSource::SpiffeCsi => Volume {
                name: SVID_VOLUME.into(),
                csi: Some(CSIVolumeSource {
                    driver: "csi.spiffe.io".into(),
                    read_only: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        });
    }
    volumes
}
