//! `issuers:`: who may sign tokens, with which algorithms, and where their keys come from
//! (`jwks_file`, `jwks_uri`, or OIDC `discovery`).

use super::reader::{Reader, child};
use super::report_duplicates;
use crate::decision::token::{
    IssuerKeys, JwksLocation, KeySet, RemoteKeys, RemoteSpec, TrustedIssuer, parse_algorithm,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const KEYS: &[&str] = &[
    "issuer",
    "jwks_file",
    "jwks_uri",
    "discovery",
    "ca_file",
    "insecure_http",
    "algorithms",
    "refresh_interval",
    "max_stale",
    "unknown_kid_cooldown",
    "fetch_timeout",
    "max_jwks_bytes",
];

pub fn read_issuers(
    reader: &mut Reader,
    value: &Value,
    base_dir: &Path,
) -> Option<Vec<TrustedIssuer>> {
    let issuers = reader.list("issuers", value, |reader, path, element| {
        read_issuer(reader, path, element, base_dir)
    });
    if value.as_array().is_some_and(Vec::is_empty) {
        reader.error("issuers", "must list at least one issuer");
    }
    report_duplicates(reader, "issuers", value, "issuer", "is configured twice");
    issuers
}

fn read_static_keys(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    base_dir: &Path,
) -> Option<KeySet> {
    let key_path = child(path, "jwks_file");
    let file = base_dir.join(reader.string(&key_path, value)?);
    let document =
        crate::decision::files::read_limited(&file, crate::decision::files::MAX_CONFIG_FILE_BYTES)
            .map_err(|error| {
                reader.error(
                    &key_path,
                    format!("cannot read {}: {error}", file.display()),
                )
            })
            .ok()?;
    KeySet::from_jwks(&document)
        .map_err(|problems| {
            for problem in problems {
                reader.error(&key_path, format!("JWKS {}: {problem}", file.display()));
            }
        })
        .ok()
}

fn duration_or(
    reader: &mut Reader,
    path: &str,
    value: Option<&Value>,
    default: Duration,
    max: Duration,
) -> Option<Duration> {
    match value {
        None => Some(default),
        Some(value) => reader.duration(path, value, max),
    }
}

fn read_remote(
    reader: &mut Reader,
    path: &str,
    map: &serde_json::Map<String, Value>,
    issuer: &str,
    base_dir: &Path,
) -> Option<RemoteKeys> {
    let insecure_http = match map.get("insecure_http") {
        None => false,
        Some(value) => reader.boolean(&child(path, "insecure_http"), value)?,
    };
    let scheme_ok =
        |url: &str| url.starts_with("https://") || (insecure_http && url.starts_with("http://"));
    let location = match (map.get("jwks_uri"), map.get("discovery")) {
        (Some(uri), None) => {
            let uri_path = child(path, "jwks_uri");
            let url = reader.string(&uri_path, uri)?;
            if !scheme_ok(url) {
                reader.error(uri_path, "must be an https:// URL (http:// only with insecure_http: true, for local testing)");
                return None;
            }
            JwksLocation::Uri(url.to_owned())
        }
        (None, Some(discovery)) => {
            if !reader.boolean(&child(path, "discovery"), discovery)? {
                reader.error(
                    child(path, "discovery"),
                    "set it to true, or give jwks_file or jwks_uri instead",
                );
                return None;
            }
            if !scheme_ok(issuer) {
                reader.error(
                    child(path, "issuer"),
                    "discovery needs an https:// issuer (http:// only with insecure_http: true)",
                );
                return None;
            }
            JwksLocation::Discovery
        }
        _ => return None,
    };
    let long = Duration::from_secs(7 * 24 * 3600);
    let refresh_interval = duration_or(
        reader,
        &child(path, "refresh_interval"),
        map.get("refresh_interval"),
        Duration::from_secs(300),
        long,
    );
    let max_stale = duration_or(
        reader,
        &child(path, "max_stale"),
        map.get("max_stale"),
        Duration::from_secs(3600),
        long,
    );
    let cooldown = duration_or(
        reader,
        &child(path, "unknown_kid_cooldown"),
        map.get("unknown_kid_cooldown"),
        Duration::from_secs(30),
        long,
    );
    let fetch_timeout = duration_or(
        reader,
        &child(path, "fetch_timeout"),
        map.get("fetch_timeout"),
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    let max_bytes = match map.get("max_jwks_bytes") {
        None => Some(1 << 20),
        Some(value) => reader.integer(&child(path, "max_jwks_bytes"), value, 1024, 16 << 20),
    };
    let ca_file = match map.get("ca_file") {
        None => Some(None),
        Some(value) => reader
            .string(&child(path, "ca_file"), value)
            .map(|file| Some(base_dir.join(file))),
    };
    if refresh_interval.is_some_and(|refresh| refresh < Duration::from_secs(1)) {
        reader.error(
            child(path, "refresh_interval"),
            "must be at least 1s (the issuer would be fetched in a tight loop)",
        );
        return None;
    }
    if let (Some(refresh), Some(stale)) = (&refresh_interval, &max_stale)
        && refresh >= stale
    {
        reader.error(
            child(path, "max_stale"),
            "must be longer than refresh_interval (or good keys would expire between refreshes)",
        );
        return None;
    }
    let spec = RemoteSpec {
        issuer: issuer.to_owned(),
        location,
        ca_file: ca_file?,
        insecure_http,
        refresh_interval: refresh_interval?,
        max_stale: max_stale?,
        unknown_kid_cooldown: cooldown?,
        fetch_timeout: fetch_timeout?,
        max_bytes: max_bytes? as usize,
    };
    RemoteKeys::new(spec)
        .map_err(|error| reader.error(child(path, "ca_file"), error))
        .ok()
}

fn read_issuer(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    base_dir: &Path,
) -> Option<TrustedIssuer> {
    let map = reader.mapping(path, value, KEYS)?;
    let issuer = reader
        .required(path, map, "issuer")
        .and_then(|value| reader.string(&child(path, "issuer"), value));
    let sources = ["jwks_file", "jwks_uri", "discovery"]
        .into_iter()
        .filter(|key| map.contains_key(*key))
        .count();
    if sources != 1 {
        reader.error(
            path,
            "needs exactly one of jwks_file, jwks_uri, discovery: true",
        );
    }
    let keys = match (map.get("jwks_file"), issuer) {
        (Some(file), _) => read_static_keys(reader, path, file, base_dir)
            .map(|keys| IssuerKeys::Static(Arc::new(keys))),
        (None, Some(issuer)) if sources == 1 => read_remote(reader, path, map, issuer, base_dir)
            .map(|remote| IssuerKeys::Remote(Arc::new(remote))),
        _ => None,
    };
    if map.get("jwks_file").is_some() {
        for remote_only in [
            "ca_file",
            "insecure_http",
            "refresh_interval",
            "max_stale",
            "unknown_kid_cooldown",
            "fetch_timeout",
            "max_jwks_bytes",
        ] {
            if map.contains_key(remote_only) {
                reader.error(
                    child(path, remote_only),
                    "applies only to jwks_uri or discovery",
                );
            }
        }
    }
    let algorithms = match map.get("algorithms") {
        None => Some(vec![
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::EdDSA,
        ]),
        Some(value) => reader.list(&child(path, "algorithms"), value, |reader, path, element| {
            let name = reader.string(path, element)?;
            let algorithm = parse_algorithm(name);
            if algorithm.is_none() {
                reader.error(
                    path,
                    "must be one of ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA (none and HS* are refused)",
                );
            }
            algorithm
        }),
    };
    if algorithms.as_ref().is_some_and(Vec::is_empty) {
        reader.error(
            child(path, "algorithms"),
            "must list at least one algorithm",
        );
    }
    Some(TrustedIssuer {
        issuer: issuer?.into(),
        algorithms: algorithms?,
        keys: keys?,
    })
}
