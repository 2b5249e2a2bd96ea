# Parley: the ChatCluster operator and its chat server.
# Tools are built from the Go module proxy into bin/ at pinned versions and reused.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMG     ?= ghcr.io/parley-chat/parley:$(VERSION)
# make image: the archive, and the time every file and the config carry (the
# last commit's, so the same commit and binaries give the same digest).
IMAGE_TAR ?= $(LOCALBIN)/image/parley-$(VERSION).oci.tar
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# make image-push: e.g. IMAGE_PUSH_FLAGS=-insecure for a plain-HTTP registry.
IMAGE_PUSH_FLAGS ?=
LDFLAGS := -s -w -X github.com/parley-chat/parley/chatserver/version.Version=$(VERSION) -X github.com/parley-chat/parley/chatserver/version.Commit=$(COMMIT)

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
# Prometheus's rule tester, for the alerting rules' unit tests (module v0.316.0 is Prometheus 3.16.0).
PROMTOOL_VERSION ?= v0.316.0
K8S_VERSION ?= 1.37.2
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
PROMTOOL ?= $(LOCALBIN)/promtool-$(PROMTOOL_VERSION)

# go test flags; override e.g. `make test TEST_FLAGS='-run Foo -v'`.
TEST_FLAGS ?=
TEST_TIMEOUT ?= 25m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the kubebuilder markers into config/.
	@if [ -d api ]; then \
	  $(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac; \
	  if [ -x hack/sync-chart.sh ]; then hack/sync-chart.sh; fi; \
	fi

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods for the API types.
	@if [ -d api ]; then $(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."; fi

.PHONY: fmt
fmt: ## go fmt both modules.
	go fmt ./...
	cd chatserver && go fmt ./...

# cgo is off for everything but the chat server's -race tests (which need it):
# vet, the tests and `make build` then share one compile of each dependency
# (client-go and the rest compile once on a fresh machine, not once per cgo setting).
.PHONY: vet
vet: ## go vet both modules.
	CGO_ENABLED=0 go vet ./...
	cd chatserver && CGO_ENABLED=0 go vet ./...

.PHONY: services
services: ## Make sure RabbitMQ and PostgreSQL are up (starts them when installed but stopped).
	@hack/services.sh

.PHONY: browser-deps
browser-deps: ## Install Chromium (apt) and the web client's npm packages when missing (real-browser test).
	@hack/browser-deps.sh || echo "browser-deps: could not install; the real-browser test will say why it skips"

.PHONY: web
web: ## Rebuild the web client bundle (chatserver/web/static/app.js) from src/ and npm (centrifuge, esbuild).
	cd chatserver/web && npm ci --no-audit --no-fund && npm run build

.PHONY: envtest
envtest: ## Build (once, cached) kube-apiserver, etcd and kubectl from source; print their directory.
	@hack/control-plane.sh --with-kubectl

.PHONY: test
test: manifests generate fmt vet services helm promtool browser-deps node-deps build ## Unit, envtest, integration and end-to-end tests (chat server with -race; e2e: Parley's image on a real local node).
	@assets=$$(hack/control-plane.sh --with-kcm --with-kubectl --with-node); echo "KUBEBUILDER_ASSETS=$$assets"; \
	 echo "== both modules at once, each line marked: [operator], [chatserver] (-race)"; \
	 ( KUBEBUILDER_ASSETS=$$assets PARLEY_BIN=$(LOCALBIN) CGO_ENABLED=0 go test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./... 2>&1 | sed -u 's/^/[operator] /' ) & op=$$!; \
	 ( cd chatserver && go test -race -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./... 2>&1 | sed -u 's/^/[chatserver] /' ) & cs=$$!; \
	 rc1=0; rc2=0; wait $$op || rc1=$$?; wait $$cs || rc2=$$?; \
	 if [ $$rc1 -ne 0 ] || [ $$rc2 -ne 0 ]; then echo "FAIL: operator module rc=$$rc1, chat server module rc=$$rc2"; exit 1; fi; \
	 echo "PASS: all packages in both modules"

.PHONY: bench
bench: ## Go benchmarks (builders, hub broadcast) and, when present, the side-by-side chatbench.
	go test -run '^$$' -bench . -benchmem ./internal/... 
	cd chatserver && go test -run '^$$' -bench . -benchmem ./...
	@if [ -x hack/bench.sh ]; then hack/bench.sh; fi

.PHONY: bench-quick
bench-quick: ## Two minutes: many small rooms, Parley 2 replicas vs Centrifugo 2 nodes, ratios printed (BENCH_BASE=<rev> adds a baseline build).
	BENCH_QUICK=1 hack/bench.sh

##@ Build

.PHONY: build
build: ## Build the operator and chat server binaries into bin/.
	@mkdir -p $(LOCALBIN)
	@if [ -d cmd/manager ]; then CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/manager ./cmd/manager; fi
	@if [ -d cmd/parley ]; then CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/parley ./cmd/parley; fi
	cd chatserver && for d in cmd/*/; do n=$$(basename $$d); CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/$$n ./cmd/$$n; done

.PHONY: run
run: manifests generate ## Run the operator against the current kubeconfig.
	go run ./cmd/manager

.PHONY: node-deps
node-deps: ## Install the local node's Debian packages (containerd, runc, CNI plugins, iptables, conntrack) when missing.
	@hack/node-deps.sh

.PHONY: demo
demo: build helm node-deps ## Start a local cluster, the operator and a 3-replica ChatCluster; print how to chat.
	@hack/demo.sh

.PHONY: image
image: build ## Build the OCI image without Docker (bin/ on a base from this machine's Debian packages) into IMAGE_TAR.
	go run ./hack/image build -bin $(LOCALBIN) -version $(VERSION) -commit $(COMMIT) -image $(IMG) \
	  -source-date-epoch $(SOURCE_DATE_EPOCH) -out $(IMAGE_TAR)

.PHONY: image-push
image-push: image ## Push IMAGE_TAR to IMG=registry/repo:tag (credentials from ~/.docker/config.json).
	go run ./hack/image push -archive $(IMAGE_TAR) -image $(IMG) $(IMAGE_PUSH_FLAGS)

.PHONY: docker-build
docker-build: ## Build the image (needs a Docker engine; none runs on this machine).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart.
	$(HELM) lint --strict --kube-version $(K8S_VERSION) charts/parley

##@ Tools

# The tools are go.mod's tool directives, built in this module's dependency
# graph with cgo off like everything else here, so the Kubernetes libraries
# they share with the operator compile once. With an empty build cache,
# controller-gen + vet + helm + promtool + the manager took 470 CPU-seconds
# this way against 672 with each tool in its own graph (go install tool@version).
# tool-version fails when go.mod requires another version than the pin.
define tool-version
@v=$$(go list -m -f '{{.Version}}' $(1)); if [ "$$v" != "$(2)" ]; then \
	  echo "go.mod requires $(1) $$v but the Makefile pins $(2): run go get -tool <its command>@$(2), or change the pin"; exit 1; fi
endef

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen into bin/.
$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	$(call tool-version,sigs.k8s.io/controller-tools,$(CONTROLLER_TOOLS_VERSION))
	CGO_ENABLED=0 go build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: promtool
promtool: $(PROMTOOL) ## Build promtool (Prometheus's rule tester) into bin/.
$(PROMTOOL):
	@mkdir -p $(LOCALBIN)
	$(call tool-version,github.com/prometheus/prometheus,$(PROMTOOL_VERSION))
	# remove_all_sd leaves out the service discovery plugins (cloud SDKs): rule tests need none.
	CGO_ENABLED=0 go build -tags remove_all_sd -o $@ -ldflags "-X github.com/prometheus/common/version.Version=$(PROMTOOL_VERSION)" \
	  github.com/prometheus/prometheus/cmd/promtool

.PHONY: helm
helm: $(HELM) ## Build helm into bin/.
$(HELM):
	@mkdir -p $(LOCALBIN)
	# Stamped as helm's own Makefile does, so `helm template` assumes Kubernetes 1.37 (the
	# version helm v3.22.0 is built against) instead of falling back to 1.20.
	$(call tool-version,helm.sh/helm/v3,$(HELM_VERSION))
	CGO_ENABLED=0 go build -o $@ -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" \
	  helm.sh/helm/v3/cmd/helm
