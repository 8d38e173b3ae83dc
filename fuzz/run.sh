#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints executions and findings.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on stable Rust, RUSTC_BOOTSTRAP=1 lets it
# use the nightly flags it needs. Findings land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
export RUSTC_BOOTSTRAP=1
for t in pass_code record_frame requests opendata_csv core_model; do
  echo "== $t (${SECONDS_EACH}s)"
  cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs|ERROR|panicked|SUMMARY" || true
done
