#!/usr/bin/env bash
# Runs every fuzz target of the protocol core (proxy/core/fuzz) for a bounded time,
# from its checked-in corpus and seeds (copied: the tree is not changed), on the
# stable toolchain without a sanitizer (see proxy/core/fuzz/README.md for why). A
# crash fails the run and leaves its input under proxy/core/fuzz/artifacts/<target>/.
#   FUZZ_SECONDS  seconds per target (default 20)
set -euo pipefail
cd "$(dirname "$0")/../proxy/core"
seconds="${FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# Its own cache: the fuzz build is a release build with coverage instrumentation,
# which shares nothing with the workspace's.
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/gatehouse-fuzz-target}"
cargo fuzz build -s none --target-dir "$target_dir"
for target in $(cargo fuzz list); do
  corpus="$(mktemp -d)"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -r "fuzz/corpus/$target/." "$corpus/"
  fi
  log="$(mktemp)"
  echo "fuzz: $target for ${seconds}s"
  rc=0
  cargo fuzz run -s none --target-dir "$target_dir" "$target" "$corpus" "fuzz/seeds/$target" \
    -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|Done|SUMMARY)|panicked' "$log" || true
  if [ "$rc" != 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $rc); its input is under proxy/core/fuzz/artifacts/$target/" >&2
    exit "$rc"
  fi
  rm -rf "$corpus" "$log"
done
