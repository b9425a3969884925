//! The sidecar process: every listener bound before anything is served, readiness and gRPC
//! health published, and an orderly shutdown.
//!
//! Start-up: bind gRPC, admin and HTTP listeners (a bind failure stops start-up with the key
//! that names the address), start the audit writer, serve, then mark ready (readiness 200,
//! gRPC health SERVING).
//! Shutdown ([`Sidecar::shutdown`], on SIGTERM/SIGINT): readiness 503 and gRPC health
//! NOT_SERVING first, then stop accepting and let in-flight checks finish within
//! `limits.drain_timeout`, then flush the audit log.

use crate::config::Config;
use crate::config::ConfigErrors;
use crate::decision::revocation::RevocationList;
use crate::decision::telemetry;
use crate::decision::{Authorizer, Shared};
use crate::serve::admin::{self, AdminState, Readiness};
use crate::serve::admin_auth::{AdminPeer, AdminPolicy, CredentialedUnixListener};
use crate::serve::audit::{AuditLog, AuditWriter};
use crate::serve::fleet::FleetSync;
use crate::serve::grpc::{self, Listener, ServeOptions};
use crate::serve::http_authz;
use crate::serve::http_server::{self, ConnectionLimits, PeerAddress};
use crate::serve::reload::{self, BoundSettings, LiveAuthorizer};
use crate::serve::tls::TlsGate;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::SERVICE_NAME;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

/// HTTP/2 streams one admin or probe connection may have open: operators' tools and kubelet
/// send a request at a time.
const ADMIN_HTTP2_STREAMS: u32 = 64;

/// The admin router served on `listener`, each connection's requests told their peer.
fn serve_admin<L>(
    listener: L,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: PeerAddress + Into<AdminPeer>,
{
    tokio::spawn(http_server::serve(
        listener,
        move |peer| {
            let peer: AdminPeer = peer.into();
            http_server::with_peer(&router, peer)
        },
        limits,
        stop,
    ))
}

/// A running sidecar.
pub struct Sidecar {
    /// Where ext_authz gRPC listens (`IP:PORT` or `unix:/path`).
    pub grpc_address: String,
    /// The admin listener's TCP address, when it listens on TCP.
    pub admin_address: Option<SocketAddr>,
    /// The admin listener's socket path, when it listens on a Unix socket.
    pub admin_socket: Option<PathBuf>,
    pub http_address: Option<SocketAddr>,
    /// The probe listener's address (`listen.probes`).
    pub probes_address: Option<SocketAddr>,
    /// The authorizer in force; [`Sidecar::reload`] swaps it.
    pub authorizer: Arc<LiveAuthorizer>,
    /// What was bound at start (a reload cannot change it).
    pub bound: BoundSettings,
    pub readiness: Arc<Readiness>,
    health: HealthReporter,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Watchers (TLS files, configuration) that run until shutdown aborts them.
    background: Vec<JoinHandle<()>>,
    audit_writer: Option<AuditWriter>,
    drain_timeout: Duration,
}

async fn bind_tcp(key: &str, address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|error| format!("{key}: cannot bind {address}: {error}"))
}

/// The uid that created a Unix listening socket (its inode's owner): actguard's own.
fn socket_owner_uid(listener: &tokio::net::UnixListener) -> std::io::Result<u32> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let descriptor = listener.as_fd().try_clone_to_owned()?;
    Ok(std::fs::File::from(descriptor).metadata()?.uid())
}

