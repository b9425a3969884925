//! A small rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`, from envoy-types)
//! on a free loopback port: it records every request Envoy's rate-limit filter sends and
//! answers OVER_LIMIT for the branches it is told to, OK otherwise. Enough to prove what Envoy
//! sends from actguard's dynamic metadata; not a rate limiter.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// One descriptor as Envoy sent it: its entries in order, and its hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub domain: String,
    pub entries: Vec<(String, String)>,
    /// The descriptor's own `hits_addend`, else the request's.
    pub hits: u64,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    over_limit: Mutex<HashSet<String>>,
    /// Answer every request with gRPC UNAVAILABLE.
    failing: std::sync::atomic::AtomicBool,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        if self.0.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tonic::Status::unavailable(
                "rate-limit service failing (test)",
            ));
        }
        let request = request.into_inner();
        let mut over = false;
        for descriptor in &request.descriptors {
            let entries: Vec<(String, String)> = descriptor
                .entries
                .iter()
                .map(|entry| (entry.key.clone(), entry.value.clone()))
                .collect();
            let limited = self.0.over_limit.lock().unwrap();
            over |= entries
                .iter()
                .any(|(key, value)| key == "branch" && limited.contains(value));
            self.0.seen.lock().unwrap().push(Seen {
                domain: request.domain.clone(),
                entries,
                hits: descriptor
                    .hits_addend
                    .map_or(u64::from(request.hits_addend), |hits| hits.value),
            });
        }
        let code = if over { Code::OverLimit } else { Code::Ok };
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: code as i32,
            ..Default::default()
        }))
    }
}

/// A running rate-limit service; stops when dropped.
pub struct RateLimit {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl RateLimit {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let service = RateLimitServiceServer::new(Service(Arc::clone(&state)));
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self { port, state, task }
    }

    /// What Envoy sent so far, taken.
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.seen.lock().unwrap())
    }

    /// From now on every request is answered with gRPC UNAVAILABLE.
    pub fn fail(&self) {
        self.state
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on a descriptor naming `branch` is OVER_LIMIT.
    pub fn limit_branch(&self, branch: &str) {
        self.state
            .over_limit
            .lock()
            .unwrap()
            .insert(branch.to_owned());
    }
}

impl Drop for RateLimit {
    fn drop(&mut self) {
        self.task.abort();
    }
}
