//! The workload behind Envoy (or nginx) in end-to-end tests: an HTTP server on loopback that
//! answers every request with what it received (method, the raw request target, headers), so
//! a test sees exactly what reached the upstream.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// What the upstream received, one entry per request.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target exactly as it arrived (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

pub struct Tool {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Tool {
    pub async fn start() -> Tool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let app = axum::Router::new().fallback(move |request: Request| {
            let log = Arc::clone(&log);
            async move {
                let entry = Received {
                    method: request.method().to_string(),
                    target: request
                        .uri()
                        .path_and_query()
                        .map_or_else(String::new, |p| p.as_str().to_owned()),
                    headers: request
                        .headers()
                        .iter()
                        .map(|(name, value)| {
                            (
                                name.as_str().to_owned(),
                                String::from_utf8_lossy(value.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                };
                let body = json!({"tool": "calendar", "target": entry.target}).to_string();
                log.lock().unwrap().push(entry);
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap()
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Tool {
            port,
            received,
            stop: Some(stop),
        }
    }

    /// Everything received so far, and forgets it.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
