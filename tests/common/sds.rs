//! A stand-in for the SPIRE agent's SDS: Envoy's `SecretDiscoveryService` v3 (state-of-the-world
//! streams) on a Unix socket, serving the names SPIRE's agent serves — `default` for the
//! workload's X509-SVID and `spiffe://<trust domain>` for the bundle — and nothing else, so a
//! bootstrap that asks for other names never gets a certificate. [`Sds::rotate`] pushes a new
//! SVID to every open stream, as SPIRE does before the old one expires.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What the agent hands out now.
#[derive(Clone)]
pub struct Material {
    pub svid_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
    pub version: u64,
}

pub struct Sds {
    pub socket: PathBuf,
    current: watch::Sender<Material>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Service {
    trust_domain: String,
    current: watch::Receiver<Material>,
}

fn inline(text: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineString(text.to_owned())),
        ..Default::default()
    })
}

impl Service {
    /// The secrets of `names` this agent knows (others are left out, as SPIRE does).
    fn response(&self, names: &[String], material: &Material, nonce: u64) -> DiscoveryResponse {
        let bundle_name = format!("spiffe://{}", self.trust_domain);
        let resources = names
            .iter()
            .filter_map(|name| {
                let kind = if name == "default" {
                    secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: inline(&material.svid_pem),
                        private_key: inline(&material.key_pem),
                        ..Default::default()
                    })
                } else if *name == bundle_name {
                    secret::Type::ValidationContext(CertificateValidationContext {
                        trusted_ca: inline(&material.bundle_pem),
                        ..Default::default()
                    })
                } else {
                    return None;
                };
                let secret = Secret {
                    name: name.clone(),
                    r#type: Some(kind),
                };
                Some(Any {
                    type_url: SECRET_TYPE.into(),
                    value: secret.encode_to_vec(),
                })
            })
            .collect();
        DiscoveryResponse {
            version_info: material.version.to_string(),
            resources,
            type_url: SECRET_TYPE.into(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Service {
    type DeltaSecretsStream = DeltaResponses;
    type StreamSecretsStream = Responses;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented(
            "the SPIRE agent serves state-of-the-world SDS",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let service = self.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut current = service.current.clone();
            let mut names: Vec<String> = Vec::new();
            let mut nonce = 0;
            loop {
                tokio::select! {
                    request = requests.next() => {
                        let Some(Ok(request)) = request else { return };
                        // An ACK (or NACK) of what was sent changes nothing; new names are
                        // answered at once.
                        if request.resource_names == names && !request.response_nonce.is_empty() {
                            continue;
                        }
                        names = request.resource_names;
                    }
                    changed = current.changed() => {
                        if changed.is_err() { return }
                    }
                }
                nonce += 1;
                let material = current.borrow_and_update().clone();
                let response = service.response(&names, &material, nonce);
                if sender.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let material = self.current.borrow().clone();
        Ok(Response::new(self.response(
            &request.into_inner().resource_names,
            &material,
            0,
        )))
    }
}

impl Sds {
    /// Serves `material` for `trust_domain` on `dir/agent.sock`.
    pub async fn start(dir: &Path, trust_domain: &str, material: Material) -> Sds {
        let socket = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let (current, receiver) = watch::channel(material);
        let service = Service {
            trust_domain: trust_domain.to_owned(),
            current: receiver,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Sds {
            socket,
            current,
            stop: Some(stop),
        }
    }

    /// Pushes a new SVID (same bundle) to every stream.
    pub fn rotate(&self, svid_pem: String, key_pem: String) {
        self.current.send_modify(|material| {
            material.svid_pem = svid_pem;
            material.key_pem = key_pem;
            material.version += 1;
        });
    }
}

impl Drop for Sds {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
