#!/usr/bin/env bash
# Side-by-side benchmarks of Parley and Centrifugo (run by `make bench`).
#
# Builds Centrifugo v6.9.1 from the Go module proxy into bin/ (once, cached),
# Parley's chat server (with symbols, for CPU profiles) and chatbench, checks
# the shared services, then runs every scenario interleaved against
#   parley-2r      Parley, 2 replicas, RabbitMQ + PostgreSQL
#   centrifugo-2n  Centrifugo, 2 nodes, Redis engine
#   parley-1       Parley, 1 node, in-memory
#   centrifugo-1   Centrifugo, 1 node, memory engine
# and rewrites docs/benchmarks.md (keeping its analysis section) and
# docs/benchmarks-latency.png. Raw results, server logs and pprof profiles go
# to artifacts/bench/<run>/. The operator-at-scale benchmark (test/scale) runs
# first and its results join the same report.
#
# Environment:
#   BENCH_QUICK=1 the 2-minute quick mode (`make bench-quick`): only the
#                 many-rooms scenario, 500 rooms of 10 at 500 to 2000 pub/s,
#                 Parley 2 replicas against Centrifugo 2 nodes; prints its
#                 tables and leaves docs/ alone
#   BENCH_BASE    a git revision: also run Parley built from it (target
#                 parley-2r-base), for before/after figures in the same run
#   BENCH_BASE_EXCHANGE  the baseline's publication exchange kind: topic (the
#                 default, as operators declared it before the direct exchange)
#                 or direct (a baseline of the current topology)
#   BENCH_FLAGS   extra `chatbench suite` flags, e.g. "-scale 0.2 -quick" for a
#                 smoke run or "-targets parley-1,centrifugo-1 -scenarios fanout"
#   BENCH_DOC     report path (default docs/benchmarks.md; empty string: no report)
#   BENCH_SKIP_SCALE=1  skip the operator-at-scale benchmark (test/scale)
#   PARLEY_SCALE_CLUSTERS  ChatClusters in it (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=bin # relative, so the report shows commands anyone can paste
CENTRIFUGO_VERSION=v6.9.1
CENTRIFUGO=$BIN/centrifugo-$CENTRIFUGO_VERSION
log() { echo "bench: $*" >&2; }
mkdir -p "$BIN"

if [[ ! -x $CENTRIFUGO ]]; then
  log "building Centrifugo $CENTRIFUGO_VERSION from the Go module proxy (once; a few minutes)"
  tmp=$(mktemp -d)
  CGO_ENABLED=0 GOBIN=$tmp go install \
    -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=${CENTRIFUGO_VERSION#v}" \
    "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
  mv "$tmp/centrifugo" "$CENTRIFUGO"
  rmdir "$tmp"
fi
"$CENTRIFUGO" version >&2

log "building Parley's chat server and chatbench"
(cd chatserver && CGO_ENABLED=0 go build -o "../$BIN/chatserver-bench" ./cmd/chatserver \
  && CGO_ENABLED=0 go build -o "../$BIN/chatbench" ./cmd/chatbench)

targets=parley-2r,centrifugo-2n,parley-1,centrifugo-1
mode_flags=()
if [[ -n ${BENCH_QUICK:-} ]]; then
  targets=parley-2r,centrifugo-2n
  mode_flags=(-scenarios chat -chat-rooms 500 -chat-rates 500,1000,1500,2000 -chat-warmup 2s -chat-window 6s)
  BENCH_SKIP_SCALE=1
  BENCH_DOC=${BENCH_DOC-}
fi
if [[ -n ${BENCH_BASE:-} ]]; then
  log "building the baseline chat server from $BENCH_BASE"
  rev=$(git rev-parse --verify "$BENCH_BASE^{commit}")
  tmp=$(mktemp -d)
  git worktree add -q --detach "$tmp/src" "$rev"
  (cd "$tmp/src/chatserver" && CGO_ENABLED=0 go build -o "$ROOT/$BIN/chatserver-base" ./cmd/chatserver) || { git worktree remove --force "$tmp/src"; exit 1; }
  git worktree remove --force "$tmp/src"
  rmdir "$tmp"
  targets=$targets,parley-2r-base
  mode_flags+=(-parley-base "$BIN/chatserver-base" -parley-base-exchange "${BENCH_BASE_EXCHANGE:-topic}")
fi

hack/services.sh
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  log "ERROR: Redis is not listening on 127.0.0.1:6379 (Centrifugo's 2-node setup needs it; apt-get install redis-server)"
  exit 1
fi

run=$(date -u +%Y%m%dt%H%M%S)
out=artifacts/bench/$run
mkdir -p "$out"
doc=${BENCH_DOC-docs/benchmarks.md}
mkdir -p docs

# The operator first: it needs the machine to itself as much as the chat
# servers do, and its results go into the same report.
op_flags=()
if [[ -z ${BENCH_SKIP_SCALE:-} && -d test/scale ]]; then
  log "operator at scale (test/scale, ${PARLEY_SCALE_CLUSTERS:-1000} ChatClusters)"
  assets=$(hack/control-plane.sh)
  if KUBEBUILDER_ASSETS=$assets PARLEY_SCALE_OUT=$ROOT/$out go test -count=1 -timeout 30m -run '^$' -bench . -benchtime 1x ./test/scale/ \
      2>&1 | tee "$out/operator-scale.txt"; then
    op_flags=(-operator-scale "$out/operator-scale.json")
  else
    log "operator at scale FAILED (see $out/operator-scale.txt); going on with the chat servers"
    rc=1
  fi
fi

log "running the chat scenarios; output in $out"
plot=""
[[ -n $doc ]] && plot=docs/benchmarks-latency.png
# shellcheck disable=SC2086
"$BIN/chatbench" suite -parley "$BIN/chatserver-bench" -centrifugo "$CENTRIFUGO" -out "$out" \
  -doc "$doc" -plot "$plot" -revision "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  -targets "$targets" "${mode_flags[@]}" "${op_flags[@]}" ${BENCH_FLAGS:-} \
  > "$out/report.md" 2> >(tee "$out/chatbench.log" >&2) || rc=$?
if [[ -n ${BENCH_QUICK:-} ]]; then
  # The many-rooms section, up to the next top-level section.
  awk '/^## Many small rooms/{on=1} on && /^## / && !/^## Many small rooms/{exit} on' "$out/report.md"
fi
log "report: ${doc:-$out/report.md}; results: $out/results.json"
exit "${rc:-0}"
