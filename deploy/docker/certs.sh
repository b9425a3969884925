#!/bin/sh
# One-shot: development credentials for the demo into /certs (a shared volume).
# Development only: `actguard dev` keys are for demos, never for production.
set -eu
out=/certs
if [ -f "$out/.done" ]; then exit 0; fi
actguard dev ca --trust-domain example.org --out "$out/ca"
# Envoy's certificate also names the host the demo's curl dials (https://envoy:8443).
actguard dev svid --ca "$out/ca" --id spiffe://example.org/tool/calendar --dns envoy --out "$out/envoy"
for agent in orchestrator scheduler planner; do
  actguard dev svid --ca "$out/ca" --id "spiffe://example.org/agent/$agent" --out "$out/$agent"
done
actguard dev issuer --issuer https://sts.example.org --kid demo-1 --out "$out/issuer"
# Demo only: Envoy (uid 101), actguard (65532) and the client read these throwaway keys from
# the shared volume. Real deployments get per-workload SVIDs from SPIRE instead.
chmod -R a+rX "$out"
touch "$out/.done"
