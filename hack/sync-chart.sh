#!/usr/bin/env bash
# Brings the Helm chart in line with `make manifests` output, so the chart and
# the kustomize bundle install the same CRDs with the same permissions:
#   config/crd/bases/*.yaml  -> charts/parley/files/crds/ (verbatim copies)
#   config/rbac/role.yaml    -> charts/parley/templates/_rbac_rules.tpl (hack/chartrbac)
#   internal/alerts/operator.rules.yaml -> charts/parley/files/alerts/ (verbatim)
# Called by `make manifests`; test/install fails when the chart has drifted.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/parley
log() { echo "sync-chart: $*" >&2; }

shopt -s nullglob
crds=(config/crd/bases/*.yaml)
if [[ ${#crds[@]} -gt 0 ]]; then
  mkdir -p "$chart/files/crds"
  # Remove copies of CRDs that no longer exist, then copy the current ones.
  for f in "$chart"/files/crds/*.yaml; do
    [[ -f "config/crd/bases/$(basename "$f")" ]] || { rm -f "$f"; log "removed stale $(basename "$f")"; }
  done
  cp "${crds[@]}" "$chart/files/crds/"
  log "copied ${#crds[@]} CRD(s) into $chart/files/crds"
else
  # While api/ has no types yet; test/install fails until the chart has CRDs.
  log "WARNING: no CRDs in config/crd/bases yet; the chart's CRDs are unchanged"
fi

# The operator's alerting rules: one source (internal/alerts, promtool-tested).
mkdir -p "$chart/files/alerts"
cp internal/alerts/operator.rules.yaml "$chart/files/alerts/operator.rules.yaml"
log "copied the operator's alerting rules into $chart/files/alerts"

if [[ -f config/rbac/role.yaml ]]; then
  go run ./hack/chartrbac -in config/rbac/role.yaml -out "$chart/templates/_rbac_rules.tpl"
  log "generated $chart/templates/_rbac_rules.tpl from config/rbac/role.yaml"
else
  # While controllers/ has no RBAC markers yet; test/install fails until it does.
  log "WARNING: config/rbac/role.yaml does not exist yet; the chart's RBAC rules are unchanged"
fi
