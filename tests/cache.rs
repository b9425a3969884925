//! The decision cache keeps DESIGN.md's invariants.

mod common;

use actguard::config::Config;
use actguard::decision::identity::PeerFacts;
use actguard::decision::token::unix_now;
use actguard::decision::{Authorizer, RequestFacts};
use common::*;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `GET calendar.example.org/calendar` from the caller with `certificate`, as request facts.
fn calendar_get<'a>(certificate: &'a str, authorization: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        peer: PeerFacts {
            certificate,
            ..Default::default()
        },
        method: "GET",
        host: "calendar.example.org",
        path: "/calendar",
        authorization: vec![authorization],
        ..Default::default()
    }
}

#[tokio::test]
async fn cached_allow_turns_into_deny_once_the_token_expires() {
    let mut harness = Harness::start_with(&config_yaml("  leeway: 0s", "")).await;
    let now = unix_now();
    let mut claims = harness.claims(&[SCHEDULER]);
    claims["exp"] = json!(now + 2);
    let token = harness.sign(&claims);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    assert_eq!(
        harness.authorizer.cached_token_count(),
        1,
        "the allow is served from the cache"
    );
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let until_expiry = Duration::from_secs((now + 2) as u64).saturating_sub(unix);
    tokio::time::sleep(until_expiry + Duration::from_millis(100)).await;
    let answer = harness.get_calendar(SCHEDULER, &token).await;
    assert_eq!(answer.reason, "token_expired");
}

#[tokio::test]
async fn cached_token_is_rebound_to_each_caller() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    // Same token bytes, now cached: a different caller still gets its own answer.
    assert_eq!(
        harness.get_calendar(ORCHESTRATOR, &token).await.reason,
        "actor_mismatch"
    );
    // And a different route or method still runs the route rules.
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::new("POST", "/calendar")
        .certificate(&certificate)
        .bearer(&token)
        .build();
    assert_eq!(harness.check(request).await.reason, "insufficient_scope");
}

#[tokio::test]
async fn flood_of_distinct_invalid_tokens_does_not_grow_the_cache() {
    let mut harness = Harness::start().await;
    let good = harness.delegated(&[SCHEDULER]);
    assert!(harness.get_calendar(SCHEDULER, &good).await.is_allow());
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let (signed, _) = good.rsplit_once('.').unwrap();
    for index in 0..500 {
        // Validly shaped, distinct, wrongly signed: each costs a verification, none is kept.
        let forged = format!(
            "{signed}.{}",
            "A".repeat(80 + index % 7) + &format!("{index:04}")
        );
        let request = RequestSpec::get("/calendar")
            .certificate(&certificate)
            .bearer(&forged)
            .build();
        let answer = harness.check(request).await;
        assert_ne!(answer.reason, "allow");
    }
    assert_eq!(harness.authorizer.cached_token_count(), 1);
    assert!(harness.get_calendar(SCHEDULER, &good).await.is_allow());
}

#[tokio::test]
async fn cache_is_bounded_by_max_entries() {
    let mut harness =
        Harness::start_with(&config_yaml("  leeway: 30s", "cache:\n  max_entries: 20")).await;
    for index in 0..200 {
        let mut claims = harness.claims(&[SCHEDULER]);
        claims["jti"] = json!(format!("t-{index}"));
        let token = harness.sign(&claims);
        assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    }
    let entries = harness.authorizer.cached_token_count();
    assert!(entries <= 20, "{entries} entries cached");
}

#[tokio::test]
async fn cache_is_bounded_by_max_bytes_counting_its_own_bookkeeping() {
    // 64 KiB: each entry weighs its claims and chain (~0.3 KB here) plus ~0.4 KB of the cache's
    // own bookkeeping, so about 90 fit whatever max_entries allows (counting the token alone
    // would let ~160 in, over the budget in real memory).
    let cache = "cache:\n  max_entries: 100000\n  max_bytes: 65536";
    let mut harness = Harness::start_with(&config_yaml("  leeway: 30s", cache)).await;
    for index in 0..400 {
        let mut claims = harness.claims(&[SCHEDULER]);
        claims["jti"] = json!(format!("t-{index}"));
        let token = harness.sign(&claims);
        assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    }
    let entries = harness.authorizer.cached_token_count();
    assert!((40..=110).contains(&entries), "{entries} entries cached");
}

#[tokio::test]
async fn disabled_cache_still_decides() {
    let mut harness =
        Harness::start_with(&config_yaml("  leeway: 30s", "cache:\n  max_entries: 0")).await;
    let token = harness.delegated(&[SCHEDULER]);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    assert_eq!(harness.authorizer.cached_token_count(), 0);
}

#[tokio::test]
async fn cache_hit_is_rechecked_against_the_clock() {
    // Deterministic: the decision is asked for at chosen instants, with no sleeping.
    let mut harness = Harness::start_with(&config_yaml("  leeway: 10s", "")).await;
    let now = unix_now();
    let mut claims = harness.claims(&[SCHEDULER]);
    claims["exp"] = json!(now + 60);
    let token = harness.sign(&claims);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    assert_eq!(harness.authorizer.cached_token_count(), 1);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let authorization = format!("Bearer {token}");
    let facts = calendar_get(&certificate, &authorization);
    let at = |instant| {
        harness
            .authorizer
            .decide(&facts, instant)
            .map_err(|d| d.reason.code())
    };
    assert!(at(now + 60 + 9).is_ok(), "within leeway");
    assert_eq!(
        at(now + 60 + 10),
        Err("token_expired"),
        "exp + leeway reached"
    );
}

#[tokio::test]
async fn a_token_remembered_under_one_configuration_is_verified_again_under_another() {
    // This thread runs the server and the checks below, so it remembers the token it verified.
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let authorization = format!("Bearer {token}");
    let facts = calendar_get(&certificate, &authorization);
    assert!(harness.authorizer.decide(&facts, unix_now()).is_ok());
    // Another workload's configuration: the same issuer and keys, another audience. It must
    // verify the token itself (and refuse it), not reuse what the first one verified.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(
        scratch.path().join("jwks.json"),
        harness.issuer.jwks().to_string(),
    )
    .unwrap();
    let yaml = config_yaml("  leeway: 30s", "").replace(LOCAL, "spiffe://example.org/tool/mail");
    let other = Authorizer::new(Config::from_yaml(&yaml, scratch.path()).unwrap().decision);
    assert_eq!(
        other
            .decide(&facts, unix_now())
            .map_err(|denial| denial.reason.code()),
        Err("token_audience_mismatch")
    );
}
