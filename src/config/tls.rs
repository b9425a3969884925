//! TLS material of the listeners, read and checked when the configuration loads (as JWKS
//! files are), so a configuration that loads has certificates that serve: `listen.grpc_tls`,
//! `listen.admin_tls`, and the webhook's serving pair. The listeners (`serve::tls`) rebuild the
//! same configuration with these functions when the files change.

use crate::decision::spiffe::CallerPattern;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

fn read(path: &Path) -> Result<Vec<u8>, String> {
    crate::decision::files::read_limited(path, crate::decision::files::MAX_CONFIG_FILE_BYTES)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The certificate chain and private key of a server.
fn certified_key(
    cert: &Path,
    key: &Path,
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
pub fn server_only_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
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
