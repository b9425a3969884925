"""An independent ext_authz client: none of actguard's code, its own PKI and tokens.

Stubs come from Envoy's .proto files (gen_stubs.py), certificates from `cryptography`, tokens
from PyJWT. It starts `actguard serve` on a Unix socket with a config it writes itself, sends
CheckRequests the way Envoy does, and checks the answers against DESIGN.md's response shapes.

Usage: ext_authz_client.py ACTGUARD_BINARY STUBS_DIR
"""
import base64
import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, sys.argv[2])
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402

LOCAL = "spiffe://example.org/tool/calendar"
ISSUER = "https://sts.example.org"
ORCHESTRATOR = "spiffe://example.org/agent/orchestrator"
SCHEDULER = "spiffe://example.org/agent/scheduler"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

FAILURES = []


def expect(name, condition, detail=""):
    print(("ok    " if condition else "FAIL  ") + name + ("" if condition else f": {detail}"))
    if not condition:
        FAILURES.append(name)


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "independent test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_svid(ca_key, ca_cert, spiffe_id):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # X509-SVID §4.3: a leaf's key usage is present, with digitalSignature.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    # Envoy's `source.certificate`: the URL-encoded PEM of the peer certificate.
    return urllib.parse.quote(cert.public_bytes(serialization.Encoding.PEM).decode(), safe="")


def b64url_int(value, length):
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


def check_request(certificate, method, path, token=None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=attribute_context_pb2.AttributeContext.Peer(certificate=certificate),
            request=attribute_context_pb2.AttributeContext.Request(
                http=attribute_context_pb2.AttributeContext.HttpRequest(
                    method=method, host="calendar.example.org", path=path, headers=headers
                )
            ),
        )
    )


def denied(response):
    body = json.loads(response.denied_response.body)
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    return response.status.code, response.denied_response.status.code, body, headers


def main():
    binary = sys.argv[1]
    ca_key, ca_cert = make_ca()
    scheduler = make_svid(ca_key, ca_cert, SCHEDULER)
    orchestrator = make_svid(ca_key, ca_cert, ORCHESTRATOR)
    signing_key = ec.generate_private_key(ec.SECP256R1())
    numbers = signing_key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "py-1", "use": "sig",
                      "x": b64url_int(numbers.x, 32), "y": b64url_int(numbers.y, 32)}]}
    now = int(time.time())

    def token(**changes):
        claims = {"iss": ISSUER, "sub": "user:alice", "aud": LOCAL, "scope": "calendar:read",
                  "iat": now, "exp": now + 300, "jti": "py-jti-1",
                  "act": {"sub": SCHEDULER, "act": {"sub": ORCHESTRATOR}}}
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, signing_key, algorithm="ES256", headers={"kid": "py-1"})

    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        (scratch / "jwks.json").write_text(json.dumps(jwks))
        socket_path = scratch / "authz.sock"
        (scratch / "config.yaml").write_text(f"""
listen:
  grpc: unix:{socket_path}
  admin: "off"
audit:
  output: "off"
identity:
  local: {LOCAL}
  trust_domains: [example.org]
issuers:
  - issuer: {ISSUER}
    jwks_file: jwks.json
    algorithms: [ES256]
routes:
  - name: calendar-read
    methods: [GET]
    path_prefix: /calendar
    require_scopes: [calendar:read]
  - name: calendar-write
    methods: [POST]
    path_prefix: /calendar
    require_scopes: [calendar:write]
default: deny
""")
        server = subprocess.Popen([binary, "serve", "--config", str(scratch / "config.yaml")])
        try:
            for _ in range(200):
                if socket_path.exists() or server.poll() is not None:
                    break
                time.sleep(0.05)
            expect("server started", socket_path.exists(), f"exit code {server.poll()}")
            # grpc-c would send the percent-encoded socket path as :authority, which hyper
            # rejects; Envoy sends its cluster name, so do the same.
            channel = grpc.insecure_channel(f"unix:{socket_path}", options=[("grpc.default_authority", "actguard")])
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            run_cases(stub, scheduler, orchestrator, token)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=10)
        expect("SIGTERM exits 0", code == 0, f"exit code {code}")
    if FAILURES:
        sys.exit(f"{len(FAILURES)} failure(s): {FAILURES}")
    print("independent client: every answer matches DESIGN.md")


def run_cases(stub, scheduler, orchestrator, token):
    delegated = token()
    allow = stub.Check(check_request(scheduler, "GET", "/calendar/events?day=mon", delegated))
    headers = {h.header.key: (h.header.value, h.append_action) for h in allow.ok_response.headers}
    expect("worked example: OK", allow.status.code == 0, allow)
    expect("x-actguard-subject", headers.get("x-actguard-subject") == ("user:alice", OVERWRITE), headers)
    expect("x-actguard-actor", headers.get("x-actguard-actor") == (SCHEDULER, OVERWRITE), headers)
    expect("x-actguard-chain", headers.get("x-actguard-chain") == (f"{ORCHESTRATOR},{SCHEDULER}", OVERWRITE), headers)
    expect("x-actguard-jti", headers.get("x-actguard-jti") == ("py-jti-1", OVERWRITE), headers)
    expect("authorization removed", "authorization" in allow.ok_response.headers_to_remove, allow.ok_response)
    metadata = allow.dynamic_metadata.fields
    expect("metadata route", metadata["route"].string_value == "calendar-read", metadata)
    expect("metadata chain", [v.string_value for v in metadata["chain"].list_value.values] == [ORCHESTRATOR, SCHEDULER], metadata)

    replay = denied(stub.Check(check_request(orchestrator, "GET", "/calendar/events", delegated)))
    expect("replay by prior hop: PERMISSION_DENIED 403", replay[:2] == (7, 403), replay)
    expect("replay body", replay[2] == {"error": "actor_mismatch",
                                         "error_description": "the token's current actor is not the caller"}, replay)
    expect("replay content-type", replay[3].get("content-type") == "application/json", replay)

    missing = denied(stub.Check(check_request(scheduler, "GET", "/calendar/events")))
    expect("no token: UNAUTHENTICATED 401", missing[:2] == (16, 401), missing)
    expect("no token: bare challenge", missing[3].get("www-authenticate") == f'Bearer realm="{LOCAL}"', missing)

    cases = [
        ("expired", token(exp=int(time.time()) - 120), "GET", 401, "token_expired"),
        ("wrong audience", token(aud="spiffe://example.org/tool/email"), "GET", 401, "token_audience_mismatch"),
        ("forwarded user token", token(act=None, client_id=ORCHESTRATOR), "GET", 403, "token_not_bound_to_caller"),
        ("missing scope", delegated, "POST", 403, "insufficient_scope"),
    ]
    for name, presented, method, status, code in cases:
        answer = denied(stub.Check(check_request(scheduler, method, "/calendar/events", presented)))
        expect(f"{name}: {status} {code}", answer[1] == status and answer[2]["error"] == code, answer)
        challenge = answer[3].get("www-authenticate", "")
        if status == 401:
            expect(f"{name}: invalid_token challenge", 'error="invalid_token"' in challenge, answer)
        if code == "insufficient_scope":
            expect(f"{name}: scope in challenge", 'scope="calendar:write"' in challenge, answer)


if __name__ == "__main__":
    main()
