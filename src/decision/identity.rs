//! The caller's identity: a SPIFFE ID from the facts Envoy reports about the mTLS peer.
//!
//! Sources are tried in the configured order; the first one that is *present* decides. A source
//! that is present but unusable (a certificate that is a CA, has no or several URI SANs, or a
//! non-canonical SPIFFE ID; a principal that is not a SPIFFE ID) denies with
//! `caller_identity_invalid` rather than falling through to a weaker source.
//!
//! What this module checks of a certificate: it parses as X.509, is not a CA (basic
//! constraints, `keyCertSign`/`cRLSign` key usage), has a key usage with `digitalSignature`
//! (X509-SVID §4.3), and carries exactly one URI SAN, which is a
//! canonical SPIFFE ID (the X509-SVID rules), and — on every check, cached or not — that the
//! check happens inside the certificate's validity period: a connection can outlive the
//! certificate Envoy verified at its handshake. It does not check the chain: Envoy validated it
//! during the TLS handshake before it asked us.
//! It does not check the trust domain; the authorizer does.

use crate::decision::reason::{Denial, DenyReason};
use crate::decision::spiffe::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A place the caller's identity may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// `attributes.source.certificate`: the URL-encoded PEM of the peer certificate
    /// (Envoy's `include_peer_certificate: true`).
    Certificate,
    /// `attributes.source.principal`: Envoy's view of the peer's URI SAN.
    Principal,
    /// The last element of `x-forwarded-client-cert`. Only safe when the proxy in front
    /// sanitises that header (Envoy `forward_client_cert_details: SANITIZE_SET`).
    Xfcc,
}

impl IdentitySource {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "certificate" => Some(Self::Certificate),
            "principal" => Some(Self::Principal),
            "xfcc" => Some(Self::Xfcc),
            _ => None,
        }
    }
}

/// What Envoy told us about the peer; empty strings mean "not reported".
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerFacts<'a> {
    pub certificate: &'a str,
    pub principal: &'a str,
    pub xfcc: Option<&'a str>,
}

fn invalid(description: &'static str) -> Denial {
    Denial::new(DenyReason::CallerIdentityInvalid, description)
}

/// What a certificate says of its holder: the SPIFFE ID and when the certificate is valid
/// (`notBefore`..=`notAfter`, Unix seconds). A pure function of the certificate's bytes, so it
/// may be cached; [`Svid::identity_at`] applies the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svid {
    pub id: SpiffeId,
    pub not_before: i64,
    pub not_after: i64,
}

impl Svid {
    /// The SPIFFE ID, when `now` is inside the validity period (RFC 5280 §4.1.2.5: both ends
    /// inclusive); otherwise `caller_identity_invalid`.
    pub fn identity_at(&self, now: i64) -> Result<SpiffeId, Denial> {
        if now < self.not_before {
            Err(invalid("the caller's certificate is not valid yet"))
        } else if now > self.not_after {
            Err(invalid("the caller's certificate has expired"))
        } else {
            Ok(self.id.clone())
        }
    }
}

/// Finds the caller's SPIFFE ID at time `now`. `certificate_identity` parses a certificate; the
/// authorizer passes a cached version of [`spiffe_id_from_certificate`].
pub fn caller_identity(
    sources: &[IdentitySource],
    facts: &PeerFacts<'_>,
    now: i64,
    certificate_identity: impl FnOnce(&str) -> Result<Svid, Denial>,
) -> Result<SpiffeId, Denial> {
    let mut certificate_identity = Some(certificate_identity);
    for source in sources {
        match source {
            IdentitySource::Certificate if !facts.certificate.is_empty() => {
                if let Some(parse) = certificate_identity.take() {
                    return parse(facts.certificate)?.identity_at(now);
                }
            }
            IdentitySource::Principal if !facts.principal.is_empty() => {
                return SpiffeId::parse(facts.principal)
                    .map_err(|_| invalid("the peer principal is not a canonical SPIFFE ID"))
                    .and_then(workload);
            }
            IdentitySource::Xfcc => {
                if let Some(header) = facts.xfcc.filter(|header| !header.is_empty()) {
                    return spiffe_id_from_xfcc(header, now);
                }
            }
            _ => {}
        }
    }
    Err(Denial::new(
        DenyReason::CallerIdentityMissing,
        "no caller identity was presented",
    ))
}

