//! Token verification over real gRPC: one named case per rejection, each expecting its code.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevIssuer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

fn b64(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

/// Replaces members of the usual claims.
fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

#[tokio::test]
async fn token_rejections_each_have_their_code() {
    let mut harness = Harness::start().await;
    let now = unix_now();
    let good = harness.claims(&[SCHEDULER]);
    let header = harness.issuer.header();
    let attacker = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    let sign = |claims: &Value| harness.issuer.sign(claims).unwrap();
    let sign_header =
        |header: &Value, claims: &Value| harness.issuer.sign_raw(header, claims).unwrap();
    let good_token = sign(&good);
    let (signed_part, _) = good_token.rsplit_once('.').unwrap();
    let mut parts = good_token.split('.');
    let (header_part, payload_part) = (parts.next().unwrap(), parts.next().unwrap());
    let jwk_header = json!({"alg": "ES256", "kid": "key-es256", "jwk": attacker.jwks()["keys"][0],
                            "jku": "https://evil.example/jwks", "x5u": "https://evil.example/x5u"});
    // A certificate for the attacker's own key, carried in `x5c` (standard base64 DER, which is
    // the PEM body).
    let rogue_ca = actguard::devkit::DevCa::new("example.org").unwrap();
    let rogue = DevIssuer::from_key_pem(ISSUER, "key-es256", rogue_ca.key_pem()).unwrap();
    let rogue_der: String = rogue_ca
        .bundle_pem()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let x5c_header = json!({"alg": "ES256", "kid": "key-es256", "x5c": [rogue_der]});
    // The signature over the original claims, glued to claims changed after signing.
    let old_signature = good_token.rsplit('.').next().unwrap();
    let tampered = |changes: Value| {
        format!(
            "{header_part}.{}.{old_signature}",
            b64(&with(good.clone(), changes).to_string())
        )
    };
    // Valid JSON apart from one byte that is not UTF-8, signed by the issuer.
    let mut not_utf8 = format!(
        r#"{{"iss":"{ISSUER}","sub":"user:alice","aud":"{LOCAL}","exp":{},"act":{{"sub":"{SCHEDULER}"}},"scope":"calendar:read","note":"a?b"}}"#,
        now + 300
    )
    .into_bytes();
    let question_mark = not_utf8.iter().rposition(|&byte| byte == b'?').unwrap();
    not_utf8[question_mark] = 0xff;

    let cases: Vec<(&str, String, &str)> = vec![
        ("valid", good_token.clone(), "allow"),
        ("not a JWS", "abc".into(), "token_malformed"),
        ("JWE shape", format!("{good_token}.x.y"), "token_malformed"),
        ("empty signature", format!("{signed_part}."), "token_malformed"),
        ("header not base64url", format!("~~~.{payload_part}.sig"), "token_malformed"),
        ("header not an object", sign_header(&json!(["ES256"]), &good), "token_malformed"),
        (
            "duplicate claim names",
            harness
                .issuer
                .sign_input(&format!(
                    "{header_part}.{}",
                    b64(&format!(
                        r#"{{"iss":"{ISSUER}","sub":"user:alice","sub":"user:bob","aud":"{LOCAL}","exp":{},"act":{{"sub":"{SCHEDULER}"}},"scope":"calendar:read"}}"#,
                        now + 300
                    ))
                ))
                .unwrap(),
            "token_malformed",
        ),
        (
            "duplicate header names",
            harness
                .issuer
                .sign_input(&format!(
                    "{}.{payload_part}",
                    b64(r#"{"alg":"ES256","kid":"key-es256","kid":"other"}"#)
                ))
                .unwrap(),
            "token_malformed",
        ),
        ("alg none", format!("{}.{payload_part}.", b64(r#"{"alg":"none"}"#)), "token_malformed"),
        ("alg none signed", format!("{}.{payload_part}.c2ln", b64(r#"{"alg":"none","kid":"key-es256"}"#)), "token_alg_denied"),
        ("alg HS256 (key confusion)", sign_header(&json!({"alg":"HS256","kid":"key-es256"}), &good), "token_alg_denied"),
        ("alg not in the issuer's list", sign_header(&json!({"alg":"ES384","kid":"key-es256"}), &good), "token_alg_denied"),
        (
            "alg does not fit the key",
            sign_header(&json!({"alg":"ES256","kid":"key-eddsa"}), &good),
            "token_alg_denied",
        ),
        ("crit extension", sign_header(&with(header.clone(), json!({"crit":["exp"], "exp": 1})), &good), "token_crit_unsupported"),
        ("typ absent", sign_header(&with(header.clone(), json!({"typ": null})), &good), "allow"),
        ("typ JWT", sign_header(&with(header.clone(), json!({"typ": "JWT"})), &good), "allow"),
        ("typ at+jwt", sign_header(&with(header.clone(), json!({"typ": "at+jwt"})), &good), "allow"),
        ("typ application/AT+JWT", sign_header(&with(header.clone(), json!({"typ": "application/AT+JWT"})), &good), "allow"),
        ("typ secevent+jwt", sign_header(&with(header.clone(), json!({"typ": "secevent+jwt"})), &good), "token_malformed"),
        ("typ logout+jwt", sign_header(&with(header.clone(), json!({"typ": "logout+jwt"})), &good), "token_malformed"),
        ("typ application/ alone", sign_header(&with(header.clone(), json!({"typ": "application/"})), &good), "token_malformed"),
        ("typ not a string", sign_header(&with(header.clone(), json!({"typ": ["at+jwt"]})), &good), "token_malformed"),
        ("no kid", sign_header(&json!({"alg":"ES256"}), &good), "token_key_unknown"),
        ("unknown kid", sign_header(&json!({"alg":"ES256","kid":"nope"}), &good), "token_key_unknown"),
        (
            "embedded jwk/jku/x5u are never trusted",
            attacker.sign_raw(&jwk_header, &good).unwrap(),
            "token_signature_invalid",
        ),
        (
            "embedded x5c is never trusted",
            rogue.sign_raw(&x5c_header, &good).unwrap(),
            "token_signature_invalid",
        ),
        ("payload tampered", tampered(json!({"scope":"admin"})), "token_signature_invalid"),
        // Claims are read only after the signature verifies: a tampered token that is also
        // expired, or for another audience, is a bad signature first.
        ("payload tampered to an expired exp", tampered(json!({"exp": now - 3600})), "token_signature_invalid"),
        ("payload tampered to another aud", tampered(json!({"aud": "spiffe://example.org/tool/email"})), "token_signature_invalid"),
        (
            "payload not UTF-8",
            harness
                .issuer
                .sign_input(&format!("{header_part}.{}", URL_SAFE_NO_PAD.encode(&not_utf8)))
                .unwrap(),
            "token_malformed",
        ),
        ("issuer unknown", sign(&with(good.clone(), json!({"iss": "https://evil.example"}))), "token_issuer_unknown"),
        ("issuer not exact", sign(&with(good.clone(), json!({"iss": format!("{ISSUER}/")}))), "token_issuer_unknown"),
        ("no issuer", sign(&with(good.clone(), json!({"iss": null}))), "token_issuer_unknown"),
        ("exp missing", sign(&with(good.clone(), json!({"exp": null}))), "token_expired"),
        ("exp not numeric", sign(&with(good.clone(), json!({"exp": "tomorrow"}))), "token_expired"),
        ("exp past beyond leeway", sign(&with(good.clone(), json!({"exp": now - 31}))), "token_expired"),
        ("exp past within leeway", sign(&with(good.clone(), json!({"exp": now - 5}))), "allow"),
        ("nbf future beyond leeway", sign(&with(good.clone(), json!({"nbf": now + 120}))), "token_not_yet_valid"),
        ("nbf future within leeway", sign(&with(good.clone(), json!({"nbf": now + 10}))), "allow"),
        ("iat future", sign(&with(good.clone(), json!({"iat": now + 120}))), "token_not_yet_valid"),
        ("nbf not numeric", sign(&with(good.clone(), json!({"nbf": "now"}))), "token_not_yet_valid"),
        ("iat not numeric", sign(&with(good.clone(), json!({"iat": "now"}))), "token_not_yet_valid"),
        ("aud other workload", sign(&with(good.clone(), json!({"aud": "spiffe://example.org/tool/email"}))), "token_audience_mismatch"),
        ("aud prefix of local", sign(&with(good.clone(), json!({"aud": "spiffe://example.org/tool"}))), "token_audience_mismatch"),
        ("aud extends local", sign(&with(good.clone(), json!({"aud": format!("{LOCAL}/x")}))), "token_audience_mismatch"),
        ("aud array with local", sign(&with(good.clone(), json!({"aud": ["spiffe://example.org/tool/email", LOCAL]}))), "allow"),
        ("aud array without local", sign(&with(good.clone(), json!({"aud": ["spiffe://example.org/tool/email"]}))), "token_audience_mismatch"),
        ("aud array with a non-string element", sign(&with(good.clone(), json!({"aud": [LOCAL, 7]}))), "token_malformed"),
        ("aud array with an object element", sign(&with(good.clone(), json!({"aud": [{"x": LOCAL}, LOCAL]}))), "token_malformed"),
        ("aud missing", sign(&with(good.clone(), json!({"aud": null}))), "token_audience_mismatch"),
        ("sub missing", sign(&with(good.clone(), json!({"sub": null}))), "token_malformed"),
        ("sub with a line break", sign(&with(good.clone(), json!({"sub": "user:alice\r\nx-injected: 1"}))), "token_malformed"),
        ("scope not a string", sign(&with(good.clone(), json!({"scope": ["calendar:read"]}))), "token_malformed"),
        ("authorization_details not an array", sign(&with(good.clone(), json!({"authorization_details": {"type": "t"}}))), "token_malformed"),
        ("jti not a string", sign(&with(good.clone(), json!({"jti": 7}))), "token_malformed"),
        ("jti with a line break", sign(&with(good.clone(), json!({"jti": "a\r\nx-injected: 1"}))), "token_malformed"),
        ("sid with a line break", sign(&with(good.clone(), json!({"sid": "a\nb"}))), "token_malformed"),
        ("too large", sign(&with(good.clone(), json!({"pad": "x".repeat(9000)}))), "token_too_large"),
        ("nesting too deep", sign(&with(good.clone(), json!({"deep": serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).unwrap()}))), "token_too_large"),
        ("EdDSA key and alg", harness.eddsa_issuer.sign(&good).unwrap(), "allow"),
    ];
    for (name, token, expected) in cases {
        let answer = harness.get_calendar(SCHEDULER, &token).await;
        assert_eq!(answer.reason, expected, "case {name:?}: {:?}", answer.body);
        if expected != "allow" {
            let expected_status = if expected.starts_with("token_") {
                401
            } else {
                403
            };
            assert_eq!(answer.http_status, expected_status, "case {name:?}");
            if expected_status == 401 {
                // RFC 6750 §3: every challenge names the realm.
                let challenge = answer.header("www-authenticate").unwrap();
                assert!(
                    challenge.starts_with("Bearer realm=\"")
                        && challenge.contains("error=\"invalid_token\""),
                    "case {name:?}: {challenge}"
                );
            }
        }
    }
}

#[tokio::test]
async fn deeply_nested_act_is_refused_without_harm() {
    // 600 nested `act` objects inside a size limit raised to allow them: the parser stops at
    // its nesting cap long before recursion could hurt.
    let yaml = config_yaml("  leeway: 30s\n  max_bytes: 65536", "");
    let mut harness = Harness::start_with(&yaml).await;
    // Built as text: a `serde_json::Value` this deep would itself overflow the test's stack.
    let depth = 600;
    let opening = format!(r#"{{"sub":"{SCHEDULER}","act":"#).repeat(depth);
    let innermost = format!(r#"{{"sub":"{SCHEDULER}"}}"#);
    let act = opening + &innermost + &"}".repeat(depth);
    let claims = with(harness.claims(&[]), json!({"act": "ACT"})).to_string();
    let claims = claims.replace(r#""ACT""#, &act);
    let header_part = URL_SAFE_NO_PAD.encode(harness.issuer.header().to_string());
    let token = harness
        .issuer
        .sign_input(&format!("{header_part}.{}", b64(&claims)))
        .unwrap();
    assert!(token.len() < 65536);
    let answer = harness.get_calendar(SCHEDULER, &token).await;
    assert_eq!(answer.reason, "token_too_large");
}

#[tokio::test]
async fn rule_require_typ_makes_explicit_access_token_typing_mandatory() {
    let mut harness = Harness::start_with(&config_yaml("  require_typ: at+jwt", "")).await;
    let claims = harness.claims(&[SCHEDULER]);
    let header = harness.issuer.header();
    let cases = [
        ("absent", json!(null), "token_malformed"),
        ("JWT", json!("JWT"), "token_malformed"),
        ("at+jwt", json!("at+jwt"), "allow"),
        ("application/at+jwt", json!("application/at+jwt"), "allow"),
    ];
    for (name, typ, expected) in cases {
        let token = harness
            .issuer
            .sign_raw(&with(header.clone(), json!({ "typ": typ })), &claims)
            .unwrap();
        let answer = harness.get_calendar(SCHEDULER, &token).await;
        assert_eq!(answer.reason, expected, "typ {name}");
    }
    let refused = Config::from_yaml(
        &config_yaml("  require_typ: jwt", ""),
        std::path::Path::new("."),
    );
    let errors = format!("{:?}", refused.unwrap_err());
    assert!(errors.contains("tokens.require_typ"), "{errors}");
}

#[tokio::test]
async fn rule_issuer_algorithm_list_is_enforced() {
    // The JWKS holds an ES256 key and an EdDSA key; this issuer allows EdDSA only.
    let yaml = config_yaml("  leeway: 30s", "")
        .replace("algorithms: [ES256, EdDSA]", "algorithms: [EdDSA]");
    let mut harness = Harness::start_with(&yaml).await;
    let claims = harness.claims(&[SCHEDULER]);
    let es256 = harness.issuer.sign(&claims).unwrap();
    assert_eq!(
        harness.get_calendar(SCHEDULER, &es256).await.reason,
        "token_alg_denied"
    );
    let eddsa = harness.eddsa_issuer.sign(&claims).unwrap();
    assert!(harness.get_calendar(SCHEDULER, &eddsa).await.is_allow());
}

#[test]
fn rs256_tokens_from_a_2048_bit_key_verify() {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "key-rs256", DevAlgorithm::Rs256).unwrap();
    let jwk = &issuer.jwks()["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );
    // 2048-bit modulus: 256 bytes, 342 base64url characters.
    assert_eq!(jwk["n"].as_str().unwrap().len(), 342);
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let yaml = config_yaml("  leeway: 30s", "")
        .replace("algorithms: [ES256, EdDSA]", "algorithms: [RS256]");
    let config = actguard::config::Config::from_yaml(&yaml, scratch.path()).unwrap();
    let authorizer = actguard::decision::Authorizer::new(config.decision);
    let ca = actguard::devkit::DevCa::new("example.org").unwrap();
    let scheduler = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let claims = actguard::devkit::delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        unix_now(),
        300,
    );
    let token = issuer.sign(&claims).unwrap();
    assert!(token.starts_with(&b64(r#"{"alg":"RS256""#)[..10]));
    let request = RequestSpec::get("/calendar/events")
        .certificate(&scheduler)
        .bearer(&token)
        .build();
    let answer = Answer::from(authorizer.check(&request, false).ok().unwrap());
    assert!(answer.is_allow(), "{}", answer.reason);
    // The same token with its signature bit-flipped is refused.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
    let request = RequestSpec::get("/calendar/events")
        .certificate(&scheduler)
        .bearer(&forged)
        .build();
    let answer = Answer::from(authorizer.check(&request, false).ok().unwrap());
    assert_eq!(answer.reason, "token_signature_invalid");
}

#[test]
fn rule_no_kid_is_refused_even_when_the_issuer_has_a_single_key() {
    // With one key there is no doubt which one was meant; the token is still refused: keys are
    // chosen by `kid` only, never guessed.
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "only-key", DevAlgorithm::Es256).unwrap();
    assert_eq!(issuer.jwks()["keys"].as_array().unwrap().len(), 1);
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let config = Config::from_yaml(&config_yaml("  leeway: 30s", ""), scratch.path()).unwrap();
    let authorizer = actguard::decision::Authorizer::new(config.decision);
    let ca = actguard::devkit::DevCa::new("example.org").unwrap();
    let scheduler = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let claims = actguard::devkit::delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[SCHEDULER],
        unix_now(),
        300,
    );
    let decide = |token: &str| {
        let request = RequestSpec::get("/calendar/events")
            .certificate(&scheduler)
            .bearer(token)
            .build();
        Answer::from(authorizer.check(&request, false).ok().unwrap()).reason
    };
    assert_eq!(
        decide(&issuer.sign(&claims).unwrap()),
        "allow",
        "the control"
    );
    let without_kid = issuer
        .sign_raw(&json!({"alg": "ES256", "typ": "at+jwt"}), &claims)
        .unwrap();
    assert_eq!(decide(&without_kid), "token_key_unknown");
}
