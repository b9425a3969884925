//! The HTTP server loop of the axum listeners: HTTP ext_authz (`listen.http`), admin
//! (`listen.admin`, over TCP, a Unix socket or TLS), probes (`listen.probes`) and the
//! injector's webhook.
//!
//! `axum::serve` sets no timer, so a socket that never sent a byte, a request head that never
//! ended, or an idle kept-alive connection was held for ever, and every listener shares the
//! process's file descriptors. Here every connection must send its first bytes (an HTTP/1
//! request line, or the HTTP/2 preface the protocol is told apart by) within the head deadline
//! (the listener's [`BatchedWrites::opening`]), each HTTP/1 request head too (hyper's
//! `header_read_timeout`, also between kept-alive requests), and an HTTP/2 peer that stops
//! answering PINGs is dropped. HTTP/2 gets the gRPC listener's limits, each explicit.

use crate::serve::connection::BatchedWrites;
use crate::serve::grpc;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How long a connection may take to send a request's head: from when it opens or, on a
/// kept-alive HTTP/1 connection, from when the last answer was sent. Proxies and operators'
/// tools send the head at once; a connection that does not is closed instead of holding its
/// file descriptor.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control window per stream and per connection (hyper's default is 1 MiB): these
/// listeners read small bodies or none.
const HTTP2_WINDOW_BYTES: u32 = 64 * 1024;

/// The largest HTTP/1 request head the admin, probe and webhook listeners read (hyper's own
/// bound is ~400 KiB per connection): their requests carry no large headers.
pub const ADMIN_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections the admin, probe and webhook listeners hold at once (each bounded by the head
/// deadline until it sends a request).
pub const ADMIN_MAX_CONNECTIONS: usize = 256;
/// Of those, what one peer address may hold: a client (or a flood from one host) that keeps
/// HTTP/2 connections alive cannot take the slots kubelet or an operator needs.
pub const ADMIN_MAX_CONNECTIONS_PER_PEER: usize = 32;

/// The network address of a listener's peer, when it has one (a Unix-socket peer has none).
pub trait PeerAddress {
    fn ip(&self) -> Option<std::net::IpAddr>;
}

impl PeerAddress for std::net::SocketAddr {
    fn ip(&self) -> Option<std::net::IpAddr> {
        Some(std::net::SocketAddr::ip(self))
    }
}

/// The bounds of one listener and of each of its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections held at once. At the cap the listener stops accepting: further clients
    /// wait in the kernel's backlog until a connection closes, and the file descriptors the
    /// gRPC listener shares are not used up through this one.
    pub max_connections: usize,
    /// Of those, what one peer address may hold; `None`: no share (a proxy in front connects
    /// from one address). A connection past its peer's share is closed at once.
    pub max_connections_per_peer: Option<usize>,
    /// [`HEADER_DEADLINE`], shorter in tests.
    pub header_deadline: Duration,
    /// HTTP/2 streams one connection may have open.
    pub max_streams: u32,
    /// The HTTP/1 read buffer, so the largest request head (a larger one is refused with 431).
    pub max_head_bytes: usize,
    /// After shutdown, how long open connections may take to finish their requests before they
    /// are cut; `None`: as long as they take (the sidecar bounds its listeners all together by
    /// `limits.drain_timeout`).
    pub drain_deadline: Option<Duration>,
}

impl ConnectionLimits {
    /// [`ADMIN_MAX_CONNECTIONS`] ([`ADMIN_MAX_CONNECTIONS_PER_PEER`] per peer address),
    /// [`HEADER_DEADLINE`], `max_streams` streams, heads of [`ADMIN_MAX_HEAD_BYTES`] and no
    /// drain deadline.
    pub fn new(max_streams: u32) -> Self {
        Self {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_connections_per_peer: Some(ADMIN_MAX_CONNECTIONS_PER_PEER),
            header_deadline: HEADER_DEADLINE,
            max_streams,
            max_head_bytes: ADMIN_MAX_HEAD_BYTES,
            drain_deadline: None,
        }
    }
}

