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
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
CACHE="${PARLEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
DIR="$CACHE/k8s/$K8S_VERSION"
WITH_KCM=0
WITH_KUBECTL=0

log() { echo "control-plane: $*" >&2; }
for arg in "$@"; do
  case "$arg" in
    --with-kcm) WITH_KCM=1 ;;
    --with-kubectl) WITH_KUBECTL=1 ;;
    *) log "unknown option $arg (options: --with-kcm, --with-kubectl)"; exit 2 ;;
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

build_k8s_binary() {
  local name=$1
  [[ -x "$DIR/$name" ]] && return 0
  [[ -n "${WORK:-}" ]] || prepare_kubernetes
  log "building $name v$K8S_VERSION from source (several minutes, once per machine)"
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$WORK" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags "$ld" -o "$DIR/$name.tmp" "./cmd/$name")
  mv "$DIR/$name.tmp" "$DIR/$name"
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

cleanup() { [[ -n "${WORK:-}" ]] && rm -rf "$WORK"; true; }
trap cleanup EXIT

build_etcd
build_k8s_binary kube-apiserver
if [[ $WITH_KCM == 1 ]]; then build_k8s_binary kube-controller-manager; fi
if [[ $WITH_KUBECTL == 1 ]]; then build_k8s_binary kubectl; fi
echo "$DIR"
