//! TLS on the ext_authz gRPC listener: only the local Envoy may ask. Also server-only TLS for
//! the injection webhook (the Kubernetes API server presents no client certificate).
//!
//! Guarantees in mutual mode: the client must present a certificate that chains to `client_ca` (webpki
//! verification by rustls) and is an X509-SVID whose SPIFFE ID matches `allow_peers`;
//! otherwise the connection is closed before any request is read. The server certificate, key
//! and client CA are re-read when their files change (SVIDs rotate hourly); a change that does
//! not load keeps the previous material serving and is logged.

use crate::config::tls::{TlsSettings, server_config, server_only_config};
use crate::decision::identity;
use crate::serve::connection::{BatchedWrites, PeerShare, PeerShares};
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// What a gate's TLS material is and how peers are checked.
enum Mode {
    /// Client certificates required, chained to `client_ca`, SPIFFE ID in `allow_peers`.
    Mutual(TlsSettings),
    /// No client certificate: any client that completes the handshake.
    ServerOnly {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
}

impl Mode {
    fn files(&self) -> Vec<&PathBuf> {
        match self {
            Self::Mutual(settings) => vec![&settings.cert, &settings.key, &settings.client_ca],
            Self::ServerOnly { cert, key, .. } => vec![cert, key],
        }
    }

    fn load(&self) -> Result<Arc<ServerConfig>, String> {
        match self {
            Self::Mutual(settings) => server_config(settings),
            Self::ServerOnly { cert, key, .. } => server_only_config(cert, key),
        }
    }

    fn reload_interval(&self) -> Duration {
        match self {
            Self::Mutual(settings) => settings.reload_interval,
            Self::ServerOnly {
                reload_interval, ..
            } => *reload_interval,
        }
    }
}

/// Accepts TLS connections with the current configuration and, in mutual mode, the peer
/// allow-list.
#[derive(Clone)]
pub struct TlsGate {
    mode: Arc<Mode>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

fn modified(mode: &Mode) -> Vec<Option<SystemTime>> {
    mode.files()
        .into_iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

impl TlsGate {
    pub fn new(settings: TlsSettings) -> Result<Self, String> {
        Self::with_mode(Mode::Mutual(settings))
    }

    /// Server-only TLS from `cert` and `key`, re-read when they change.
    pub fn server_only(
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    ) -> Result<Self, String> {
        Self::with_mode(Mode::ServerOnly {
            cert,
            key,
            reload_interval,
        })
    }

    fn with_mode(mode: Mode) -> Result<Self, String> {
        let config = mode.load()?;
        Ok(Self {
            mode: Arc::new(mode),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Polls the files and swaps in new material when they change and load.
    pub async fn watch_files(self) {
        let mut seen = modified(&self.mode);
        let mut ticker = tokio::time::interval(self.mode.reload_interval());
        loop {
            ticker.tick().await;
            let now = modified(&self.mode);
            if now == seen {
                continue;
            }
            seen = now;
            match self.mode.load() {
                Ok(config) => {
                    if let Ok(mut current) = self.current.write() {
                        *current = config;
                    }
                    let cert = self.mode.files()[0].display().to_string();
                    tracing::info!(%cert, "TLS: reloaded certificate and key (and client CA)");
                }
                Err(error) => {
                    tracing::error!(%error, "TLS: reload failed; keeping the previous material");
                }
            }
        }
    }

    /// Handshakes and checks the peer; `None` when the connection must be dropped.
    pub async fn accept(&self, stream: TcpStream) -> Option<TlsConnection> {
        let config = self.current.read().ok().map(|config| Arc::clone(&config))?;
        let tls = match TlsAcceptor::from(config).accept(stream).await {
            Ok(tls) => tls,
            Err(error) => {
                tracing::debug!(%error, "TLS handshake refused");
                return None;
            }
        };
        // Past the handshake the connection still owes its first request bytes in time.
        let opened = |tls| BatchedWrites::opening(tls, crate::serve::grpc::PREFACE_DEADLINE);
        let Mode::Mutual(settings) = &*self.mode else {
            return Some(opened(tls));
        };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| identity::spiffe_id_from_der(leaf.as_ref()).map(|svid| svid.id));
        match peer {
            Some(Ok(id)) if settings.allow_peers.iter().any(|p| p.matches(&id)) => {
                Some(opened(tls))
            }
            Some(Ok(id)) => {
                tracing::warn!(peer = %id, "TLS client not in allow_peers");
                None
            }
            _ => {
                tracing::warn!("TLS client certificate is not an X509-SVID");
                None
            }
        }
    }
}

/// An accepted, allowed TLS connection, as tonic and axum serve it.
pub type TlsConnection = BatchedWrites<TlsStream<TcpStream>>;

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Most TLS handshakes in progress on one listener.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Most handshakes in progress from one peer address: a single client (or a flood from one
/// host) cannot take the slots every other peer needs.
const MAX_PENDING_HANDSHAKES_PER_PEER: usize = 8;
/// How long a handshake may take. A real one on a loopback or pod network takes milliseconds
/// (two round trips and a signature each way); idle connections are cut after this.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);

/// The handshake slots of one listener: [`MAX_PENDING_HANDSHAKES`] in all, and
/// [`MAX_PENDING_HANDSHAKES_PER_PEER`] for each peer address.
struct HandshakeSlots {
    all: Arc<Semaphore>,
    peers: Arc<PeerShares>,
}

/// A handshake's share of both limits, given back when dropped.
type HandshakeSlot = (PeerShare, tokio::sync::OwnedSemaphorePermit);

impl HandshakeSlots {
    fn new() -> Self {
        Self {
            all: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            peers: PeerShares::new(MAX_PENDING_HANDSHAKES_PER_PEER),
        }
    }

    /// A slot for one more handshake from `peer`, unless the peer's share or the listener's
    /// slots are used up.
    fn enter(&self, peer: std::net::IpAddr) -> Option<HandshakeSlot> {
        let peer_slot = self.peers.enter(peer)?;
        let permit = Arc::clone(&self.all).try_acquire_owned().ok()?;
        Some((peer_slot, permit))
    }
}

/// Accepts TCP connections and hands over those that pass the TLS gate. Each handshake runs in
/// its own task, so a slow or hostile client cannot hold up the accept loop; the loop ends when
/// the server drops the stream.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    gate: TlsGate,
) -> tokio::sync::mpsc::Receiver<Result<TlsConnection, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    // Unauthenticated clients may hold at most this many handshakes at once, and each peer
    // address only a few of them.
    let slots = HandshakeSlots::new();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = slots.enter(peer.ip()) else {
                // This peer already has its share of handshakes in progress, or the listener
                // has too many: drop the connection at once.
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (gate, sender) = (gate.clone(), sender.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_DEADLINE, gate.accept(stream));
                let accepted = handshake.await;
                drop(slot);
                if let Ok(Some(connection)) = accepted {
                    let _ = sender.send(Ok(connection)).await;
                }
            });
        }
    });
    receiver
}

