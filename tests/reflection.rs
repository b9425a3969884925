//! gRPC reflection, when enabled, lists ext_authz on the gRPC listener and the revocation API on
//! the admin listener (what `grpcurl list` shows).

mod common;

use actguard::config::Config;
use actguard::devkit::{DevAlgorithm, DevIssuer};
use actguard::serve::runtime;
use common::*;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn services(address: String) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_ext_authz_and_the_admin_api() {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "k", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  reflection: true",
    );
    let sidecar = runtime::start(Config::from_yaml(&yaml, scratch.path()).unwrap())
        .await
        .unwrap();
    let on_grpc = services(sidecar.grpc_address.clone()).await;
    assert!(
        on_grpc.contains(&"envoy.service.auth.v3.Authorization".to_owned()),
        "{on_grpc:?}"
    );
    let on_admin = services(sidecar.admin_address.unwrap().to_string()).await;
    assert!(
        on_admin.contains(&"actguard.admin.v1.Revocations".to_owned()),
        "{on_admin:?}"
    );
    sidecar.shutdown().await.unwrap();
}
