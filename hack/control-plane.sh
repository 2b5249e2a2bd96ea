#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries envtest and the local cluster need
# (kube-apiserver, etcd, optionally kube-controller-manager and kubectl) from
# their Go module sources, because setup-envtest's download cannot reach the
# internet here.
# Cached by version outside the clone, so every clone on the machine reuses them.
# Prints the asset directory on stdout; progress goes to stderr.
#
#   hack/control-plane.sh                 # kube-apiserver + etcd
#   hack/control-plane.sh --with-kcm      # also kube-controller-manager
#   hack/control-plane.sh --with-kubectl  # also kubectl (options combine)
#   hack/control-plane.sh --with-node     # also the node and its add-ons: kubelet, kube-proxy,
#                                         # kube-scheduler, CoreDNS, metrics-server (test/e2e/cluster)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
COREDNS_VERSION="${COREDNS_VERSION:-1.15.0}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-0.8.0}"
CACHE="${PARLEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
DIR="$CACHE/k8s/$K8S_VERSION"
WITH_KCM=0
WITH_KUBECTL=0
WITH_NODE=0

log() { echo "control-plane: $*" >&2; }
for arg in "$@"; do
  case "$arg" in
    --with-kcm) WITH_KCM=1 ;;
    --with-kubectl) WITH_KUBECTL=1 ;;
    --with-node) WITH_NODE=1 ;;
    *) log "unknown option $arg (options: --with-kcm, --with-kubectl, --with-node)"; exit 2 ;;
  esac
done
mkdir -p "$DIR"

# One builder at a time per cache: parallel `make test` runs must not race.
exec 9>"$DIR/.lock"
flock 9

prepare_kubernetes() {
  local src
  src=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -n "$src" ]] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION from the Go module proxy"; exit 1; }
  WORK=$(mktemp -d "$CACHE/k8s-src.XXXXXX")
  cp -r "$src/." "$WORK/"
  chmod -R u+w "$WORK"
  rm -rf "$WORK/vendor" "$WORK/go.work" "$WORK/go.work.sum"
  # Staging modules are published as v0.<minor>.<patch>; the monorepo pins them as v0.0.0 + replace.
  sed -i -e '/^replace (/,/^)/d' -e "s#^\(\s*k8s.io/[a-z0-9-]*\) v0.0.0\$#\1 v0.${K8S_VERSION#1.}#" "$WORK/go.mod"
}

# Builds the missing Kubernetes programs of "$@" in one `go build`: their
# shared packages compile once and one program links while others compile.
build_k8s_binaries() {
  local missing=() pkgs=() name
  for name in "$@"; do [[ -x "$DIR/$name" ]] || missing+=("$name"); done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  [[ -n "${WORK:-}" ]] || prepare_kubernetes
  log "building ${missing[*]} v$K8S_VERSION from source (several minutes, once per machine)"
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for name in "${missing[@]}"; do
    if [[ $name == metrics-server ]]; then
      # metrics-server pins an older k8s.io/* (v0.33 for v0.8.0); required
      # here it compiles against this release's libraries, which the
      # programs beside it compile anyway (≈ 4 min less on a fresh machine
      # than building it in a module of its own).
      (cd "$WORK" && GOFLAGS=-mod=mod go get "sigs.k8s.io/metrics-server@v$METRICS_SERVER_VERSION" >&2) \
        || { log "cannot add sigs.k8s.io/metrics-server@v$METRICS_SERVER_VERSION to the Kubernetes module"; exit 1; }
      pkgs+=("sigs.k8s.io/metrics-server/cmd/metrics-server")
    else
      pkgs+=("./cmd/$name")
    fi
  done
  OUT=$(mktemp -d "$DIR/.out.XXXXXX")
  local out=$OUT
  (cd "$WORK" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags "$ld" -o "$out/" "${pkgs[@]}")
  for name in "${missing[@]}"; do mv "$out/$name" "$DIR/$name"; done
  rmdir "$out"; OUT=
  log "built ${missing[*]}"
}

build_etcd() {
  [[ -x "$DIR/etcd" ]] && return 0
  log "building etcd v$ETCD_VERSION from source"
  local src w
  src=$(go mod download -json "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -n "$src" ]] || { log "cannot download go.etcd.io/etcd/server/v3@v$ETCD_VERSION"; exit 1; }
  w=$(mktemp -d "$CACHE/etcd-src.XXXXXX")
  cp -r "$src/." "$w/"
  chmod -R u+w "$w"
  sed -i -e '/^replace (/,/^)/d' -e '/^replace /d' "$w/go.mod"
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    (cd "$w" && go mod edit -require="go.etcd.io/etcd/$m@v$ETCD_VERSION")
  done
  (cd "$w" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags "-s -w" -o "$DIR/etcd.tmp" .)
  mv "$DIR/etcd.tmp" "$DIR/etcd"
  rm -rf "$w"
}

# CoreDNS with only the plugins a cluster's DNS uses (as CoreDNS documents
# for custom builds): the full program links every cloud provider's SDK.
build_coredns() {
  [[ -x "$DIR/coredns" ]] && return 0
  log "building CoreDNS v$COREDNS_VERSION (kubernetes, forward, cache, health, ready, ... plugins)"
  local w
  w=$(mktemp -d "$CACHE/coredns-src.XXXXXX")
  local plugins="errors log health ready kubernetes loadbalance cache loop reload forward hosts"
  {
    echo "// Code generated by hack/control-plane.sh. DO NOT EDIT."
    echo "package main"
    echo
    echo "import ("
    echo '	"github.com/coredns/coredns/core/dnsserver"'
    echo '	"github.com/coredns/coredns/coremain"'
    for p in $plugins; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ")"
    echo
    echo "func init() {"
    echo "	// The order CoreDNS runs them in (its plugin.cfg), restricted to these."
    echo "	dnsserver.Directives = []string{\"reload\", \"health\", \"ready\", \"errors\", \"log\", \"loadbalance\", \"cache\", \"hosts\", \"kubernetes\", \"loop\", \"forward\"}"
    echo "}"
    echo
    echo "func main() { coremain.Run() }"
  } > "$w/main.go"
  (cd "$w" && go mod init parley.local/coredns >/dev/null 2>&1 \
    && GOFLAGS=-mod=mod go get "github.com/coredns/coredns@v$COREDNS_VERSION" >/dev/null \
    && GOFLAGS=-mod=mod go mod tidy >/dev/null \
    && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags "-s -w" -o "$DIR/coredns.tmp" .)
  mv "$DIR/coredns.tmp" "$DIR/coredns"
  rm -rf "$w"
}

cleanup() {
  [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
  [[ -n "${OUT:-}" ]] && rm -rf "$OUT"
  true
}
trap cleanup EXIT

programs=(kube-apiserver)
if [[ $WITH_KCM == 1 ]]; then programs+=(kube-controller-manager); fi
if [[ $WITH_KUBECTL == 1 ]]; then programs+=(kubectl); fi
if [[ $WITH_NODE == 1 ]]; then programs+=(kubelet kube-proxy kube-scheduler metrics-server); fi

# etcd and CoreDNS are separate modules with their own dependency versions:
# they build beside the Kubernetes programs, so their downloads and links
# overlap its compiles.
others() {
  build_etcd
  if [[ $WITH_NODE == 1 ]]; then build_coredns; fi
}
others &
others_pid=$!
# On any failure below (set -e), let the other builds stop first.
trap 'wait; cleanup' EXIT
build_k8s_binaries "${programs[@]}"
wait "$others_pid" || { log "building etcd or the add-ons failed"; exit 1; }
echo "$DIR"
