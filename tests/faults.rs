//! Internal faults never allow: a handler that panics yields a gRPC error, which Envoy's
//! `failure_mode_allow: false` turns into a deny.

use actguard::config::ListenAddress;
use actguard::decision::CheckError;
use actguard::serve::grpc::{self, CheckHandler, Listener};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::sync::Arc;

struct Panicking;

impl CheckHandler for Panicking {
    fn check(
        &self,
        _request: &CheckRequest,
        _may_retry: bool,
    ) -> Result<CheckResponse, CheckError> {
        panic!("simulated bug in the decision path")
    }
}

#[tokio::test]
async fn rule_a_panicking_decision_is_a_grpc_error_not_an_allow() {
    let listener = Listener::bind(&ListenAddress::parse("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let address = listener.describe();
    tokio::spawn(grpc::run(
        listener,
        Arc::new(Panicking),
        std::future::pending(),
    ));
    let mut client = AuthorizationClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let status = client.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        !status.message().contains("simulated"),
        "fault details are not sent"
    );
    // The server survives and keeps answering (with errors, never OK).
    let again = client.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Internal);
}