/// The admin listener over TLS, for axum: connections that passed the [`TlsGate`].
pub struct TlsAxumListener {
    connections: tokio::sync::mpsc::Receiver<Result<TlsConnection, std::io::Error>>,
    address: std::net::SocketAddr,
}

impl TlsAxumListener {
    pub fn new(listener: TcpListener, gate: TlsGate) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        Ok(Self {
            connections: tls_incoming(listener, gate),
            address,
        })
    }
}

/// Who is at the other end of a TLS connection: its address and, in mutual mode, the
/// SPIFFE ID of the certificate it passed the gate with. (The listener's own
/// [`local_addr`](axum::serve::Listener::local_addr) reports its address and no ID.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    pub address: std::net::SocketAddr,
    pub id: Option<crate::decision::spiffe::SpiffeId>,
}

impl crate::serve::http_server::PeerAddress for TlsPeer {
    fn ip(&self) -> Option<std::net::IpAddr> {
        Some(self.address.ip())
    }
}

impl TlsPeer {
    fn of(connection: &TlsConnection, local: std::net::SocketAddr) -> Self {
        let (tcp, session) = connection.get_ref().get_ref();
        let id = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| identity::spiffe_id_from_der(leaf.as_ref()).ok())
            .map(|svid| svid.id);
        Self {
            address: tcp.peer_addr().unwrap_or(local),
            id,
        }
    }
}

impl axum::serve::Listener for TlsAxumListener {
    type Io = TlsConnection;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.recv().await {
                Some(Ok(connection)) => {
                    let peer = TlsPeer::of(&connection, self.address);
                    return (connection, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop ended: wait for the server's shutdown.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer {
            address: self.address,
            id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_handshake_slots_are_bounded_per_peer_and_in_all() {
        let slots = HandshakeSlots::new();
        let peer = |n: u32| std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        // One peer: 8 handshakes, not a 9th.
        let mut held: Vec<HandshakeSlot> = (0..8).map(|_| slots.enter(peer(0)).unwrap()).collect();
        assert!(
            slots.enter(peer(0)).is_none(),
            "a 9th handshake from one peer"
        );
        // 31 more peers fill the listener's 256 slots; a 33rd peer gets none.
        for n in 1..32 {
            for _ in 0..8 {
                held.push(slots.enter(peer(n)).unwrap());
            }
        }
        assert_eq!(held.len(), 256);
        assert!(slots.enter(peer(32)).is_none(), "a 257th handshake");
        // A finished handshake (one of peer 0's) gives back both its slots.
        drop(held.swap_remove(0));
        assert!(
            slots.enter(peer(32)).is_some(),
            "the listener's slot is free again"
        );
        assert!(
            slots.enter(peer(0)).is_some(),
            "the peer's share is given back too"
        );
    }
}