/// Reads an X509-SVID given as URL-encoded PEM (see the module docs).
///
/// A pure function of the bytes, independent of configuration and time: the authorizer caches
/// its successes across reloads on that basis. A check that depends on either belongs after it
/// (the validity period is applied by [`Svid::identity_at`]).
pub fn spiffe_id_from_certificate(url_encoded_pem: &str) -> Result<Svid, Denial> {
    let pem_bytes: Vec<u8> = percent_encoding::percent_decode_str(url_encoded_pem).collect();
    // Only white space around the one PEM block: the parser would skip text before it, and a
    // certificate with something glued in front is not the one the proxy verified.
    let begin = pem_bytes
        .windows(b"-----BEGIN".len())
        .position(|window| window == b"-----BEGIN")
        .unwrap_or(pem_bytes.len());
    if !pem_bytes[..begin].iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "the peer certificate has text before its PEM block",
        ));
    }
    let (rest, pem) = x509_parser::pem::parse_x509_pem(&pem_bytes[begin..])
        .map_err(|_| invalid("the peer certificate is not PEM"))?;
    if pem.label != "CERTIFICATE" {
        return Err(invalid(
            "the peer certificate is not a CERTIFICATE PEM block",
        ));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("more than one peer certificate was presented"));
    }
    spiffe_id_from_der(&pem.contents)
}

/// An X509-SVID in DER form (the checks of [`spiffe_id_from_certificate`]).
pub fn spiffe_id_from_der(der: &[u8]) -> Result<Svid, Denial> {
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|_| invalid("the peer certificate is not valid X.509"))?;
    let validity = certificate.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let basic_constraints = certificate
        .basic_constraints()
        .map_err(|_| invalid("the peer certificate has malformed basic constraints"))?;
    if basic_constraints.is_some_and(|extension| extension.value.ca) {
        return Err(invalid("the peer certificate is a CA certificate"));
    }
    let key_usage = certificate
        .key_usage()
        .map_err(|_| invalid("the peer certificate has a malformed key usage"))?;
    // X509-SVID §4.3: a leaf carries the key usage extension with digitalSignature set, and
    // neither keyCertSign nor cRLSign.
    let Some(key_usage) = key_usage else {
        return Err(invalid("the peer certificate has no key usage"));
    };
    if key_usage.value.key_cert_sign() || key_usage.value.crl_sign() {
        return Err(invalid("the peer certificate may sign certificates"));
    }
    if !key_usage.value.digital_signature() {
        return Err(invalid(
            "the peer certificate's key usage lacks digitalSignature",
        ));
    }
    let alternative_names = certificate
        .subject_alternative_name()
        .map_err(|_| invalid("the peer certificate has a malformed subject alternative name"))?;
    let mut uris = alternative_names
        .iter()
        .flat_map(|extension| extension.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => SpiffeId::parse(uri)
            .map_err(|_| invalid("the peer certificate's URI SAN is not a canonical SPIFFE ID"))
            .and_then(workload)
            .map(|id| Svid {
                id,
                not_before,
                not_after,
            }),
        (None, _) => Err(invalid("the peer certificate has no URI SAN")),
        (Some(_), Some(_)) => Err(invalid("the peer certificate has more than one URI SAN")),
    }
}

/// The caller must be a workload, not a trust domain's own ID (X509-SVID §4.2: a leaf's SPIFFE
/// ID has a non-root path, and validators check it), whichever source it came from.
fn workload(id: SpiffeId) -> Result<SpiffeId, Denial> {
    if id.is_workload() {
        Ok(id)
    } else {
        Err(invalid(
            "the caller's SPIFFE ID names a trust domain, not a workload",
        ))
    }
}

/// Splits `input` on `separator` outside double quotes (XFCC values may quote `,` and `;`).
fn split_unquoted(input: &str, separator: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, character) in input.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                pieces.push(&input[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&input[start..]);
    pieces
}

