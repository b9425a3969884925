//! Test harness: a fresh PKI and issuer, the real server on port 0, a tonic client.
#![allow(dead_code)]

pub mod envoy;
pub mod issuer;
pub mod nats;
pub mod nginx;
pub mod observe;
pub mod ratelimit;
pub mod redis;
pub mod sds;
pub mod upstream;
pub mod world;

use actguard::config::Config;
use actguard::decision::Authorizer;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, IssuedCertificate, delegated_claims};
use actguard::serve::grpc::{self, Listener};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::transport::Channel;

pub const LOCAL: &str = "spiffe://example.org/tool/calendar";
pub const ISSUER: &str = "https://sts.example.org";
pub const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
pub const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";
pub const PLANNER: &str = "spiffe://example.org/agent/planner";

/// Routes and limits shared by most tests; `{extra}` lets a test add top-level keys.
pub fn config_yaml(tokens: &str, extra: &str) -> String {
    format!(
        r#"
listen:
  grpc: 127.0.0.1:0
identity:
  local: {LOCAL}
  trust_domains: [example.org, partner.example]
issuers:
  - issuer: {ISSUER}
    jwks_file: jwks.json
    algorithms: [ES256, EdDSA]
tokens:
{tokens}
delegation:
  max_depth: 3
routes:
  - name: calendar-read
    methods: [GET]
    hosts: [calendar.example.org]
    path_prefix: /calendar
    require_scopes: [calendar:read]
  - name: calendar-write
    methods: [POST]
    path_prefix: /calendar
    require_scopes: [calendar:write]
  - name: admin
    path_prefix: /admin
    require_scopes: [admin]
    allow_callers: [{ORCHESTRATOR}]
  - name: webhook
    path_prefix: /hooks
    max_depth: 1
    forward_token: true
default: deny
{extra}
"#
    )
}

/// `yaml` (from [`config_yaml`]) with its one issuer replaced: `issuer` and the lines of
/// `settings` (each indented by four spaces, newline-terminated or not) instead of the file JWKS.
pub fn with_issuer(yaml: &str, issuer: &str, settings: &str) -> String {
    yaml.replace(
        &format!("  - issuer: {ISSUER}\n    jwks_file: jwks.json"),
        &format!("  - issuer: {issuer}\n{}", settings.trim_end_matches('\n')),
    )
}

pub struct Harness {
    pub ca: DevCa,
    pub issuer: DevIssuer,
    /// A second key in the same JWKS, for key/alg agreement tests.
    pub eddsa_issuer: DevIssuer,
    pub authorizer: Arc<Authorizer>,
    pub client: AuthorizationClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _scratch: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(&config_yaml("  leeway: 30s", "")).await
    }

    pub async fn start_with(yaml: &str) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let ca = DevCa::new("example.org").unwrap();
        let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
        let eddsa_issuer = DevIssuer::generate(ISSUER, "key-eddsa", DevAlgorithm::EdDsa).unwrap();
        let mut jwks = issuer.jwks();
        let second = eddsa_issuer.jwks()["keys"][0].clone();
        jwks["keys"].as_array_mut().unwrap().push(second);
        std::fs::write(scratch.path().join("jwks.json"), jwks.to_string()).unwrap();
        let config = Config::from_yaml(yaml, scratch.path()).unwrap();
        let listener = Listener::bind(&config.listen.grpc).await.unwrap();
        let address = listener.describe();
        let authorizer = Arc::new(Authorizer::new(config.decision));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(grpc::run(listener, Arc::clone(&authorizer), async {
            let _ = stopped.await;
        }));
        let client = match address.strip_prefix("unix:") {
            Some(socket) => AuthorizationClient::new(unix_channel(socket.to_owned()).await),
            None => AuthorizationClient::connect(format!("http://{address}"))
                .await
                .unwrap(),
        };
        Harness {
            ca,
            issuer,
            eddsa_issuer,
            authorizer,
            client,
            stop: Some(stop),
            _scratch: scratch,
        }
    }

    pub fn svid(&self, id: &str) -> IssuedCertificate {
        self.ca.issue_svid(id).unwrap()
    }

    /// A token for `user:alice` via `actors` (delegation order), scope `calendar:read`.
    pub fn delegated(&self, actors: &[&str]) -> String {
        self.issuer.sign(&self.claims(actors)).unwrap()
    }

    pub fn claims(&self, actors: &[&str]) -> Value {
        delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            actors,
            unix_now(),
            300,
        )
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.issuer.sign(claims).unwrap()
    }

    /// GET /calendar/events from `caller` with `token`.
    pub async fn get_calendar(&mut self, caller: &str, token: &str) -> Answer {
        let certificate = self.svid(caller).url_encoded();
        let request = RequestSpec::get("/calendar/events")
            .certificate(&certificate)
            .bearer(token);
        self.check(request.build()).await
    }

    pub async fn check(&mut self, request: CheckRequest) -> Answer {
        let response = self.client.check(request).await.unwrap().into_inner();
        Answer::from(response)
    }
}

/// A gRPC channel over a Unix domain socket, as Envoy dials `unix:` addresses.
pub async fn unix_channel(socket: String) -> Channel {
    actguard::cli::admin::unix_channel(&socket).await.unwrap()
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Builds a CheckRequest the way Envoy fills it.
#[derive(Default, Clone)]
pub struct RequestSpec {
    pub certificate: String,
    pub principal: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl RequestSpec {
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            host: "calendar.example.org".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    pub fn certificate(mut self, url_encoded: &str) -> Self {
        self.certificate = url_encoded.into();
        self
    }

    pub fn principal(mut self, principal: &str) -> Self {
        self.principal = principal.into();
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn build(self) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    certificate: self.certificate,
                    principal: self.principal,
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: self.method,
                        host: self.host,
                        path: self.path,
                        headers: self.headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

/// A CheckResponse read the way Envoy reads it.
#[derive(Debug)]
pub struct Answer {
    pub grpc_code: i32,
    pub http_status: i32,
    /// `"allow"` or the body's `error`.
    pub reason: String,
    pub headers: Vec<HeaderValueOption>,
    pub headers_to_remove: Vec<String>,
    pub body: Value,
    pub raw: CheckResponse,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter_map(|option| option.header.as_ref())
            .find(|header| header.key == name)
            .map(|header| header.value.as_str())
    }

    pub fn is_allow(&self) -> bool {
        self.grpc_code == 0 && self.reason == "allow"
    }
}

impl From<CheckResponse> for Answer {
    fn from(response: CheckResponse) -> Self {
        let grpc_code = response.status.as_ref().map_or(-1, |status| status.code);
        let mut answer = Answer {
            grpc_code,
            http_status: 0,
            reason: String::new(),
            headers: vec![],
            headers_to_remove: vec![],
            body: Value::Null,
            raw: response.clone(),
        };
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                answer.reason = "allow".into();
                answer.http_status = 200;
                answer.headers = ok.headers;
                answer.headers_to_remove = ok.headers_to_remove;
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                answer.http_status = denied.status.map_or(0, |s| s.code);
                answer.headers = denied.headers;
                answer.body = serde_json::from_str(&denied.body).unwrap();
                // The plain body's `error`, or on an MCP route the JSON-RPC error's data.
                let code = answer.body["error"]
                    .as_str()
                    .or(answer.body["error"]["data"]["error"].as_str());
                answer.reason = code.unwrap().to_owned();
            }
            other => panic!("unexpected http_response {other:?}"),
        }
        answer
    }
}
