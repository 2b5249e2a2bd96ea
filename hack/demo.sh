#!/usr/bin/env bash
# make demo: Parley on a local Kubernetes cluster (docs/local-cluster.md).
# `make demo` builds bin/ first; this script builds the Kubernetes binaries once per
# machine (cached), makes sure RabbitMQ and PostgreSQL are up, and runs the
# demo until Ctrl-C, which cleans up everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/services.sh
mkdir -p bin
go build -o bin/localcluster ./test/e2e/cmd/localcluster
[[ -x bin/parley ]] || go build -o bin/parley ./cmd/parley

run=(bin/localcluster demo --repo . --bin bin "$@")
if [[ $(id -u) -ne 0 ]]; then
  # The node (containerd, the kubelet) runs in a network namespace of its own.
  echo "demo: the local cluster needs root; running it with sudo" >&2
  exec sudo --preserve-env=PATH,HOME,GOPATH,GOMODCACHE,GOCACHE,PARLEY_TEST_AMQP_URL,PARLEY_TEST_POSTGRES_URL "${run[@]}"
fi
exec "${run[@]}"
