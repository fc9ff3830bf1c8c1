#!/usr/bin/env bash
# Installs what building and testing Gatehouse needs beyond the Rust toolchain:
# cmake (pingora's zlib-ng build) and, with --tests, promtool (Debian's `prometheus`
# package), which checks the alert rules, the dashboard's queries and the /metrics
# expositions. Safe to run repeatedly.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# Only promtool is wanted from `prometheus`: skip its recommended node exporter.
lean=()
if [ "${1:-}" = "--tests" ]; then
  command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
fi
if [ ${#missing[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  echo "installing:" "${missing[@]}" "${lean[@]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # The `prometheus` package starts its server on install where it can (init.d when
  # there is no systemd); a CI machine must not be left running one. Deny service
  # starts for this install unless a policy is already in place.
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
