//! TLS on the ext_authz listener: only an allowed peer SPIFFE ID from the client CA may ask,
//! and a rotated client CA takes effect without a restart.

mod common;

use actguard::config::Config;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, IssuedCertificate};
use actguard::serve::runtime;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{CertificateParams, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ENVOY: &str = "spiffe://example.org/envoy/calendar";

fn server_certificate(ca: &DevCa) -> IssuedCertificate {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/actguard".try_into().unwrap(),
    ));
    ca.issue(params).unwrap()
}

/// A gRPC client over TLS presenting `client` (or no certificate), trusting `server_ca`.
async fn tls_client(
    address: &str,
    server_ca: &str,
    client: Option<&IssuedCertificate>,
) -> Result<AuthorizationClient<tonic::transport::Channel>, String> {
    tls_client_from(address, server_ca, client, None).await
}

/// [`tls_client`] connecting from `source` (another loopback address, as another host would).
async fn tls_client_from(
    address: &str,
    server_ca: &str,
    client: Option<&IssuedCertificate>,
    source: Option<std::net::IpAddr>,
) -> Result<AuthorizationClient<tonic::transport::Channel>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        Some(client) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = address.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, address) = (connector.clone(), address.clone());
            async move {
                let target: std::net::SocketAddr = address.parse().unwrap();
                let tcp = match source {
                    None => tokio::net::TcpStream::connect(target).await?,
                    Some(source) => {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind((source, 0).into())?;
                        socket.connect(target).await?
                    }
                };
                let name = ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|error| error.to_string())?;
    Ok(AuthorizationClient::new(channel))
}

