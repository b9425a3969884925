//! `actguard dev …`: development credentials for demos and for wiring actguard up before SPIRE
//! and a token service are in place. **Never for production keys**: keys are generated on this
//! machine, written unencrypted, and the CA has no revocation.
//!
//! - `dev ca` → `ca.pem` (the trust bundle) and `ca-key.pem`;
//! - `dev svid` → `svid.pem`, `svid-key.pem` and `bundle.pem` (an X509-SVID: one URI SAN, leaf,
//!   digitalSignature, client and server auth);
//! - `dev issuer` → `issuer-key.pem`, `jwks.json` (give it to actguard) and `issuer.json`;
//! - `dev token` → a signed access token on stdout, `act` nested from the delegation order given.

use super::DevCommand;
use crate::decision::token::unix_now;
use crate::devkit::{DevAlgorithm, DevCa, DevError, DevIssuer, delegated_claims};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options
        .open(&path)
        .and_then(|mut file| {
            if secret {
                // Also when the file existed before with wider permissions.
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(contents.as_bytes())
        })
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn dev_error(error: DevError) -> String {
    error.to_string()
}

/// `dev ca --trust-domain D --out DIR`.
pub fn ca(trust_domain: &str, out: &Path) -> Result<String, String> {
    crate::decision::spiffe::TrustDomain::parse(trust_domain)
        .map_err(|error| format!("--trust-domain: trust domain {error}"))?;
    let ca = DevCa::new(trust_domain).map_err(dev_error)?;
    write(out, "ca.pem", ca.bundle_pem(), false)?;
    write(out, "ca-key.pem", ca.key_pem(), true)?;
    Ok(format!(
        "wrote {0}/ca.pem and {0}/ca-key.pem (development CA for {trust_domain})",
        out.display()
    ))
}

/// `dev svid --ca DIR --id SPIFFE_ID [--dns NAME]… --out DIR`.
pub fn svid(ca_dir: &Path, id: &str, dns_names: &[String], out: &Path) -> Result<String, String> {
    let spiffe_id = crate::decision::spiffe::SpiffeId::parse(id)
        .map_err(|error| format!("--id: SPIFFE ID {error}"))?;
    let ca = DevCa::from_pem(&read(ca_dir, "ca.pem")?, &read(ca_dir, "ca-key.pem")?)
        .map_err(dev_error)?;
    let svid = ca
        .issue_svid_with_dns(spiffe_id.as_str(), dns_names)
        .map_err(dev_error)?;
    write(out, "svid.pem", &svid.cert_pem, false)?;
    write(out, "svid-key.pem", &svid.key_pem, true)?;
    write(out, "bundle.pem", ca.bundle_pem(), false)?;
    Ok(format!(
        "wrote {0}/svid.pem, {0}/svid-key.pem, {0}/bundle.pem for {id}",
        out.display()
    ))
}

/// `dev issuer --issuer URL --kid KID --out DIR`.
pub fn issuer(issuer: &str, kid: &str, out: &Path) -> Result<String, String> {
    let generated = DevIssuer::generate(issuer, kid, DevAlgorithm::Es256).map_err(dev_error)?;
    write(out, "issuer-key.pem", generated.key_pem(), true)?;
    write(out, "jwks.json", &generated.jwks().to_string(), false)?;
    let description = json!({"issuer": issuer, "kid": kid, "alg": "ES256"});
    write(out, "issuer.json", &description.to_string(), false)?;
    Ok(format!(
        "wrote {0}/issuer-key.pem, {0}/jwks.json, {0}/issuer.json (issuer {issuer}, kid {kid})",
        out.display()
    ))
}

/// What `dev token` signs.
pub struct TokenRequest<'a> {
    pub issuer_dir: &'a Path,
    pub subject: &'a str,
    /// Delegation order: first delegate first, current actor last.
    pub actors: Vec<&'a str>,
    pub audience: &'a str,
    pub scope: &'a str,
    pub ttl: Duration,
    pub client_id: Option<&'a str>,
    pub jti: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// RFC 9396 `authorization_details` as JSON text (an array of objects).
    pub authorization_details: Option<&'a str>,
}

/// `dev token …`: the compact JWS.
pub fn token(request: &TokenRequest<'_>) -> Result<String, String> {
    let description: serde_json::Value =
        serde_json::from_str(&read(request.issuer_dir, "issuer.json")?)
            .map_err(|error| format!("issuer.json: {error}"))?;
    let (Some(issuer), Some(kid)) = (description["issuer"].as_str(), description["kid"].as_str())
    else {
        return Err("issuer.json: needs issuer and kid".into());
    };
    let signer = DevIssuer::from_key_pem(issuer, kid, &read(request.issuer_dir, "issuer-key.pem")?)
        .map_err(dev_error)?;
    let lifetime =
        i64::try_from(request.ttl.as_secs()).map_err(|_| "--ttl: too long".to_owned())?;
    let mut claims = delegated_claims(
        issuer,
        request.subject,
        request.audience,
        request.scope,
        &request.actors,
        unix_now(),
        lifetime,
    );
    for (name, value) in [
        ("client_id", request.client_id),
        ("jti", request.jti),
        ("sid", request.sid),
    ] {
        if let Some(value) = value {
            claims[name] = json!(value);
        }
    }
    if let Some(text) = request.authorization_details {
        let details: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| format!("--authorization-details: not JSON: {error}"))?;
        if !details
            .as_array()
            .is_some_and(|entries| entries.iter().all(|entry| entry["type"].is_string()))
        {
            return Err(
                "--authorization-details: must be a JSON array of objects, each with a string type"
                    .into(),
            );
        }
        claims["authorization_details"] = details;
    }
    signer.sign(&claims).map_err(dev_error)
}

/// `actguard dev …`: prints the file list or token, or the error.
pub fn run(command: DevCommand) -> ExitCode {
    let outcome = match command {
        DevCommand::Ca { trust_domain, out } => ca(&trust_domain, &out),
        DevCommand::Svid { ca, id, dns, out } => svid(&ca, &id, &dns, &out),
        DevCommand::Issuer { out, issuer, kid } => self::issuer(&issuer, &kid, &out),
        DevCommand::Token {
            issuer,
            sub,
            act,
            aud,
            scope,
            ttl,
            client_id,
            jti,
            sid,
            authorization_details,
        } => match crate::config::parse_duration(&ttl).filter(|ttl| !ttl.is_zero()) {
            None => Err(format!("--ttl {ttl}: expected a duration such as 5m")),
            Some(ttl) => token(&TokenRequest {
                issuer_dir: &issuer,
                subject: &sub,
                actors: act
                    .iter()
                    .map(String::as_str)
                    .filter(|a| !a.is_empty())
                    .collect(),
                audience: &aud,
                scope: &scope,
                ttl,
                client_id: client_id.as_deref(),
                jti: jti.as_deref(),
                sid: sid.as_deref(),
                authorization_details: authorization_details.as_deref(),
            }),
        },
    };
    super::report(outcome)
}
