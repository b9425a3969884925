//! The gRPC adapter: `envoy.service.auth.v3.Authorization/Check` over a listener the caller
//! has already bound (so tests can bind port 0 and read the address back).
//!
//! A panic while deciding is caught and answered with gRPC `INTERNAL`: with Envoy's
//! `failure_mode_allow: false` that denies the request. Nothing here can turn a fault into an
//! allow; the only `OK` comes from [`crate::decision::response`] for a [`crate::decision::policy::Grant`].

use crate::config::ListenAddress;
use crate::decision::reason::Fault;
use crate::decision::response::Answer;
use crate::decision::telemetry;
use crate::decision::{Authorizer, CheckError};
use crate::serve::budgets::{self, Ledger};
use crate::serve::connection::BatchedWrites;
use crate::serve::tls::{TlsGate, tls_incoming};
use envoy_types::pb::envoy::service::auth::v3::authorization_server;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

/// Something that answers a `CheckRequest`. [`Authorizer`] is the real one; the seam exists so
/// a test can prove that a handler which panics yields a gRPC error, never an allow.
///
/// `may_retry` is true on the first attempt: a handler may then ask to be called again after
/// a remote key refetch ([`CheckError::RetryAfterRefetch`]).
pub trait CheckHandler: Send + Sync + 'static {
    fn check(&self, request: &CheckRequest, may_retry: bool) -> Result<CheckResponse, CheckError>;

    /// The answer as the server sends it; by default the message [`CheckHandler::check`] builds.
    fn answer(&self, request: &CheckRequest, may_retry: bool) -> Result<Answer, CheckError> {
        self.check(request, may_retry).map(Answer::from)
    }
}

impl CheckHandler for Authorizer {
    fn check(&self, request: &CheckRequest, may_retry: bool) -> Result<CheckResponse, CheckError> {
        Authorizer::check(self, request, may_retry)
    }

    fn answer(&self, request: &CheckRequest, may_retry: bool) -> Result<Answer, CheckError> {
        Authorizer::answer(self, request, may_retry)
    }
}

/// Runs a synchronous check, turning a panic into a fault.
fn guarded<H: CheckHandler>(
    handler: &H,
    request: &CheckRequest,
    may_retry: bool,
) -> Result<Answer, CheckError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| handler.answer(request, may_retry)))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(CheckError::Fault(Fault::Internal(message)))
        })
}

/// The ext_authz service over one handler.
pub struct AuthorizationService<H> {
    authorizer: Arc<H>,
    /// Admission control: a check that finds no permit is rejected at once (RESOURCE_EXHAUSTED,
    /// which Envoy with `failure_mode_allow: false` turns into a deny) instead of queueing.
    admission: Arc<Semaphore>,
    /// `actguard_checks_in_flight`, taken once (see [`telemetry::DecisionMetrics`]).
    in_flight: metrics::Gauge,
    /// Where budgeted allows are charged (`budgets`).
    budgets: Option<Arc<Ledger>>,
}

impl<H: CheckHandler> AuthorizationService<H> {
    pub fn new(authorizer: Arc<H>, max_concurrent_checks: usize) -> Self {
        // The process recorder, before any handle is taken from it.
        let _ = telemetry::install();
        Self {
            authorizer,
            admission: Arc::new(Semaphore::new(max_concurrent_checks)),
            in_flight: metrics::gauge!(telemetry::INFLIGHT),
            budgets: None,
        }
    }

    /// This service charging budgeted allows on `ledger`.
    pub fn with_budgets(mut self, ledger: Option<Arc<Ledger>>) -> Self {
        self.budgets = ledger;
        self
    }
}

