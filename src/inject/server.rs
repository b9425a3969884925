//! The webhook's HTTPS server: `POST /mutate` (AdmissionReview v1 in, AdmissionReview v1 out),
//! `GET /healthz` and `/readyz` for the kubelet. TLS is server-only (the API server presents no
//! client certificate) and the certificate is re-read when its files change (cert-manager
//! renews it in place).
//!
//! Answers: a well-formed review of a Pod CREATE gets [`super::decide`]'s outcome (patch,
//! unchanged or denied with a message); other kinds and operations pass unchanged (the
//! webhook's rules should not send them); a body that is not an `admission.k8s.io/v1`
//! AdmissionReview with a request gets HTTP 400 with a review saying what is wrong (the API
//! server counts that as a webhook failure, and `failurePolicy: Fail` refuses the Pod).

use super::config::InjectorConfig;
use super::{Outcome, decide};
use crate::serve::tls::TlsAxumListener;
use crate::serve::tls::TlsGate;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The API server sends at most ~3 MiB objects; a review carries the object once on CREATE.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Answers one AdmissionReview body: the HTTP status and the review to send back.
pub fn answer(body: &[u8], settings: &InjectorConfig) -> (StatusCode, serde_json::Value) {
    let invalid = |message: String| {
        tracing::warn!(%message, "malformed AdmissionReview");
        let review = AdmissionResponse::invalid(message).into_review();
        (
            StatusCode::BAD_REQUEST,
            serde_json::to_value(review).unwrap_or_default(),
        )
    };
    let document: serde_json::Value = match serde_json::from_slice(body) {
        Ok(document) => document,
        Err(error) => return invalid(format!("not an AdmissionReview: {error}")),
    };
    if document["apiVersion"] != "admission.k8s.io/v1" || document["kind"] != "AdmissionReview" {
        return invalid(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {}, {}",
            document["apiVersion"], document["kind"]
        ));
    }
    let kind = &document["request"]["kind"];
    let pod_create = kind["group"] == ""
        && kind["kind"] == "Pod"
        && document["request"]["operation"] == "CREATE";
    let response = if pod_create {
        match request_of::<Pod>(document) {
            Ok(request) => respond(&request, settings),
            Err(message) => return invalid(message),
        }
    } else {
        // Not ours to change (the webhook's rules send only Pod CREATE): admitted unchanged,
        // whatever the object's schema.
        match request_of::<DynamicObject>(document) {
            Ok(request) => {
                tracing::debug!(kind = %request.kind.kind, operation = ?request.operation, "not a Pod CREATE: unchanged");
                AdmissionResponse::from(&request)
            }
            Err(message) => return invalid(message),
        }
    };
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_default();
    // kube-core writes the patch as an array of byte values, which Go's JSON decoder also
    // accepts; the API documents `patch` as bytes, i.e. a base64 string, as every Go webhook
    // sends it. Send that.
    if let Some(bytes) = review["response"]["patch"].as_array() {
        let raw: Option<Vec<u8>> = bytes
            .iter()
            .map(|byte| byte.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        match raw {
            Some(raw) => {
                use base64::Engine;
                review["response"]["patch"] = serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(raw),
                );
            }
            None => return invalid("internal error: unencodable patch".into()),
        }
    }
    (StatusCode::OK, review)
}

/// The review's request, typed; `Err` says what is missing or malformed.
fn request_of<K>(document: serde_json::Value) -> Result<AdmissionRequest<K>, String>
where
    K: kube_core::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<K> = serde_json::from_value(document)
        .map_err(|error| format!("not an AdmissionReview: {error}"))?;
    let request: AdmissionRequest<K> = review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())?;
    if request.uid.is_empty() {
        return Err("the AdmissionReview request has no uid".into());
    }
    Ok(request)
}

fn respond(request: &AdmissionRequest<Pod>, settings: &InjectorConfig) -> AdmissionResponse {
    let base = AdmissionResponse::from(request);
    let pod_name = || {
        let name = request
            .object
            .as_ref()
            .and_then(|pod| {
                pod.metadata
                    .name
                    .clone()
                    .or_else(|| pod.metadata.generate_name.clone())
            })
            .unwrap_or_default();
        format!("{}/{name}", request.namespace.as_deref().unwrap_or(""))
    };
    let Some(pod) = request.object.as_ref() else {
        return base.deny("the Pod CREATE review carries no object");
    };
    match decide(pod, settings) {
        Outcome::Unchanged { reason, warning } => {
            tracing::debug!(pod = %pod_name(), %reason, "unchanged");
            let mut response = base;
            response.warnings = warning.map(|w| vec![w]);
            response
        }
        Outcome::Reject(message) => {
            tracing::info!(pod = %pod_name(), %message, "refused");
            base.deny(message)
        }
        Outcome::Inject { patch, warnings } => {
            tracing::info!(pod = %pod_name(), operations = patch.0.len(), "injected");
            match base.clone().with_patch(patch) {
                Ok(mut response) => {
                    response.warnings = (!warnings.is_empty()).then_some(warnings);
                    response
                }
                Err(error) => base.deny(format!("actguard injector internal error: {error}")),
            }
        }
    }
}

async fn mutate(State(settings): State<Arc<InjectorConfig>>, body: Bytes) -> impl IntoResponse {
    let (status, review) = answer(&body, &settings);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        review.to_string(),
    )
}

/// `/mutate`, `/healthz`, `/readyz`.
pub fn router(settings: Arc<InjectorConfig>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(settings)
}

/// HTTP/2 streams one API-server connection may have open.
const WEBHOOK_HTTP2_STREAMS: u32 = 256;

/// How long in-flight reviews may take to finish once shutdown is asked for (the API server's
/// default webhook timeout is 10 s): connections still open then are cut, so a client that
/// trickles a body cannot keep the process from stopping.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the webhook over TLS on `listener` until `shutdown` resolves; in-flight reviews
/// finish first, for at most [`DRAIN_DEADLINE`]. The gate's certificate files are watched
/// meanwhile.
pub async fn serve(
    listener: TcpListener,
    gate: TlsGate,
    settings: InjectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_draining(listener, gate, settings, shutdown, DRAIN_DEADLINE).await
}

/// [`serve`] with another drain deadline.
pub async fn serve_draining(
    listener: TcpListener,
    gate: TlsGate,
    settings: InjectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<()> {
    let watcher = tokio::spawn(gate.clone().watch_files());
    let listener = TlsAxumListener::new(listener, gate)?;
    let router = router(Arc::new(settings));
    let limits = crate::serve::http_server::ConnectionLimits {
        drain_deadline: Some(drain),
        ..crate::serve::http_server::ConnectionLimits::new(WEBHOOK_HTTP2_STREAMS)
    };
    crate::serve::http_server::serve(listener, move |_| router.clone(), limits, shutdown).await;
    watcher.abort();
    Ok(())
}