async fn asks(address: &str, server_ca: &str, client: Option<&IssuedCertificate>) -> bool {
    match tls_client(address, server_ca, client).await {
        Ok(mut client) => client.check(CheckRequest::default()).await.is_ok(),
        Err(_) => false,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// actguard with `listen.grpc_tls` in `dir`: a server certificate from `ca`, client
/// certificates from `ca`'s bundle, only [`ENVOY`] allowed, files checked every second.
async fn tls_sidecar(dir: &Path, ca: &DevCa) -> runtime::Sidecar {
    let issuer = DevIssuer::generate(ISSUER, "k", DevAlgorithm::Es256).unwrap();
    write(dir, "jwks.json", &issuer.jwks().to_string());
    let server = server_certificate(ca);
    write(dir, "svid.pem", &server.cert_pem);
    write(dir, "key.pem", &server.key_pem);
    write(dir, "bundle.pem", ca.bundle_pem());
    let tls = format!(
        "\n  admin: \"off\"\n  grpc_tls:\n    cert: svid.pem\n    key: key.pem\n    client_ca: bundle.pem\n    allow_peers: [{ENVOY}]\n    reload_interval: 1s"
    );
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!("listen:\n  grpc: 127.0.0.1:0{tls}"),
    );
    runtime::start(Config::from_yaml(&yaml, dir).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_tls_listener_admits_only_allowed_peers_and_reloads_its_ca() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let ca = DevCa::new("example.org").unwrap();
    let sidecar = tls_sidecar(dir, &ca).await;
    let address = sidecar.grpc_address.clone();
    let bundle = ca.bundle_pem().to_owned();

    let envoy = ca.issue_svid(ENVOY).unwrap();
    let mallory = ca.issue_svid("spiffe://example.org/agent/mallory").unwrap();
    let other_ca = DevCa::new("example.org").unwrap();
    let envoy_from_other_ca = other_ca.issue_svid(ENVOY).unwrap();
    assert!(
        asks(&address, &bundle, Some(&envoy)).await,
        "the allowed Envoy is answered"
    );
    assert!(
        !asks(&address, &bundle, Some(&mallory)).await,
        "a peer not in allow_peers is refused"
    );
    assert!(
        !asks(&address, &bundle, None).await,
        "a client without a certificate is refused"
    );
    assert!(
        !asks(&address, &bundle, Some(&envoy_from_other_ca)).await,
        "the right ID from another CA is refused"
    );

    // Rotate the client CA: the new CA's Envoy gets in, the old one no longer does.
    write(dir, "bundle.pem", other_ca.bundle_pem());
    let mut rotated = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if asks(&address, &bundle, Some(&envoy_from_other_ca)).await {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the new client CA was picked up without a restart");
    assert!(!asks(&address, &bundle, Some(&envoy)).await);
    sidecar.shutdown().await.unwrap();
}

#[test]
fn tls_configuration_errors_name_the_key() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let issuer = DevIssuer::generate(ISSUER, "k", DevAlgorithm::Es256).unwrap();
    write(dir, "jwks.json", &issuer.jwks().to_string());
    write(dir, "svid.pem", "not a certificate");
    let yaml = config_yaml("  leeway: 30s", "").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        "listen:\n  grpc: 127.0.0.1:0\n  grpc_tls: {cert: svid.pem, key: key.pem, client_ca: ca.pem, allow_peers: []}",
    );
    let errors = Config::from_yaml(&yaml, dir).unwrap_err().to_string();
    assert!(
        errors.contains("listen.grpc_tls.allow_peers: must list at least one peer"),
        "{errors}"
    );
    let yaml = yaml.replace("allow_peers: []", &format!("allow_peers: [{ENVOY}]"));
    let errors = Config::from_yaml(&yaml, dir).unwrap_err().to_string();
    assert!(errors.starts_with("listen.grpc_tls: "), "{errors}");
    // Without client_ca there is nothing to verify Envoy's certificate against: refused, named.
    let without_ca = yaml.replace(", client_ca: ca.pem", "");
    assert!(!without_ca.contains("client_ca"));
    let errors = Config::from_yaml(&without_ca, dir).unwrap_err().to_string();
    assert!(errors.contains("listen.grpc_tls.client_ca"), "{errors}");
    // TLS over a Unix socket is refused: a Unix socket is already local to the pod. (With
    // usable certificates, so this is the only error.)
    let ca = DevCa::new("example.org").unwrap();
    let served = server_certificate(&ca);
    write(dir, "svid.pem", &served.cert_pem);
    write(dir, "key.pem", &served.key_pem);
    write(dir, "ca.pem", ca.bundle_pem());
    assert!(
        Config::from_yaml(&yaml, dir).is_ok(),
        "the TCP variant loads"
    );
    let on_unix = yaml.replace(
        "grpc: 127.0.0.1:0",
        &format!("grpc: unix:{}", dir.join("grpc.sock").display()),
    );
    let errors = Config::from_yaml(&on_unix, dir).unwrap_err().to_string();
    assert!(
        errors.contains("listen.grpc_tls: needs a TCP listen.grpc"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_admin_tls_admits_only_allowed_operators() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let issuer = DevIssuer::generate(ISSUER, "k", DevAlgorithm::Es256).unwrap();
    write(dir, "jwks.json", &issuer.jwks().to_string());
    let ca = DevCa::new("example.org").unwrap();
    let server = server_certificate(&ca);
    write(dir, "svid.pem", &server.cert_pem);
    write(dir, "key.pem", &server.key_pem);
    write(dir, "bundle.pem", ca.bundle_pem());
    let operator = ca.issue_svid("spiffe://example.org/ops/oncall").unwrap();
    let mallory = ca.issue_svid("spiffe://example.org/agent/mallory").unwrap();
    for (name, certificate) in [("operator", &operator), ("mallory", &mallory)] {
        write(dir, &format!("{name}.pem"), &certificate.cert_pem);
        write(dir, &format!("{name}-key.pem"), &certificate.key_pem);
    }
    let admin_tls = "\n  admin: 127.0.0.1:0\n  admin_tls:\n    cert: svid.pem\n    key: key.pem\n    client_ca: bundle.pem\n    allow_peers: [\"spiffe://example.org/ops/*\"]";
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!("listen:\n  grpc: 127.0.0.1:0{admin_tls}"),
    );
    let sidecar = runtime::start(Config::from_yaml(&yaml, dir).unwrap())
        .await
        .unwrap();
    let address = sidecar.admin_address.unwrap().to_string();
    let revoke_as = |who: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_actguard"));
        command.args(["admin", "--admin", &address]);
        if let Some(who) = who {
            command
                .arg("--tls-cert")
                .arg(dir.join(format!("{who}.pem")))
                .arg("--tls-key")
                .arg(dir.join(format!("{who}-key.pem")))
                .arg("--tls-ca")
                .arg(dir.join("bundle.pem"));
        }
        let output = command.args(["revoke", "--jti", "t1"]).output().unwrap();
        output.status.success()
    };
    assert!(revoke_as(Some("operator")), "an allowed operator revokes");
    assert!(
        !revoke_as(Some("mallory")),
        "a peer outside allow_peers is refused"
    );
    assert!(!revoke_as(None), "plaintext is refused");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_idle_handshakes_from_one_peer_do_not_shut_out_another() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let ca = DevCa::new("example.org").unwrap();
    let sidecar = tls_sidecar(dir, &ca).await;
    let address = sidecar.grpc_address.clone();
    // More idle connections from one host than there are handshake slots in all.
    let first_connected = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = tokio::net::TcpStream::connect(&address).await {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Envoy, connecting from another address meanwhile, is answered.
    let envoy = ca.issue_svid(ENVOY).unwrap();
    let source = Some(std::net::IpAddr::from([127, 0, 0, 2]));
    let mut client = tls_client_from(&address, ca.bundle_pem(), Some(&envoy), source)
        .await
        .expect("a well-behaved peer completes its handshake during the flood");
    client.check(CheckRequest::default()).await.unwrap();
    // The idle connections that got a slot are cut once the 2 s handshake deadline passes
    // (0.5 s allowed for a busy machine).
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle handshake was not cut: {read:?}"
    );
    let cut_after = first_connected.elapsed();
    assert!(
        cut_after <= Duration::from_millis(2500),
        "an idle handshake was cut after {cut_after:?}, not 2 s"
    );
    sidecar.shutdown().await.unwrap();
}

/// An allowed peer that completes its handshake and then sends nothing (no HTTP/2 preface) is
/// closed once the first-bytes deadline (`grpc::PREFACE_DEADLINE`) passes after the handshake;
/// it used to be held for ever, as h2's keep-alive PINGs only start after the preface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_tls_peer_that_sends_nothing_after_its_handshake_is_closed_in_time() {
    use actguard::serve::grpc::PREFACE_DEADLINE;
    use tokio::io::AsyncReadExt;
    let scratch = tempfile::tempdir().unwrap();
    let ca = DevCa::new("example.org").unwrap();
    let sidecar = tls_sidecar(scratch.path(), &ca).await;
    let envoy = ca.issue_svid(ENVOY).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.bundle_pem().as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(envoy.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(envoy.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&sidecar.grpc_address)
        .await
        .unwrap();
    let mut silent = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("an allowed peer completes its handshake");
    let handshaken = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let patience = PREFACE_DEADLINE + Duration::from_secs(5);
    let closed = loop {
        match tokio::time::timeout(
            patience.saturating_sub(handshaken.elapsed()),
            silent.read(&mut buffer),
        )
        .await
        {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            // The server's SETTINGS and anything else it sends first.
            Ok(Ok(_)) => continue,
        }
    };
    assert!(closed, "a silent TLS peer was held past {patience:?}");
    assert!(
        handshaken.elapsed() >= PREFACE_DEADLINE - Duration::from_secs(1),
        "closed before the deadline: {:?}",
        handshaken.elapsed()
    );
    // The listener goes on answering.
    assert!(asks(&sidecar.grpc_address, ca.bundle_pem(), Some(&envoy)).await);
    sidecar.shutdown().await.unwrap();
}
