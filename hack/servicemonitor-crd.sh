#!/usr/bin/env bash
# Generates the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs
# (monitoring.coreos.com/v1) from its published API types with controller-gen,
# for tests that must apply a ServiceMonitor or PrometheusRule to a real API server. (The operator's own repository, which
# ships the CRD YAML, is not served by the Go module proxy; its API module is.)
# Cached by version; prints the directory holding the CRD on stdout.
#
#   hack/servicemonitor-crd.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.95.2}"
CACHE="${PARLEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
DIR="$CACHE/prometheus-operator/$PROM_OPERATOR_VERSION"
CONTROLLER_GEN="${CONTROLLER_GEN:-$PWD/bin/controller-gen-$(sed -n 's/^CONTROLLER_TOOLS_VERSION ?= //p' Makefile)}"
CRD=monitoring.coreos.com_servicemonitors.yaml
RULE_CRD=monitoring.coreos.com_prometheusrules.yaml

log() { echo "servicemonitor-crd: $*" >&2; }
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

if [[ ! -s "$DIR/$CRD" || ! -s "$DIR/$RULE_CRD" ]]; then
  [[ -x "$CONTROLLER_GEN" ]] || { log "controller-gen not found at $CONTROLLER_GEN: run \`make controller-gen\`"; exit 1; }
  src=$(go mod download -json "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring@$PROM_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -n "$src" ]] || { log "cannot download the Prometheus Operator API module $PROM_OPERATOR_VERSION"; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  log "generating $CRD and $RULE_CRD from the Prometheus Operator $PROM_OPERATOR_VERSION API types"
  (cd "$work" && GOFLAGS=-mod=mod "$CONTROLLER_GEN" crd:crdVersions=v1 paths=./v1 output:crd:artifacts:config="$work/out")
  for f in "$RULE_CRD" "$CRD"; do # the ServiceMonitor last: its presence marks the cache complete for older copies of this script
    cp "$work/out/$f" "$DIR/$f.tmp"
    mv "$DIR/$f.tmp" "$DIR/$f"
  done
fi
echo "$DIR"
