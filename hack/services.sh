#!/usr/bin/env bash
# Makes sure the services Parley's tests talk to are up: RabbitMQ and PostgreSQL.
# A service that is installed but stopped is started; one that is missing fails
# with what to install or which URL to set. Tests that use other URLs
# (PARLEY_TEST_AMQP_URL, PARLEY_TEST_POSTGRES_URL) skip the local checks for that service.
set -euo pipefail

log() { echo "services: $*" >&2; }
fail() { echo "services: ERROR: $*" >&2; exit 1; }

# wait_port HOST PORT SECONDS
wait_port() {
  local host=$1 port=$2 deadline=$((SECONDS + $3))
  while (( SECONDS < deadline )); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

check_postgres() {
  if [[ -n "${PARLEY_TEST_POSTGRES_URL:-}" ]]; then
    log "PostgreSQL: using PARLEY_TEST_POSTGRES_URL"; return 0
  fi
  if wait_port 127.0.0.1 5432 1; then log "PostgreSQL: up on 127.0.0.1:5432"; return 0; fi
  if ! command -v pg_ctlcluster >/dev/null || [[ ! -d /etc/postgresql ]]; then
    fail "PostgreSQL is not running on 127.0.0.1:5432 and is not installed.
  Install it (Debian: apt-get install postgresql, trust auth for 127.0.0.1) or set
  PARLEY_TEST_POSTGRES_URL=postgres://user@host:5432/postgres?sslmode=disable"
  fi
  log "PostgreSQL: installed but stopped, starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port 127.0.0.1 5432 60 || fail "PostgreSQL did not start listening on 127.0.0.1:5432 within 60s"
  log "PostgreSQL: started"
}

check_rabbitmq() {
  if [[ -n "${PARLEY_TEST_AMQP_URL:-}" ]]; then
    log "RabbitMQ: using PARLEY_TEST_AMQP_URL"; return 0
  fi
  if wait_port 127.0.0.1 5672 1; then log "RabbitMQ: up on 127.0.0.1:5672"; return 0; fi
  if ! command -v rabbitmq-server >/dev/null; then
    fail "RabbitMQ is not running on 127.0.0.1:5672 and is not installed.
  Install it (Debian: apt-get install rabbitmq-server) or set
  PARLEY_TEST_AMQP_URL=amqp://user:pass@host:5672/"
  fi
  log "RabbitMQ: installed but stopped, starting it"
  rabbitmq-server -detached || true
  wait_port 127.0.0.1 5672 120 || fail "RabbitMQ did not start listening on 127.0.0.1:5672 within 120s"
  log "RabbitMQ: started"
}

# The operator manages each ChatCluster's vhost, user and permissions through
# RabbitMQ's management API (the rabbitmq_management plugin ships with the
# server and is enabled here when it is off).
check_rabbitmq_management() {
  if [[ -n "${PARLEY_TEST_AMQP_MANAGEMENT_URL:-}" ]]; then
    log "RabbitMQ management: using PARLEY_TEST_AMQP_MANAGEMENT_URL"; return 0
  fi
  if wait_port 127.0.0.1 15672 1; then log "RabbitMQ management: up on 127.0.0.1:15672"; return 0; fi
  if [[ -n "${PARLEY_TEST_AMQP_URL:-}" ]] || ! command -v rabbitmq-plugins >/dev/null; then
    fail "the RabbitMQ management API is not listening on 127.0.0.1:15672.
  Enable it (rabbitmq-plugins enable rabbitmq_management) or set
  PARLEY_TEST_AMQP_MANAGEMENT_URL=http://user:pass@host:15672"
  fi
  log "RabbitMQ management: enabling the rabbitmq_management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null || fail "rabbitmq-plugins enable rabbitmq_management failed"
  wait_port 127.0.0.1 15672 60 || fail "the RabbitMQ management API did not start listening on 127.0.0.1:15672 within 60s"
  log "RabbitMQ management: enabled"
}

check_postgres
check_rabbitmq
check_rabbitmq_management
