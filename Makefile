# imagegate — run `make help` for the targets.
SHELL := bash
.DEFAULT_GOAL := help

GO        ?= go
BIN       ?= bin/imagegate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/imagegate/imagegate/pkg/version.Version=$(VERSION) -X github.com/imagegate/imagegate/pkg/version.Commit=$(COMMIT)
CERT_DIR  ?= _output/certs
LISTEN    ?= 127.0.0.1:8443
REGISTRY_WHITELIST ?= registry.my.com
FUZZTIME  ?= 10s
IMAGE     ?= imagegate:$(VERSION)
BENCH     ?= .
BENCH_COUNT ?= 1

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build a static, stripped binary into bin/imagegate.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/imagegate

.PHONY: test
test: ## Run every unit, handler and golden test with the race detector.
	$(GO) test -race -count=1 ./...

.PHONY: run
run: build ## Serve on 127.0.0.1:8443 with a throwaway certificate and REGISTRY_WHITELIST=registry.my.com.
	hack/gen-certs.sh $(CERT_DIR)
	$(BIN) serve --listen $(LISTEN) --tls-cert-file $(CERT_DIR)/tls.crt --tls-key-file $(CERT_DIR)/tls.key \
		--registry-whitelist '$(REGISTRY_WHITELIST)'

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 10s) each.
	hack/fuzz.sh $(FUZZTIME)

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint (built once from the module proxy by hack/install-golangci-lint.sh).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$$(hack/install-golangci-lint.sh) run ./...

.PHONY: bench
bench: ## Run the Go benchmarks with allocation counts (BENCH=regexp, BENCH_COUNT=n).
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCH_COUNT) ./...

.PHONY: benchstat
benchstat: ## Run the benchmarks 6 times, save under _output/bench and compare with the last run (benchstat).
	hack/benchstat.sh

.PHONY: loadtest
loadtest: ## Load test imagegate and a do-nothing floor over TLS on loopback with vegeta; prints one table.
	hack/bench.sh

.PHONY: stress
stress: build ## Hostile load (huge and held bodies, idle HTTP/2, an alias bomb) against bin/imagegate; one table (STRESS_ARGS=-short).
	$(GO) run ./hack/stress -binary $(BIN) $(STRESS_ARGS)

.PHONY: e2e
e2e: ## End-to-end tests against a real kube-apiserver (builds it once, cached in ~/.cache/imagegate).
	hack/e2e.sh

.PHONY: helm
helm: ## helm lint and helm template of config/helm/imagegate, and check config/ is what it renders (hack/render-config.sh --check).
	$$(hack/install-helm.sh) lint --strict config/helm/imagegate
	$$(hack/install-helm.sh) template imagegate config/helm/imagegate --namespace imagegate >/dev/null
	hack/render-config.sh --check

.PHONY: render
render: ## Rewrite config/'s kustomize files from the Helm chart (hack/render-config.sh).
	hack/render-config.sh

.PHONY: image
image: ## Build the container image (needs a Docker engine; nothing else does).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

.PHONY: clean
clean: ## Remove build output and throwaway certificates.
	rm -rf bin _output
