//! One end-to-end world for tests through a real proxy: a development CA and issuer, the proxy's
//! certificate files, actguard started the way the proxy expects, and HTTPS clients that present
//! agents' X509-SVIDs.

use super::{ISSUER, LOCAL};
use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, IssuedCertificate, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub const HOST: &str = "calendar.example.org";

/// How actguard listens for the proxy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Tcp,
    Unix,
    GrpcTls,
    Http,
    /// HTTP mode behind nginx: the request from `X-Original-*` only.
    HttpOriginal,
}

/// The PKI, issuer and files of one test: Envoy's SVID (`svid.pem`, `svid-key.pem`) and the
/// trust bundle (`bundle.pem`) in `dir`, named as the shipped bootstraps name them.
pub struct World {
    dir: tempfile::TempDir,
    pub ca: DevCa,
    pub issuer: DevIssuer,
    pub envoy_svid: IssuedCertificate,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("example.org").unwrap();
        let issuer = DevIssuer::generate(ISSUER, "key-1", DevAlgorithm::Es256).unwrap();
        let envoy_svid = ca.issue_svid_with_dns(LOCAL, &[HOST.to_owned()]).unwrap();
        let world = World {
            dir,
            ca,
            issuer,
            envoy_svid,
        };
        world.write_envoy_files(&world.envoy_svid);
        std::fs::write(
            world.path().join("jwks.json"),
            world.issuer.jwks().to_string(),
        )
        .unwrap();
        world
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes Envoy's SVID as a Kubernetes Secret volume update does: new files, then an
    /// atomic rename into place (what `watched_directory` watches for).
    pub fn write_envoy_files(&self, svid: &IssuedCertificate) {
        for (name, contents) in [
            ("svid.pem", svid.cert_pem.as_str()),
            ("svid-key.pem", svid.key_pem.as_str()),
            ("bundle.pem", self.ca.bundle_pem()),
        ] {
            let staged = self.path().join(format!(".{name}.new"));
            std::fs::write(&staged, contents).unwrap();
            std::fs::rename(&staged, self.path().join(name)).unwrap();
        }
    }

    /// actguard listening as `mode` says, with `extra` top-level YAML.
    pub async fn actguard(&self, mode: Mode, extra: &str) -> Sidecar {
        let config = Config::from_yaml(&self.config_yaml(mode, extra), self.path()).unwrap();
        runtime::start(config).await.unwrap()
    }

    /// [`World::config_yaml`] with the audit log written to `file` instead of off.
    pub fn config_yaml_audited(&self, mode: Mode, file: &Path) -> String {
        self.config_yaml(mode, "").replace(
            "audit:\n  output: off",
            &format!("audit:\n  output: {}", file.display()),
        )
    }

    /// The configuration [`World::actguard`] starts.
    pub fn config_yaml(&self, mode: Mode, extra: &str) -> String {
        let socket = self.path().join("authz.sock");
        let (listen, sources) = match mode {
            Mode::Tcp => ("grpc: 127.0.0.1:0".to_owned(), "[certificate]"),
            Mode::Unix => (
                format!("grpc: \"unix:{}\"", socket.display()),
                "[certificate]",
            ),
            // actguard serves with the workload's SVID (it shares the pod with Envoy) and admits
            // only that Envoy.
            Mode::GrpcTls => (
                format!(
                    "grpc: 127.0.0.1:0\n  grpc_tls:\n    cert: svid.pem\n    key: svid-key.pem\n    client_ca: bundle.pem\n    allow_peers: [{LOCAL}]"
                ),
                "[certificate]",
            ),
            Mode::Http => (
                "grpc: 127.0.0.1:0\n  http: 127.0.0.1:0".to_owned(),
                "[xfcc]",
            ),
            Mode::HttpOriginal => (
                "grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n  http_request: original_headers"
                    .to_owned(),
                "[xfcc]",
            ),
        };
        format!(
            r#"
listen:
  {listen}
  admin: off
identity:
  local: {LOCAL}
  trust_domains: [example.org]
  sources: {sources}
issuers:
  - issuer: {ISSUER}
    jwks_file: jwks.json
    algorithms: [ES256]
delegation:
  max_depth: 3
routes:
  - name: calendar-read
    methods: [GET]
    hosts: [{HOST}]
    path_prefix: /calendar
    require_scopes: [calendar:read]
  - name: admin
    path_prefix: /admin
    require_scopes: [admin]
  - name: webhook
    path_prefix: /hooks
    forward_token: true
default: deny
audit:
  output: off
{extra}
"#
        )
    }

    /// A token for `user:alice` through `actors` (delegation order), scope `scope`.
    pub fn token(&self, actors: &[&str], scope: &str) -> String {
        let claims = delegated_claims(ISSUER, "user:alice", LOCAL, scope, actors, unix_now(), 300);
        self.issuer.sign(&claims).unwrap()
    }

    /// A rustls client configuration presenting `caller`'s SVID, trusting the bundle, offering
    /// `alpn`: for tests that speak TLS below HTTP (raw requests, handshakes, HTTP/2 clients).
    pub fn tls_config(&self, caller: &str, alpn: &[&str]) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.ca.bundle_pem().as_bytes()) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let svid = self.ca.issue_svid(caller).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(svid.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(svid.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    /// An HTTPS client presenting `caller`'s SVID (none: no client certificate), trusting the
    /// bundle, reaching `calendar.example.org` at Envoy's listener.
    pub fn client(&self, caller: Option<&str>, port: u16) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(self.ca.bundle_pem().as_bytes()).unwrap(),
            ])
            .resolve(HOST, ([127, 0, 0, 1], port).into())
            .timeout(Duration::from_secs(10));
        if let Some(caller) = caller {
            let svid = self.ca.issue_svid(caller).unwrap();
            let pem = format!("{}{}", svid.cert_pem, svid.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

pub fn url(port: u16, path: &str) -> String {
    format!("https://{HOST}:{port}{path}")
}

/// What a client saw: status, headers, JSON body (or Null).
pub struct Seen {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> Seen {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Seen {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}
