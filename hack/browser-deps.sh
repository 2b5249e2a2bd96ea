#!/usr/bin/env bash
# Installs what the web client's real-browser test needs, when missing:
# Debian's chromium (apt) and the web client's npm packages (playwright-core,
# esbuild, centrifuge) from chatserver/web/package-lock.json.
# Idempotent and quiet when everything is there. Exit 0 when ready.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "browser-deps: $*" >&2; }

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    log "ERROR: /usr/bin/chromium is missing and installing it needs root (apt-get install chromium)"; exit 1
  fi
  SUDO=; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
  log "installing chromium (Debian package) ..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  log "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm (Debian packages) ..."
  SUDO=; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

web=chatserver/web
if [[ ! -f $web/node_modules/playwright-core/package.json || $web/package-lock.json -nt $web/node_modules/.package-lock.json ]]; then
  log "npm ci in $web ..."
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
fi
