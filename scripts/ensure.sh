#!/usr/bin/env bash
# Installs what outbox-relay needs and is missing, unattended: the Debian libraries the Kafka
# client builds against, node modules (the native Kafka client is built from source with
# dynamic linking), and the Kafka broker jars. Safe to run any number of times.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { echo "[ensure] $*" >&2; }

# chromium: the dashboard's browser test (Debian's build, driven by playwright-core).
apt_packages=(zlib1g-dev libssl-dev libzstd-dev libcurl4-openssl-dev libsasl2-dev liblz4-dev build-essential python3 chromium)
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
fi
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    log "missing system packages: ${missing[*]} (install them as root)"; exit 1
  fi
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  log "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >&2
fi

binding=node_modules/@confluentinc/kafka-javascript/build/Release/confluent-kafka-javascript.node
if [[ ! -f "$binding" || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing node modules (builds the Kafka client's librdkafka, about a minute)"
  CKJS_LINKING=dynamic npm_config_build_from_source=true npm ci --no-audit --no-fund >&2
fi

bash scripts/kafka-broker.sh fetch
