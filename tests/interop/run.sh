#!/usr/bin/env bash
# Interop with the Python MCP SDK (PyPI `mcp`, pinned below), in a venv this script
# creates and reuses ($GATEHOUSE_VENV, default ~/.cache/gatehouse-venv).
#
#   run.sh setup                        create/update the venv
#   run.sh client streamable|sse URL TOKEN
#                                       drive a running gateway with the SDK's client
#   run.sh upstream PORT                serve the SDK's legacy SSE server (an upstream)
#
# The Rust test `cargo test -p gatehouse-tests --test interop` runs all of this
# against a real proxy; it is the way to run it.
set -euo pipefail
MCP_VERSION=2.3.0
VENV="${GATEHOUSE_VENV:-$HOME/.cache/gatehouse-venv}"
here="$(cd "$(dirname "$0")" && pwd)"

setup() {
  mkdir -p "$(dirname "$VENV")"
  # Tests run in parallel: one of them builds the venv, the others wait.
  exec 9>"$VENV.lock"
  flock 9
  if ! "$VENV/bin/python" - "$MCP_VERSION" 2>/dev/null <<'PY'
import importlib.metadata, sys
sys.exit(importlib.metadata.version("mcp") != sys.argv[1])
PY
  then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
  fi
  flock -u 9
}

case "${1:-}" in
  setup) setup ;;
  client) setup; exec "$VENV/bin/python" "$here/client.py" "${@:2}" ;;
  upstream) setup; exec "$VENV/bin/python" "$here/upstream.py" "${@:2}" ;;
  *) echo "usage: $0 setup | client streamable|sse URL TOKEN | upstream PORT" >&2; exit 2 ;;
esac
