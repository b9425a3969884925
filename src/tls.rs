//! TLS on the ext_authz gRPC listener: only the local Envoy may ask.
//!
//! Guarantees: the client must present a certificate that chains to `client_ca` (webpki
//! verification by rustls) and is an X509-SVID whose SPIFFE ID matches `allow_peers`;
//! otherwise the connection is closed before any request is read. The server certificate, key
//! and client CA are re-read when their files change (SVIDs rotate hourly); a change that does
//! not load keeps the previous material serving and is logged.

use crate::identity;
use crate::spiffe::CallerPattern;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// Builds the rustls configuration from the files (h2 only, client certificates required).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&settings.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|error| {
                format!(
                    "{}: not a PEM certificate chain: {error}",
                    settings.cert.display()
                )
            })?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", settings.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key)?)
        .map_err(|error| format!("{}: not a PEM private key: {error}", settings.key.display()))?;
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

/// Accepts TLS connections with the current configuration and the peer allow-list.
#[derive(Clone)]
pub struct TlsGate {
    settings: Arc<TlsSettings>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

fn modified(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    [&settings.cert, &settings.key, &settings.client_ca]
        .iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

impl TlsGate {
    pub fn new(settings: TlsSettings) -> Result<Self, String> {
        let config = server_config(&settings)?;
        Ok(Self {
            settings: Arc::new(settings),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Polls the files and swaps in new material when they change and load.
    pub async fn watch_files(self) {
        let mut seen = modified(&self.settings);
        let mut ticker = tokio::time::interval(self.settings.reload_interval);
        loop {
            ticker.tick().await;
            let now = modified(&self.settings);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.settings) {
                Ok(config) => {
                    if let Ok(mut current) = self.current.write() {
                        *current = config;
                    }
                    tracing::info!(cert = %self.settings.cert.display(), "TLS: reloaded certificate, key and client CA");
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
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| identity::spiffe_id_from_der(leaf.as_ref()));
        match peer {
            Some(Ok(id)) if self.settings.allow_peers.iter().any(|p| p.matches(&id)) => {
                Some(TlsConnection(tls))
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

/// An accepted, allowed TLS connection, as tonic serves it.
pub struct TlsConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}