/// Counts a check in `actguard_checks_in_flight` for as long as it lives.
struct InFlight<'a>(&'a metrics::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl<H: CheckHandler> AuthorizationService<H> {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<Answer>, Status> {
        let Ok(_permit) = self.admission.try_acquire() else {
            metrics::counter!(telemetry::OVERLOAD_REJECTIONS).increment(1);
            return Err(Status::resource_exhausted("actguard is overloaded"));
        };
        let _in_flight = InFlight::enter(&self.in_flight);
        let request = request.into_inner();
        let handler = self.authorizer.as_ref();
        // The decision is synchronous and CPU-bound (microseconds); only an unknown-kid
        // refetch is awaited, once, and then the check runs again.
        let mut outcome = guarded(handler, &request, true);
        if let Err(CheckError::RetryAfterRefetch(remote)) = outcome {
            remote.refetch_for_unknown_kid().await;
            outcome = guarded(handler, &request, false);
        }
        // Allowed by every rule on a budgeted route: the ledger has the last word.
        // In a task of its own: once a charge may have been made it is settled and recorded,
        // even when the caller gives up first (Envoy's timeout drops this future).
        if let Err(CheckError::Charge(pending)) = outcome {
            let ledger = self.budgets.clone();
            let settled = tokio::spawn(async move {
                let charged = budgets::charge_pending(ledger.as_deref(), &pending).await;
                pending.settle(charged)
            })
            .await;
            outcome = settled.unwrap_or_else(|_| {
                Err(CheckError::Fault(Fault::Internal(
                    "panic while settling a budget charge".into(),
                )))
            });
        }
        match outcome {
            Ok(answer) => Ok(Response::new(answer)),
            Err(CheckError::Fault(fault)) => {
                tracing::error!(%fault, "check failed; answering with a gRPC error (Envoy denies)");
                Err(fault.into())
            }
            Err(CheckError::RetryAfterRefetch(_)) => {
                Err(Status::unavailable("issuer keys are being refreshed"))
            }
            // Settled above; a charge still pending here would be a bug: never an allow.
            Err(CheckError::Charge(_)) => Err(Status::internal("actguard internal fault")),
        }
    }
}

/// The gRPC method path Envoy calls.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `envoy.service.auth.v3.Authorization` on tonic's server machinery, like the service
/// envoy-types generates except for the codec: it writes [`Answer`]s, so an allow goes out
/// encoded from its grant instead of as a built `CheckResponse`.
pub struct AuthorizationServer<H> {
    service: Arc<AuthorizationService<H>>,
}

impl<H> AuthorizationServer<H> {
    pub fn new(service: AuthorizationService<H>) -> Self {
        Self {
            service: Arc::new(service),
        }
    }
}

impl<H> Clone for AuthorizationServer<H> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
        }
    }
}

impl<H> tonic::server::NamedService for AuthorizationServer<H> {
    const NAME: &'static str = authorization_server::SERVICE_NAME;
}

/// The one unary method, as tonic's server drives it.
struct CheckMethod<H>(Arc<AuthorizationService<H>>);

impl<H: CheckHandler> tonic::server::UnaryService<CheckRequest> for CheckMethod<H> {
    type Response = Answer;
    type Future = BoxFuture<Response<Answer>, Status>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.check(request).await })
    }
}

impl<H, B> tower::Service<http::Request<B>> for AuthorizationServer<H>
where
    H: CheckHandler,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let method = CheckMethod(Arc::clone(&self.service));
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Answer, CheckRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(method, request).await)
        })
    }
}

/// A bound ext_authz listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    /// TCP with TLS; connections are admitted by the [`TlsGate`] (client CA + peer allow-list).
    Tls(TcpListener, TlsGate),
}

impl Listener {
    /// Binds `address`. A stale Unix socket file is replaced only if it is a socket.
    pub async fn bind(address: &ListenAddress) -> std::io::Result<Self> {
        // Envoy runs as another user in the same pod: it must be able to connect. The socket
        // only answers authorization questions; the directory that holds it (a pod-local
        // volume) is what limits who can reach it.
        Self::bind_with_mode(address, 0o666).await
    }

    /// As [`bind`](Self::bind), a Unix socket getting `mode` at once after it is bound (the
    /// admin socket: 0600).
    pub async fn bind_with_mode(address: &ListenAddress, mode: u32) -> std::io::Result<Self> {
        match address {
            ListenAddress::Tcp(socket_address) => {
                Ok(Self::Tcp(TcpListener::bind(socket_address).await?))
            }
            ListenAddress::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(metadata) = std::fs::symlink_metadata(path)
                    && metadata.file_type().is_socket()
                {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(Self::Unix(listener))
            }
        }
    }

    /// Human-readable address, e.g. `127.0.0.1:9191` or `unix:/run/actguard/authz.sock`.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(listener) | Self::Tls(listener, _) => listener
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
            Self::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }
}

/// How the gRPC listener behaves beyond answering checks.
pub struct ServeOptions {
    pub max_concurrent_checks: usize,
    /// Server-side deadline per check; `None` for none.
    pub check_timeout: Option<Duration>,
    /// `grpc.health.v1.Health`, served beside ext_authz when set.
    pub health: Option<HealthServer<HealthService>>,
    /// Serve gRPC reflection (for `grpcurl`).
    pub reflection: bool,
    /// How long a plain (TCP, Unix) connection may take to send the HTTP/2 preface.
    pub preface_deadline: Duration,
    /// Where budgeted allows are charged (`budgets`).
    pub budgets: Option<Arc<Ledger>>,
}

