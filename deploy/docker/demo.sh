#!/bin/sh
# The curl scenario of the Docker demo: agents call the calendar tool through Envoy + actguard
# with their own certificates. Prints the HTTP status and actguard's reason for each request.
# tests/docker_demo.rs reads TOKENS and CASES below and checks every promised status against
# the real server, so keep one entry per line.
set -u
ENVOY=${ENVOY:-https://envoy:8443}
CERTS=${CERTS:-/certs}
TD=spiffe://example.org
AUD=$TD/tool/calendar

# name|arguments of `actguard dev token` (besides --issuer)
TOKENS='
delegated|--sub user:alice --act spiffe://example.org/agent/orchestrator,spiffe://example.org/agent/scheduler --aud spiffe://example.org/tool/calendar --scope calendar:read
user|--sub user:alice --client-id spiffe://example.org/agent/orchestrator --aud spiffe://example.org/tool/calendar --scope calendar:read
other_audience|--sub user:alice --act spiffe://example.org/agent/orchestrator,spiffe://example.org/agent/scheduler --aud spiffe://example.org/tool/email --scope calendar:read
deep|--sub user:alice --act spiffe://example.org/agent/orchestrator,spiffe://example.org/agent/planner,spiffe://example.org/agent/scheduler --aud spiffe://example.org/tool/calendar --scope calendar:read
'

# title|agent certificate (or none)|method|path|token|expected status|expected reason
CASES='
allowed delegated call|scheduler|GET|/calendar/events?day=mon|delegated|200|allow
forwarded user token|scheduler|GET|/calendar/events|user|403|token_not_bound_to_caller
replay by a prior hop|orchestrator|GET|/calendar/events|delegated|403|actor_mismatch
token for another tool|scheduler|GET|/calendar/events|other_audience|401|token_audience_mismatch
write with a read scope|scheduler|POST|/calendar/events|delegated|403|insufficient_scope
delegation too deep|scheduler|GET|/calendar/events|deep|403|delegation_too_deep
no client certificate|none|GET|/calendar/events|delegated|000|tls_refused
'

token_for() {
  echo "$TOKENS" | while IFS='|' read -r name args; do
    [ "$name" = "$1" ] || continue
    # shellcheck disable=SC2086
    actguard dev token --issuer "$CERTS/issuer" $args
  done
}

# Wait for actguard's own readiness (keys loaded, listeners bound), then for Envoy.
for _ in $(seq 60); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://actguard:9194/readyz)" = 200 ] && break
  sleep 1
done
for _ in $(seq 60); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca/ca.pem" \
        --cert "$CERTS/scheduler/svid.pem" --key "$CERTS/scheduler/svid-key.pem" "$ENVOY/")" != 000 ] && break
  sleep 1
done

failures=0
echo "$CASES" | { while IFS='|' read -r title agent method path token status reason; do
  [ -n "$title" ] || continue
  bearer=$(token_for "$token")
  if [ "$agent" = none ]; then
    identity=""
  else
    identity="--cert $CERTS/$agent/svid.pem --key $CERTS/$agent/svid-key.pem"
  fi
  # shellcheck disable=SC2086
  got=$(curl -s -o /tmp/body -w '%{http_code}' --cacert "$CERTS/ca/ca.pem" $identity \
    -X "$method" -H "authorization: Bearer $bearer" "$ENVOY$path")
  if [ "$got" = 200 ]; then
    got_reason=allow
    detail=$(jq -c '.headers | {"x-actguard-subject", "x-actguard-actor", "x-actguard-chain"}' /tmp/body 2>/dev/null)
  elif [ "$got" = 000 ]; then
    got_reason=tls_refused
    detail="(Envoy requires a client certificate)"
  else
    got_reason=$(jq -r .error /tmp/body 2>/dev/null)
    detail=$(jq -r .error_description /tmp/body 2>/dev/null)
  fi
  mark=ok
  if [ "$got" != "$status" ] || [ "$got_reason" != "$reason" ]; then mark=UNEXPECTED; failures=$((failures + 1)); fi
  printf '%-26s %-13s %-5s %-26s -> %s %-26s %s  [%s]\n' "$title" "$agent" "$method" "$path" "$got" "$got_reason" "$detail" "$mark"
done
[ "$failures" = 0 ]; }