/// Reads the caller from the last element of an `x-forwarded-client-cert` header (the element
/// added by the proxy nearest to us): from its `Cert=` (the URL-encoded PEM, as Envoy's
/// `set_current_client_cert_details.cert` and nginx's `$ssl_client_escaped_cert` give it,
/// checked as an X509-SVID exactly like a peer certificate) when present, else from its one
/// `URI=`. An element with both must name the same SPIFFE ID; several of either is refused.
/// A `Cert=` is held to its validity period at `now`.
pub fn spiffe_id_from_xfcc(header: &str, now: i64) -> Result<SpiffeId, Denial> {
    let elements = split_unquoted(header, ',');
    let last = elements.last().copied().unwrap_or_default();
    let values = |wanted: &str| -> Vec<&str> {
        split_unquoted(last, ';')
            .into_iter()
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case(wanted)
                    .then(|| value.trim().trim_matches('"'))
            })
            .collect()
    };
    let (uris, certificates) = (values("uri"), values("cert"));
    if uris.len() > 1 {
        return Err(invalid("the forwarded client certificate has several URIs"));
    }
    match certificates[..] {
        [] => match uris[..] {
            [uri] => SpiffeId::parse(uri)
                .map_err(|_| {
                    invalid("the forwarded client certificate URI is not a canonical SPIFFE ID")
                })
                .and_then(workload),
            _ => Err(invalid("the forwarded client certificate has no URI")),
        },
        [certificate] => {
            let id = spiffe_id_from_certificate(certificate)?.identity_at(now)?;
            match uris[..] {
                [uri] if uri != id.as_str() => Err(invalid(
                    "the forwarded client certificate and its URI name different callers",
                )),
                _ => Ok(id),
            }
        }
        _ => Err(invalid(
            "the forwarded client certificate element has several certificates",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentitySource::*;

    const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";
    /// A time inside the development CA's certificates' validity (rcgen's 1975–4096).
    const NOW: i64 = 1_800_000_000;

    fn from_principal(principal: &str) -> Result<String, DenyReason> {
        let facts = PeerFacts {
            principal,
            ..PeerFacts::default()
        };
        caller_identity(&[Certificate, Principal], &facts, NOW, |_| unreachable!())
            .map(|id| id.to_string())
            .map_err(|denial| denial.reason)
    }

    #[test]
    fn principal_must_be_a_canonical_spiffe_id() {
        assert_eq!(from_principal(SCHEDULER).as_deref(), Ok(SCHEDULER));
        assert_eq!(
            from_principal("CN=scheduler"),
            Err(DenyReason::CallerIdentityInvalid)
        );
        assert_eq!(from_principal(""), Err(DenyReason::CallerIdentityMissing));
    }

    #[test]
    fn certificate_source_wins_over_principal() {
        let facts = PeerFacts {
            certificate: "pem",
            principal: "spiffe://example.org/agent/other",
            xfcc: None,
        };
        let id = caller_identity(&[Certificate, Principal], &facts, NOW, |_| {
            SpiffeId::parse(SCHEDULER)
                .map(|id| Svid {
                    id,
                    not_before: 0,
                    not_after: i64::MAX,
                })
                .map_err(|_| invalid("x"))
        });
        assert_eq!(id.unwrap().as_str(), SCHEDULER);
    }

    #[test]
    fn xfcc_is_ignored_unless_configured() {
        let facts = PeerFacts {
            xfcc: Some("URI=spiffe://example.org/agent/scheduler"),
            ..PeerFacts::default()
        };
        let without = caller_identity(&[Certificate, Principal], &facts, NOW, |_| unreachable!());
        assert_eq!(
            without.unwrap_err().reason,
            DenyReason::CallerIdentityMissing
        );
        let with = caller_identity(&[Certificate, Xfcc], &facts, NOW, |_| unreachable!());
        assert_eq!(with.unwrap().as_str(), SCHEDULER);
    }

    #[test]
    fn xfcc_uses_the_last_element() {
        let cases: &[(&str, &str, Result<&str, DenyReason>)] = &[
            (
                "two hops",
                "By=spiffe://example.org/x;URI=spiffe://example.org/agent/evil,By=spiffe://example.org/tool;Hash=ab;URI=spiffe://example.org/agent/scheduler",
                Ok(SCHEDULER),
            ),
            (
                "quoted subject with separators",
                "Subject=\"CN=a,O=b;c\";URI=spiffe://example.org/agent/scheduler",
                Ok(SCHEDULER),
            ),
            (
                "lowercase key",
                "uri=spiffe://example.org/agent/scheduler",
                Ok(SCHEDULER),
            ),
            (
                "no uri in last",
                "URI=spiffe://example.org/a,Hash=ab",
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "two uris",
                "URI=spiffe://example.org/a;URI=spiffe://example.org/b",
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "not spiffe",
                "URI=https://example.org/a",
                Err(DenyReason::CallerIdentityInvalid),
            ),
        ];
        for (name, header, expected) in cases {
            let got = spiffe_id_from_xfcc(header, NOW).map_err(|denial| denial.reason);
            assert_eq!(
                got.as_ref().map(SpiffeId::as_str),
                expected.as_ref().map(|s| *s),
                "case {name}"
            );
        }
    }

    #[test]
    fn rule_only_white_space_may_surround_the_peer_certificate() {
        let ca = crate::devkit::DevCa::new("example.org").unwrap();
        let pem = ca.issue_svid(SCHEDULER).unwrap().cert_pem;
        let encode = |text: &str| crate::devkit::url_encode(text);
        assert_eq!(
            spiffe_id_from_certificate(&encode(&format!("\n  {pem}\n")))
                .map(|svid| svid.id.to_string()),
            Ok(SCHEDULER.to_owned())
        );
        for (case, text) in [
            ("text before", format!("x{pem}")),
            ("a line before", format!("garbage\n{pem}")),
            ("text after", format!("{pem}x")),
        ] {
            assert_eq!(
                spiffe_id_from_certificate(&encode(&text)).map_err(|d| d.reason),
                Err(DenyReason::CallerIdentityInvalid),
                "{case}"
            );
        }
    }

    #[test]
    fn rule_the_caller_must_be_a_workload_not_a_trust_domain() {
        let root = "spiffe://example.org";
        assert_eq!(
            from_principal(root),
            Err(DenyReason::CallerIdentityInvalid),
            "principal"
        );
        let from_xfcc = spiffe_id_from_xfcc(&format!("URI={root}"), NOW).map_err(|d| d.reason);
        assert_eq!(from_xfcc, Err(DenyReason::CallerIdentityInvalid), "xfcc");
        let ca = crate::devkit::DevCa::new("example.org").unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(root.try_into().unwrap()));
        let certificate = ca.issue(params).unwrap().url_encoded();
        assert_eq!(
            spiffe_id_from_certificate(&certificate).map_err(|d| d.reason),
            Err(DenyReason::CallerIdentityInvalid),
            "certificate"
        );
    }

    #[test]
    fn rule_xfcc_cert_is_checked_as_an_svid_and_must_agree_with_its_uri() {
        let ca = crate::devkit::DevCa::new("example.org").unwrap();
        let svid = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        let two_uris = {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            for uri in [SCHEDULER, "spiffe://example.org/agent/other"] {
                params
                    .subject_alt_names
                    .push(rcgen::SanType::URI(uri.try_into().unwrap()));
            }
            ca.issue(params).unwrap().url_encoded()
        };
        let expired = {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(SCHEDULER.try_into().unwrap()));
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
            ca.issue(params).unwrap().url_encoded()
        };
        let cases: Vec<(&str, String, Result<&str, DenyReason>)> = vec![
            (
                "cert expired",
                format!("Cert=\"{expired}\";URI={SCHEDULER}"),
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "cert alone",
                format!("By=spiffe://example.org/tool;Cert=\"{svid}\""),
                Ok(SCHEDULER),
            ),
            (
                "cert and its uri",
                format!("Cert=\"{svid}\";URI={SCHEDULER}"),
                Ok(SCHEDULER),
            ),
            (
                "cert and another uri",
                format!("Cert=\"{svid}\";URI=spiffe://example.org/agent/orchestrator"),
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "cert with two URI SANs",
                format!("Cert=\"{two_uris}\""),
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "cert not PEM",
                "Cert=\"garbage\"".to_owned(),
                Err(DenyReason::CallerIdentityInvalid),
            ),
            (
                "two certs",
                format!("Cert=\"{svid}\";Cert=\"{svid}\""),
                Err(DenyReason::CallerIdentityInvalid),
            ),
        ];
        for (name, header, expected) in cases {
            let got = spiffe_id_from_xfcc(&header, NOW).map_err(|denial| denial.reason);
            assert_eq!(
                got.as_ref().map(SpiffeId::as_str),
                expected.as_ref().map(|s| *s),
                "case {name}"
            );
        }
    }
}