/// A plain TCP listener whose connections must send their first bytes within a deadline.
struct OpeningTcpListener {
    listener: TcpListener,
    deadline: Duration,
}

impl axum::serve::Listener for OpeningTcpListener {
    type Io = BatchedWrites<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (BatchedWrites::opening(stream, self.deadline), address);
                }
                // One connection failed before it was accepted: the next may not.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin (and log once a
                    // second at most), and keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// [`serve`] on a plain TCP listener, whose connections must send their first bytes within
/// `limits.header_deadline`.
pub async fn serve_tcp(
    listener: TcpListener,
    router_for: impl Fn(std::net::SocketAddr) -> Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve(opening_tcp(listener, &limits), router_for, limits, shutdown).await;
}

/// `listener` handing over connections that must send their first bytes within
/// `limits.header_deadline`.
pub fn opening_tcp(
    listener: TcpListener,
    limits: &ConnectionLimits,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> + use<> {
    OpeningTcpListener {
        listener,
        deadline: limits.header_deadline,
    }
}

/// Serves `listener` until `shutdown`, each connection with the router `router_for` makes from
/// its peer, then lets open connections finish their requests (for at most
/// `limits.drain_deadline`). The listening socket is closed at shutdown, so new clients are
/// refused at once (and fail over) instead of waiting in the backlog.
pub async fn serve<L>(
    mut listener: L,
    router_for: impl Fn(L::Addr) -> Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) where
    L: axum::serve::Listener,
    L::Addr: PeerAddress,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_deadline)
        // hyper refuses a buffer below 8 KiB.
        .max_buf_size(limits.max_head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_pending_accept_reset_streams(Some(grpc::HTTP2_MAX_PENDING_ACCEPT_RESETS))
        .max_local_error_reset_streams(Some(grpc::HTTP2_MAX_LOCAL_ERROR_RESETS))
        .max_header_list_size(grpc::HTTP2_MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(HTTP2_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_WINDOW_BYTES)
        .keep_alive_interval(Some(grpc::HTTP2_KEEPALIVE_INTERVAL))
        .keep_alive_timeout(grpc::HTTP2_KEEPALIVE_TIMEOUT);
    let builder = Arc::new(builder);
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let shares = limits
        .max_connections_per_peer
        .map(crate::serve::connection::PeerShares::new);
    tokio::pin!(shutdown);
    let mut at_cap = false;
    loop {
        let open = connections.len();
        if open >= limits.max_connections && !at_cap {
            tracing::warn!(open, "listener at its connection cap: new clients wait");
        }
        at_cap = open >= limits.max_connections;
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept(), if !at_cap => accepted,
        };
        let share = match (&shares, peer.ip()) {
            (Some(shares), Some(address)) => match shares.enter(address) {
                Some(share) => Some(share),
                None => {
                    tracing::debug!(%address, "peer holds its share of connections: closed");
                    continue;
                }
            },
            _ => None,
        };
        let service = hyper_util::service::TowerToHyperService::new(router_for(peer));
        let builder = Arc::clone(&builder);
        let mut closed = closed.clone();
        connections.spawn(async move {
            // Given back when the connection ends.
            let _share = share;
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { while closed.changed().await.is_ok() && !*closed.borrow() {} } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    match limits.drain_deadline {
        None => drained.await,
        Some(deadline) => {
            if tokio::time::timeout(deadline, drained).await.is_err() {
                // Dropping the set aborts the connections' tasks.
                tracing::warn!(
                    ?deadline,
                    "requests still in flight at the drain deadline: cut"
                );
            }
        }
    }
}

/// The router of a listener that tells handlers its peer: `ConnectInfo(peer)` on every request
/// of the connection (what `into_make_service_with_connect_info` did under `axum::serve`).
pub fn with_peer<P: Clone + Send + Sync + 'static>(router: &Router, peer: P) -> Router {
    router
        .clone()
        .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
}
