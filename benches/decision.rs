//! Microbenchmarks of the decision path without gRPC (criterion): cache hit; cold verification
//! per algorithm (ES256, EdDSA, RS256 with a 2048-bit key); chain depth; route table size;
//! encoding an allow; certificate parsing; an MCP tool call with a 2 KB body. The checks run `Authorizer::answer`, what the gRPC
//! server runs (an allow comes back as its grant, encoded when sent).
//! Run with `make bench` (which also runs the load benchmark and writes docs/benchmarks.md).

mod common;

use actguard::config::Config;
use actguard::decision::Authorizer;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims, url_encode};
use common::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost::Message;
use std::hint::black_box;

struct Setup {
    _dir: tempfile::TempDir,
    authorizer: Authorizer,
    certificate: String,
    issuers: Vec<(DevAlgorithm, DevIssuer)>,
}

fn setup(routes: usize, cache_entries: u64, max_depth: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let issuers: Vec<(DevAlgorithm, DevIssuer)> = [
        (DevAlgorithm::Es256, "es"),
        (DevAlgorithm::EdDsa, "ed"),
        (DevAlgorithm::Rs256, "rs"),
    ]
    .into_iter()
    .map(|(algorithm, kid)| {
        (
            algorithm,
            DevIssuer::generate(ISSUER, kid, algorithm).unwrap(),
        )
    })
    .collect();
    let keys: Vec<_> = issuers
        .iter()
        .map(|(_, i)| i.jwks()["keys"][0].clone())
        .collect();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::json!({ "keys": keys }).to_string(),
    )
    .unwrap();
    let mut yaml = format!(
        "identity: {{local: \"{LOCAL}\", trust_domains: [example.org]}}\n\
         issuers: [{{issuer: \"{ISSUER}\", jwks_file: jwks.json, algorithms: [ES256, EdDSA, RS256]}}]\n\
         delegation: {{max_depth: {max_depth}}}\ncache: {{max_entries: {cache_entries}}}\nroutes:\n"
    );
    // The matching route is last: every request walks the whole table.
    for index in 1..routes {
        yaml.push_str(&format!(
            "  - {{name: r{index}, path_prefix: /service{index}, require_scopes: [s{index}]}}\n"
        ));
    }
    yaml.push_str(
        "  - {name: calendar-read, path_prefix: /calendar, require_scopes: [calendar:read]}\n",
    );
    // An MCP endpoint (after the route above, so plain checks never try it).
    yaml.push_str(
        "  - {name: calendar-mcp, path_prefix: /mcp, require_scopes: [calendar:read], mcp: \
         {methods: [initialize, tools/list], tools: [{name: calendar.list_events}, \
         {name: email.send, authorization_details: {type: \"https://example.org/rar/mcp-tool\"}}]}}\n",
    );
    let config = Config::from_yaml(&yaml, dir.path()).unwrap();
    let ca = DevCa::new("example.org").unwrap();
    let certificate = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    Setup {
        _dir: dir,
        authorizer: Authorizer::new(config.decision),
        certificate,
        issuers,
    }
}

/// Actors ending at the scheduler, `depth` of them.
fn chain(depth: usize) -> Vec<String> {
    let mut actors: Vec<String> = (1..depth)
        .map(|i| format!("spiffe://example.org/agent/a{i}"))
        .collect();
    actors.push(SCHEDULER.to_owned());
    actors
}

fn token(issuer: &DevIssuer, depth: usize, jti: usize) -> String {
    let actors = chain(depth);
    let actors: Vec<&str> = actors.iter().map(String::as_str).collect();
    let mut claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &actors,
        unix_now(),
        3600,
    );
    claims["jti"] = jti.to_string().into();
    issuer.sign(&claims).unwrap()
}

/// A POST to /mcp carrying a `tools/call` of `calendar.list_events` whose body is `bytes` long.
fn mcp_request(certificate: &str, token: &str, bytes: usize) -> CheckRequest {
    let mut request = check_request(certificate, token);
    let message = |padding: usize| {
        serde_json::json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
            "params": {"name": "calendar.list_events",
                       "arguments": {"day": "monday", "note": "x".repeat(padding)}}})
        .to_string()
    };
    let padding = bytes.saturating_sub(message(0).len());
    let body = message(padding);
    assert_eq!(body.len(), bytes);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.method = "POST".into();
    http.path = "/mcp".into();
    http.headers
        .insert("content-length".into(), body.len().to_string());
    http.headers
        .insert("content-type".into(), "application/json".into());
    http.raw_body = body.into_bytes();
    request
}

fn allowed(authorizer: &Authorizer, request: &CheckRequest) -> bool {
    match authorizer.check(request, false) {
        Ok(response) => match response.status {
            Some(status) if status.code == 0 => true,
            other => {
                eprintln!("denied: {other:?}");
                false
            }
        },
        Err(_) => {
            eprintln!("fault or retry");
            false
        }
    }
}