/// A 0600 socket admits only its owner and root: a right granted to any other uid could never
/// be used, which is a mistake worth stopping for.
fn check_socket_uids(
    rights: &crate::config::AdminRights,
    owner: Option<u32>,
) -> Result<(), String> {
    for operation in crate::config::AdminOperation::ALL {
        let Some(uids) = &rights.grantees(operation).uids else {
            continue;
        };
        if let Some(uid) = uids.iter().find(|uid| **uid != 0 && Some(**uid) != owner) {
            return Err(format!(
                "admin.{}_uids: uid {uid} can never connect to the admin socket (mode 0600: only its owner{} and root)",
                operation.name(),
                owner
                    .map(|owner| format!(", uid {owner},"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Resolves when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> Result<Sidecar, String> {
    let metrics = telemetry::install()?;
    telemetry::record_config_load(true);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }

    let bound = BoundSettings::of(&config);
    let listen = config.listen.clone();
    let limits = config.limits;
    let mut grpc = Listener::bind(&listen.grpc)
        .await
        .map_err(|error| format!("listen.grpc: cannot bind {:?}: {error}", listen.grpc))?;
    let mut background = Vec::new();
    if let (Some(settings), Listener::Tcp(_)) = (&listen.grpc_tls, &grpc) {
        let gate =
            TlsGate::new(settings.clone()).map_err(|error| format!("listen.grpc_tls: {error}"))?;
        background.push(tokio::spawn(gate.clone().watch_files()));
        if let Listener::Tcp(tcp) = grpc {
            grpc = Listener::Tls(tcp, gate);
        }
    }
    let admin = match &listen.admin {
        // The admin socket is for its owner (and root) from the moment it exists; each call
        // is then authorized by the peer's uid.
        Some(address) => Some(
            Listener::bind_with_mode(address, 0o600)
                .await
                .map_err(|error| format!("listen.admin: cannot bind {address:?}: {error}"))?,
        ),
        None => None,
    };
    // The admin socket's owner is read from the socket itself (fstat on its descriptor), never
    // through the path, which a writable directory would let someone replace.
    let admin_socket_owner = match &admin {
        Some(Listener::Unix(listener)) => {
            Some(socket_owner_uid(listener).map_err(|error| format!("listen.admin: {error}"))?)
        }
        _ => None,
    };
    if admin_socket_owner.is_some() {
        check_socket_uids(&config.admin, admin_socket_owner)?;
    }
    let http = match listen.http {
        Some(address) => Some(bind_tcp("listen.http", address).await?),
        None => None,
    };
    let probes = match listen.probes {
        Some(address) => Some(bind_tcp("listen.probes", address).await?),
        None => None,
    };
    let (audit, audit_writer) = match &config.audit {
        Some(audit_config) => {
            let (log, writer) = AuditLog::start(audit_config)
                .map_err(|error| format!("audit.output: cannot open: {error}"))?;
            (log, Some(writer))
        }
        None => (AuditLog::disabled(), None),
    };
    let revocations = match &config.revocation_file {
        Some(file) => {
            RevocationList::persisted(file).map_err(|error| format!("revocation.file: {error}"))?
        }
        None => RevocationList::in_memory(),
    };
    if config.revocation_nats.is_some() {
        // Until the bucket's snapshot is applied and confirmed, the list decides nothing.
        revocations.mirror_a_shared_store();
    }
    let admin_audit = audit.clone();
    let shared = Shared {
        audit: Arc::new(audit),
        revocations: Arc::new(revocations),
    };
    if let Some(settings) = &config.revocation_nats {
        let sync = FleetSync::new(
            settings.clone(),
            Arc::clone(&shared.revocations),
            admin_audit.clone(),
        );
        background.push(tokio::spawn(sync.run()));
    }
    let fleet_writes = config
        .revocation_nats
        .clone()
        .map(|settings| Arc::new(crate::serve::fleet::FleetWrites::new(settings)));
    let budgets = match &config.budgets {
        Some(settings) => Some(crate::serve::budgets::Ledger::new(settings.clone())?),
        None => None,
    };
    if let Some(ledger) = &budgets {
        background.push(tokio::spawn(
            Arc::clone(ledger).watch(crate::serve::budgets::PROBE_INTERVAL),
        ));
    }
    let initial = Authorizer::with_shared(config.decision, shared.clone());
    // Remote keys before readiness; a failure leaves the issuer unavailable (readiness false,
    // its checks fail closed) while the background refresh retries with backoff.
    for error in reload::fetch_remote_keys(&initial).await {
        tracing::error!(%error, "initial JWKS fetch failed");
    }
    let authorizer = Arc::new(LiveAuthorizer::new(initial, shared));
    let readiness = Arc::new(Readiness::default());
    if let Some(ledger) = &budgets {
        readiness.watch_budgets(Arc::clone(ledger));
    }
    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;
    let (stop, _) = watch::channel(false);
    let mut tasks = Vec::new();

    let grpc_address = grpc.describe();
    let options = ServeOptions {
        max_concurrent_checks: limits.max_concurrent_checks,
        check_timeout: Some(limits.check_timeout),
        health: Some(tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(health.clone()),
        )),
        reflection: listen.reflection,
        budgets: budgets.clone(),
        ..ServeOptions::default()
    };
    let grpc_stop = stopped(stop.subscribe());
    let grpc_authorizer = Arc::clone(&authorizer);
    tasks.push(tokio::spawn(async move {
        if let Err(error) = grpc::run_with(grpc, grpc_authorizer, options, grpc_stop).await {
            tracing::error!(%error, "ext_authz gRPC listener failed");
        }
    }));
    let (mut admin_address, mut admin_socket) = (None, None);
    let admin = match (admin, &listen.admin_tls) {
        (Some(Listener::Tcp(tcp)), Some(settings)) => {
            let gate = TlsGate::new(settings.clone())
                .map_err(|error| format!("listen.admin_tls: {error}"))?;
            background.push(tokio::spawn(gate.clone().watch_files()));
            admin_address = tcp.local_addr().ok();
            Some(Listener::Tls(tcp, gate))
        }
        (admin, _) => admin,
    };
    let state = AdminState {
        authorizer: Arc::clone(&authorizer),
        readiness: Arc::clone(&readiness),
        metrics,
    };
    let mut probes_address = None;
    if let Some(listener) = probes {
        probes_address = listener.local_addr().ok();
        let router = admin::probe_router(state.clone());
        let probes_stop = stopped(stop.subscribe());
        tasks.push(tokio::spawn(http_server::serve_tcp(
            listener,
            move |_| router.clone(),
            ConnectionLimits::new(ADMIN_HTTP2_STREAMS),
            probes_stop,
        )));
    }
    if let Some(listener) = admin {
        let admin_stop = stopped(stop.subscribe());
        let api = |socket_owner: Option<u32>| admin::AdminApi {
            policy: Arc::new(AdminPolicy::new(
                &listen,
                config.admin.clone(),
                socket_owner,
            )),
            audit: admin_audit.clone(),
            fleet: fleet_writes.clone(),
        };
        let limits = ConnectionLimits::new(ADMIN_HTTP2_STREAMS);
        let task = match listener {
            Listener::Tcp(listener) => {
                admin_address = listener.local_addr().ok();
                let router = admin::router(state, api(None), listen.reflection);
                let listener = http_server::opening_tcp(listener, &limits);
                serve_admin(listener, router, limits, admin_stop)
            }
            Listener::Unix(listener) => {
                admin_socket = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf));
                let router = admin::router(state, api(admin_socket_owner), listen.reflection);
                let listener = CredentialedUnixListener {
                    listener,
                    deadline: limits.header_deadline,
                };
                serve_admin(listener, router, limits, admin_stop)
            }
            Listener::Tls(tcp, gate) => {
                let listener = crate::serve::tls::TlsAxumListener::new(tcp, gate)
                    .map_err(|error| format!("listen.admin_tls: {error}"))?;
                let router = admin::router(state, api(None), listen.reflection);
                serve_admin(listener, router, limits, admin_stop)
            }
        };
        tasks.push(task);
    }
    let mut http_address = None;
    if let Some(listener) = http {
        http_address = listener.local_addr().ok();
        let router = http_authz::router(
            Arc::clone(&authorizer),
            limits.max_concurrent_checks,
            listen.http_request,
            budgets.clone(),
        );
        let http_stop = stopped(stop.subscribe());
        tasks.push(tokio::spawn(http_server::serve_tcp(
            listener,
            move |_| router.clone(),
            http_authz::connection_limits(limits.max_concurrent_checks),
            http_stop,
        )));
    }

    readiness.mark_listeners_bound();
    // gRPC health agrees with /readyz from the moment start returns, not a tick later.
    let ready = readiness.check(&authorizer.current()).is_ok();
    set_health(&health, serving_status(ready)).await;
    background.push(tokio::spawn(publish_health(
        Arc::clone(&readiness),
        Arc::clone(&authorizer),
        health.clone(),
        ready,
    )));
    tracing::info!(
        grpc = %grpc_address,
        admin = ?admin_address,
        http = ?http_address,
        probes = ?probes_address,
        "actguard ready"
    );
    Ok(Sidecar {
        grpc_address,
        admin_address,
        admin_socket,
        http_address,
        probes_address,
        authorizer,
        bound,
        readiness,
        health,
        stop,
        tasks,
        background,
        audit_writer,
        drain_timeout: limits.drain_timeout,
    })
}

/// Keeps gRPC health in step with readiness (keys can become available or stale at any time).
fn serving_status(ready: bool) -> ServingStatus {
    if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn publish_health(
    readiness: Arc<Readiness>,
    authorizer: Arc<LiveAuthorizer>,
    health: HealthReporter,
    published_ready: bool,
) {
    let mut published = published_ready;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let ready = readiness.check(&authorizer.current()).is_ok();
        if published != ready {
            set_health(&health, serving_status(ready)).await;
            published = ready;
        }
    }
}

impl Sidecar {
    /// Reloads the configuration from `file` (SIGHUP); on error the running one stays.
    pub async fn reload(&self, file: &Path) -> Result<(), ConfigErrors> {
        self.authorizer.reload(file, &self.bound).await
    }

    /// Reloads whenever `file` or a JWKS file it names changes from how they are now (checked
    /// every `interval`).
    pub fn watch_config(&mut self, file: PathBuf, interval: Duration) {
        let baseline = reload::Baseline::of(&file);
        self.watch_config_since(baseline, file, interval);
    }

    /// [`Self::watch_config`] against stamps read earlier: before the running configuration
    /// was loaded, so a change made while the sidecar started is reloaded.
    pub fn watch_config_since(
        &mut self,
        baseline: reload::Baseline,
        file: PathBuf,
        interval: Duration,
    ) {
        let watcher = tokio::spawn(reload::watch(
            Arc::clone(&self.authorizer),
            file,
            self.bound.clone(),
            interval,
            baseline,
        ));
        self.background.push(watcher);
    }

    /// Flips readiness to 503 and gRPC health to NOT_SERVING, still answering checks: the
    /// first step of shutdown, separate so load balancers can be given time to notice.
    pub async fn begin_drain(&self) {
        self.readiness.mark_draining();
        set_health(&self.health, ServingStatus::NotServing).await;
    }

    /// Not ready, stop accepting, drain in-flight checks (bounded), flush the audit log.
    /// Returns `Err` when the drain deadline passed with checks still running.
    pub async fn shutdown(self) -> Result<(), String> {
        self.begin_drain().await;
        let _ = self.stop.send(true);
        for watcher in &self.background {
            watcher.abort();
        }
        self.authorizer.stop_refreshers();
        let drained = tokio::time::timeout(self.drain_timeout, async {
            for task in self.tasks {
                let _ = task.await;
            }
        })
        .await;
        if let Some(writer) = self.audit_writer {
            // The writer thread blocks on I/O; do not hold a runtime worker for it.
            let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
        }
        drained.map_err(|_| {
            format!(
                "limits.drain_timeout ({}s) passed with checks still in flight",
                self.drain_timeout.as_secs()
            )
        })
    }
}
