//! Caller identity over real gRPC: one generated certificate per malformed shape, and the
//! source order (certificate, principal, xfcc).

mod common;

use actguard::devkit::{DevCa, url_encode};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose, SanType};

fn params_with_sans(sans: &[SanType]) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans.to_vec();
    // What an X509-SVID carries, so each case fails for its own reason only.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().unwrap())
}

#[tokio::test]
async fn malformed_certificates_are_caller_identity_invalid() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let mut ca_params = params_with_sans(&[uri(SCHEDULER)]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut signer_params = params_with_sans(&[uri(SCHEDULER)]);
    signer_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    let mut crl_signer_params = params_with_sans(&[uri(SCHEDULER)]);
    crl_signer_params.key_usages =
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    let two_uris = params_with_sans(&[uri(SCHEDULER), uri(ORCHESTRATOR)]);
    let spiffe_and_https = params_with_sans(&[uri(SCHEDULER), uri("https://example.org/x")]);
    let dns_only = params_with_sans(&[SanType::DnsName(
        "scheduler.example.org".try_into().unwrap(),
    )]);
    let https_uri = params_with_sans(&[uri("https://example.org/agent/scheduler")]);
    let mut no_key_usage = params_with_sans(&[uri(SCHEDULER)]);
    no_key_usage.key_usages = Vec::new();
    let mut without_digital_signature = params_with_sans(&[uri(SCHEDULER)]);
    without_digital_signature.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let uppercase_domain = params_with_sans(&[uri("spiffe://Example.org/agent/scheduler")]);
    let dot_segment = params_with_sans(&[uri("spiffe://example.org/agent/../scheduler")]);
    let percent = params_with_sans(&[uri("spiffe://example.org/agent%2Fscheduler")]);
    let issue = |params: CertificateParams| harness.ca.issue(params).unwrap().url_encoded();
    let valid = harness.svid(SCHEDULER);
    let two_certificates = url_encode(&format!("{}{}", valid.cert_pem, valid.cert_pem));
    let cases: Vec<(&str, String)> = vec![
        ("CA certificate", issue(ca_params)),
        ("leaf with keyCertSign", issue(signer_params)),
        ("leaf with cRLSign", issue(crl_signer_params)),
        ("two SPIFFE URI SANs", issue(two_uris)),
        ("SPIFFE and https URI SANs", issue(spiffe_and_https)),
        ("no URI SAN", issue(dns_only)),
        ("non-SPIFFE URI", issue(https_uri)),
        ("leaf without key usage", issue(no_key_usage)),
        (
            "leaf without digitalSignature",
            issue(without_digital_signature),
        ),
        ("uppercase trust domain", issue(uppercase_domain)),
        ("dot segment", issue(dot_segment)),
        ("percent-encoded path", issue(percent)),
        ("not PEM", "garbage".into()),
        (
            "private key instead of certificate",
            url_encode(&valid.key_pem),
        ),
        ("two certificates", two_certificates),
        ("truncated", valid.url_encoded()[..200].to_owned()),
    ];
    for (name, certificate) in cases {
        let request = RequestSpec::get("/calendar")
            .certificate(&certificate)
            .principal(SCHEDULER)
            .bearer(&token)
            .build();
        let answer = harness.check(request).await;
        assert_eq!(answer.reason, "caller_identity_invalid", "case {name}");
        assert_eq!(answer.http_status, 403, "case {name}");
    }
}

/// An SVID for `id` valid from `not_before` to `not_after` (Unix seconds).
fn svid_valid(ca: &DevCa, id: &str, not_before: i64, not_after: i64) -> String {
    let mut params = params_with_sans(&[uri(id)]);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    ca.issue(params).unwrap().url_encoded()
}

#[tokio::test]
async fn rule_a_caller_certificate_outside_its_validity_is_refused() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let now = actguard::decision::token::unix_now();
    let expired = svid_valid(&harness.ca, SCHEDULER, now - 7200, now - 60);
    let not_yet = svid_valid(&harness.ca, SCHEDULER, now + 3600, now + 7200);
    // Valid for a moment: allowed (and so cached), then refused once it lapses, although the
    // bytes Envoy reports for the connection are the same.
    let brief = svid_valid(&harness.ca, SCHEDULER, now - 60, now + 2);
    let check = |certificate: &str| {
        RequestSpec::get("/calendar/events")
            .header("host", "calendar.example.org")
            .certificate(certificate)
            .bearer(&token)
            .build()
    };
    for (name, certificate) in [("expired", &expired), ("not yet valid", &not_yet)] {
        let answer = harness.check(check(certificate)).await;
        assert_eq!(answer.reason, "caller_identity_invalid", "{name}");
        assert_eq!(answer.http_status, 403, "{name}");
    }
    for _ in 0..2 {
        assert!(harness.check(check(&brief)).await.is_allow());
    }
    while actguard::decision::token::unix_now() <= now + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let answer = harness.check(check(&brief)).await;
    assert_eq!(
        answer.reason, "caller_identity_invalid",
        "a remembered certificate is held to its validity on every check"
    );
}