fn benches(c: &mut Criterion) {
    let cached = setup(1, 100_000, 8);
    let hit = check_request(&cached.certificate, &token(&cached.issuers[0].1, 2, 0));
    assert!(allowed(&cached.authorizer, &hit));
    c.bench_function("check/cache_hit", |b| {
        b.iter(|| black_box(cached.authorizer.answer(black_box(&hit), false)))
    });
    // The same cached token calling an MCP tool with a 2 KB body (issue #16: at most 10 µs
    // more than the plain hit above).
    let mcp_call = mcp_request(
        &cached.certificate,
        &token(&cached.issuers[0].1, 2, 0),
        2048,
    );
    assert!(allowed(&cached.authorizer, &mcp_call));
    c.bench_function("check/mcp_tool_call_2k_cache_hit", |b| {
        b.iter(|| black_box(cached.authorizer.answer(black_box(&mcp_call), false)))
    });

    let cold = setup(1, 0, 8);
    for (algorithm, issuer) in &cold.issuers {
        let requests: Vec<CheckRequest> = (0..256)
            .map(|jti| check_request(&cold.certificate, &token(issuer, 2, jti)))
            .collect();
        assert!(allowed(&cold.authorizer, &requests[0]));
        let mut next = 0;
        c.bench_function(&format!("check/cold_verify/{algorithm:?}"), |b| {
            b.iter(|| {
                next = (next + 1) % requests.len();
                black_box(cold.authorizer.answer(&requests[next], false))
            })
        });
    }

    // What the verified-token cache adds to a never-seen token: the same ES256 verification
    // with a full 10k-entry cache (every insert evicts), tokens never repeating within it.
    let full = setup(1, 10_000, 8);
    let es256 = &full.issuers[0].1;
    let requests: Vec<CheckRequest> = (0..40_000)
        .map(|jti| check_request(&full.certificate, &token(es256, 2, jti)))
        .collect();
    for request in &requests[..12_000] {
        assert!(allowed(&full.authorizer, request));
    }
    let mut next = 12_000;
    c.bench_function("check/cold_verify_full_cache/Es256", |b| {
        b.iter(|| {
            next = (next + 1) % requests.len();
            black_box(full.authorizer.answer(&requests[next], false))
        })
    });

    // The signature alone, for the same tokens: what `jsonwebtoken::crypto::verify` costs (the
    // JWK's key parsed on every call), and aws-lc-rs with the key parsed once — the floor any
    // verifier meets for a token it has not seen.
    for (algorithm, issuer) in &cold.issuers {
        let token = token(issuer, 2, 0);
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(issuer.jwks()["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let jwt_algorithm = match algorithm {
            DevAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            DevAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            DevAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        };
        let verify = || {
            jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key, jwt_algorithm)
                .unwrap()
        };
        assert!(verify());
        c.bench_function(&format!("verify/jsonwebtoken/{algorithm:?}"), |b| {
            b.iter(|| black_box(verify()))
        });
        let raw = raw_verifier(issuer, &token);
        assert!(raw());
        c.bench_function(&format!("verify/aws_lc_parsed_key/{algorithm:?}"), |b| {
            b.iter(|| black_box(raw()))
        });
    }

    let mut depth_group = c.benchmark_group("check/chain_depth_cache_hit");
    for depth in [1, 3, 8] {
        let request = check_request(
            &cached.certificate,
            &token(&cached.issuers[0].1, depth, depth),
        );
        assert!(allowed(&cached.authorizer, &request), "depth {depth}");
        depth_group.bench_with_input(
            BenchmarkId::from_parameter(depth),
            &request,
            |b, request| b.iter(|| black_box(cached.authorizer.answer(request, false))),
        );
    }
    depth_group.finish();

    let mut routes_group = c.benchmark_group("check/routes_cache_hit");
    for routes in [1, 200] {
        let setup = setup(routes, 100_000, 8);
        let request = check_request(&setup.certificate, &token(&setup.issuers[0].1, 2, 7));
        assert!(allowed(&setup.authorizer, &request), "{routes} routes");
        routes_group.bench_with_input(
            BenchmarkId::from_parameter(routes),
            &request,
            |b, request| b.iter(|| black_box(setup.authorizer.answer(request, false))),
        );
    }
    routes_group.finish();

    // Encoding an allow: as a built message (what prost needs) vs straight from the grant
    // (what the server sends); both into a reused buffer, as tonic's encoder does.
    let answer = cached.authorizer.answer(&hit, false).ok().unwrap();
    let message = answer.clone().into_response();
    let mut buffer = Vec::with_capacity(4096);
    let mut encode_group = c.benchmark_group("response/allow_encode");
    encode_group.bench_function("built_message", |b| {
        b.iter(|| {
            buffer.clear();
            let message = black_box(message.clone());
            message.encode(&mut buffer).unwrap();
        })
    });
    encode_group.bench_function("from_grant", |b| {
        b.iter(|| {
            buffer.clear();
            let answer = black_box(answer.clone());
            answer.encode(&mut buffer).unwrap();
        })
    });
    encode_group.finish();

    let ca = DevCa::new("example.org").unwrap();
    let pem = ca.issue_svid(SCHEDULER).unwrap().cert_pem;
    let encoded = url_encode(&pem);
    c.bench_function("identity/certificate_parse", |b| {
        b.iter(|| {
            black_box(actguard::decision::identity::spiffe_id_from_certificate(
                black_box(&encoded),
            ))
        })
    });
}

criterion_group! {
    name = decision;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(decision);
