#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints executions and findings.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on stable Rust, RUSTC_BOOTSTRAP=1 lets it
# use the nightly flags it needs. Findings land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
export RUSTC_BOOTSTRAP=1
# Without cargo-fuzz every run below would print nothing and look like a clean pass.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi
failed=0
for t in pass_code record_frame requests opendata_csv device_export core_model; do
  echo "== $t (${SECONDS_EACH}s)"
  # Seeds (committed) start the corpus (not committed) where a target needs a valid shape.
  if [ -d "seeds/$t" ]; then
    mkdir -p "corpus/$t"
    for seed in "seeds/$t"/*; do
      [ -e "corpus/$t/${seed##*/}" ] || cp "$seed" "corpus/$t/"
    done
  fi
  # A target that does not build, or finds a crash, ends the run non-zero: its tail is shown
  # and the script fails, instead of a filtered silence.
  if out=$(cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1); then
    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" <<<"$out" || true
  else
    tail -n 40 <<<"$out"
    failed=1
  fi
done
exit "$failed"