/// The default [`ServeOptions::preface_deadline`]: Envoy sends the preface with its first
/// request, at once.
pub const PREFACE_DEADLINE: Duration = Duration::from_secs(10);

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_concurrent_checks: crate::config::Limits::default().max_concurrent_checks,
            check_timeout: None,
            health: None,
            reflection: false,
            preface_deadline: PREFACE_DEADLINE,
            budgets: None,
        }
    }
}

/// Serves ext_authz on `listener` until `shutdown` completes, then drains in-flight checks.
pub async fn run<H: CheckHandler>(
    listener: Listener,
    authorizer: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    run_with(listener, authorizer, ServeOptions::default(), shutdown).await
}

/// The HTTP/2 streams one connection may have open: twice the checks admitted at once (at least
/// 256). Above the admission limit on purpose: a check past it must reach admission control and
/// be refused at once (`RESOURCE_EXHAUSTED`), not wait in the client for a stream.
pub fn http2_max_streams(max_concurrent_checks: usize) -> u32 {
    u32::try_from(max_concurrent_checks.saturating_mul(2).max(256)).unwrap_or(u32::MAX)
}

/// Streams a client may reset before the server has served them, per connection.
pub const HTTP2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset because of the client's protocol errors, per connection.
pub const HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// The largest HTTP/2 header list of one request (decoded, as RFC 9113 §6.5.2 counts it).
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// [`run`] with admission control, a per-check deadline and gRPC health.
pub async fn run_with<H: CheckHandler>(
    listener: Listener,
    authorizer: Arc<H>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let service = AuthorizationServer::new(
        AuthorizationService::new(authorizer, options.max_concurrent_checks)
            .with_budgets(options.budgets.clone()),
    );
    let streams = http2_max_streams(options.max_concurrent_checks);
    let mut builder = tonic::transport::Server::builder()
        // tonic leaves these unset, which turns hyper's own defaults off (unlimited streams per
        // connection, no bound on streams the server resets for errors): every one explicit.
        .max_concurrent_streams(streams)
        // Rapid reset (CVE-2023-44487): a client resetting streams before they are served is
        // sent GOAWAY after this many pending resets.
        .http2_max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(HTTP2_MAX_LOCAL_ERROR_RESETS))
        // Envoy's ext_authz call carries the request in its body: its HTTP/2 headers are a few
        // hundred bytes. A larger header list (a CONTINUATION flood included) ends the stream.
        .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        // A peer that stops answering PINGs is dropped instead of holding its connection.
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT));
    if let Some(timeout) = options.check_timeout {
        builder = builder.timeout(timeout);
    }
    let reflection = if options.reflection {
        crate::serve::admin_api::reflection()
            .map_err(|error| tracing::error!(%error, "gRPC reflection unavailable"))
            .ok()
    } else {
        None
    };
    let router = builder
        .add_service(service)
        .add_optional_service(options.health)
        .add_optional_service(reflection);
    match listener {
        Listener::Tcp(listener) => {
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|accepted| {
                    accepted.map(|io| BatchedWrites::opening(io, options.preface_deadline))
                });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Listener::Unix(listener) => {
            let incoming = UnixListenerStream::new(listener).map(|accepted| {
                accepted.map(|io| BatchedWrites::opening(io, options.preface_deadline))
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Listener::Tls(listener, gate) => {
            let incoming = ReceiverStream::new(tls_incoming(listener, gate));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// A fault is a gRPC error, so Envoy (`failure_mode_allow: false`) denies.
impl From<Fault> for Status {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Internal(_) => Status::internal("actguard internal fault"),
            Fault::KeysUnavailable => Status::unavailable("issuer keys unavailable"),
            Fault::RevocationsUnavailable => {
                Status::unavailable("revocations not confirmed current")
            }
            Fault::BudgetsUnavailable => Status::unavailable("budgets could not be charged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_http2_streams_are_twice_the_checks_and_at_least_256() {
        for (name, max_concurrent_checks, streams) in [
            ("one check: the floor", 1, 256),
            ("exactly at the floor", 128, 256),
            ("just above the floor", 129, 258),
            ("the default", 1024, 2048),
            ("too many for u32", usize::MAX, u32::MAX),
        ] {
            assert_eq!(http2_max_streams(max_concurrent_checks), streams, "{name}");
        }
    }
}