#[tokio::test]
async fn rule_caller_trust_domain_must_be_allowed() {
    let mut harness = Harness::start().await;
    let foreign = DevCa::new("evil.example").unwrap();
    let mallory = "spiffe://evil.example/agent/mallory";
    let token = harness.delegated(&[mallory]);
    let certificate = foreign.issue_svid(mallory).unwrap().url_encoded();
    let request = RequestSpec::get("/calendar")
        .certificate(&certificate)
        .bearer(&token)
        .build();
    assert_eq!(
        harness.check(request).await.reason,
        "caller_trust_domain_denied"
    );
}

#[tokio::test]
async fn rule_principal_is_used_when_no_certificate_is_sent() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let request = RequestSpec::get("/calendar")
        .principal(SCHEDULER)
        .bearer(&token)
        .build();
    assert!(harness.check(request).await.is_allow());
    let request = RequestSpec::get("/calendar")
        .principal("CN=scheduler")
        .bearer(&token)
        .build();
    assert_eq!(
        harness.check(request).await.reason,
        "caller_identity_invalid"
    );
}

#[tokio::test]
async fn rule_an_unusable_principal_does_not_fall_through_to_xfcc() {
    // A principal that is no SPIFFE ID next to a plausible XFCC is an attack signal: the
    // request is refused, not decided on the weaker source after it.
    let yaml = config_yaml("  leeway: 30s", "").replace(
        "  trust_domains: [example.org, partner.example]",
        "  trust_domains: [example.org, partner.example]\n  sources: [principal, xfcc]",
    );
    let mut harness = Harness::start_with(&yaml).await;
    let token = harness.delegated(&[SCHEDULER]);
    let xfcc = format!("By={LOCAL};Hash=abc;URI={SCHEDULER}");
    let cases = [
        ("XFCC alone", None, "allow"),
        ("valid principal beside it", Some(SCHEDULER), "allow"),
        (
            "non-SPIFFE principal beside it",
            Some("CN=scheduler"),
            "caller_identity_invalid",
        ),
        (
            "trust domain as principal beside it",
            Some("spiffe://example.org"),
            "caller_identity_invalid",
        ),
    ];
    for (name, principal, expected) in cases {
        let mut spec = RequestSpec::get("/calendar")
            .header("x-forwarded-client-cert", &xfcc)
            .bearer(&token);
        if let Some(principal) = principal {
            spec = spec.principal(principal);
        }
        let answer = harness.check(spec.build()).await;
        assert_eq!(answer.reason, expected, "case {name}");
    }
}

#[tokio::test]
async fn rule_certificate_wins_over_principal() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::get("/calendar")
        .certificate(&certificate)
        .principal(ORCHESTRATOR)
        .bearer(&token)
        .build();
    let answer = harness.check(request).await;
    assert!(answer.is_allow(), "{answer:?}");
    assert_eq!(answer.header("x-actguard-actor"), Some(SCHEDULER));
}

#[tokio::test]
async fn rule_no_identity_is_caller_identity_missing() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let request = RequestSpec::get("/calendar").bearer(&token).build();
    let answer = harness.check(request).await;
    assert_eq!(answer.reason, "caller_identity_missing");
}

#[tokio::test]
async fn rule_xfcc_only_when_configured() {
    let xfcc =
        format!("By={LOCAL};Hash=abc;URI={ORCHESTRATOR},By={LOCAL};Hash=def;URI={SCHEDULER}");
    let mut default_sources = Harness::start().await;
    let token = default_sources.delegated(&[SCHEDULER]);
    let request = RequestSpec::get("/calendar")
        .header("x-forwarded-client-cert", &xfcc)
        .bearer(&token)
        .build();
    let answer = default_sources.check(request.clone()).await;
    assert_eq!(
        answer.reason, "caller_identity_missing",
        "xfcc must be ignored by default"
    );

    let yaml = config_yaml("  leeway: 30s", "").replace(
        "  trust_domains: [example.org, partner.example]",
        "  trust_domains: [example.org, partner.example]\n  sources: [certificate, xfcc]",
    );
    let mut with_xfcc = Harness::start_with(&yaml).await;
    let token = with_xfcc.delegated(&[SCHEDULER]);
    let request = RequestSpec::get("/calendar")
        .header("x-forwarded-client-cert", &xfcc)
        .bearer(&token)
        .build();
    let answer = with_xfcc.check(request).await;
    assert!(
        answer.is_allow(),
        "the last XFCC element names the scheduler: {answer:?}"
    );
}
