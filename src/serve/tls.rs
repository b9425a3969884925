//! TLS on the ext_authz gRPC listener: only the local Envoy may ask. Also server-only TLS for
//! the injection webhook (the Kubernetes API server presents no client certificate).
//!
//! Guarantees in mutual mode: the client must present a certificate that chains to `client_ca` (webpki
//! verification by rustls) and is an X509-SVID whose SPIFFE ID matches `allow_peers`;
//! otherwise the connection is closed before any request is read. The server certificate, key
//! and client CA are re-read when their files change (SVIDs rotate hourly); a change that does
//! not load keeps the previous material serving and is logged.

use crate::identity;
use crate::server::BatchedWrites;
use crate::spiffe::CallerPattern;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// `listen.grpc_tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to one of these.
    pub client_ca: PathBuf,
    /// The peer's SPIFFE ID must match one entry (exact or `/*`).
    pub allow_peers: Vec<CallerPattern>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The certificate chain and private key of a server.
fn certified_key(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{}: not a PEM certificate chain: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|error| format!("{}: not a PEM private key: {error}", key.display()))?;
    Ok((chain, key))
}

/// Server-only TLS (no client certificate asked), HTTP/1.1 and h2: the Kubernetes API server
/// calling an admission webhook.
pub fn server_only_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = certified_key(cert, key)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("certificate and key do not match: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the rustls configuration from the files (h2 only, client certificates required).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = certified_key(&settings.cert, &settings.key)?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&read(&settings.client_ca)?) {
        let certificate = certificate
            .map_err(|error| format!("{}: not PEM: {error}", settings.client_ca.display()))?;
        roots
            .add(certificate)
            .map_err(|error| format!("{}: unusable CA: {error}", settings.client_ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{}: no CA certificate",
            settings.client_ca.display()
        ));
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|error| format!("client CA: {error}"))?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| format!("certificate and key do not match: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

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
        let Mode::Mutual(settings) = &*self.mode else {
            return Some(BatchedWrites(tls));
        };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| identity::spiffe_id_from_der(leaf.as_ref()));
        match peer {
            Some(Ok(id)) if settings.allow_peers.iter().any(|p| p.matches(&id)) => {
                Some(BatchedWrites(tls))
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
