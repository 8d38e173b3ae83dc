#!/usr/bin/env bash
# Long crash runs: N kill/restart cycles of the crash harness (tests/crash.rs), in release.
# Usage: scripts/crash-cycles.sh [CYCLES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
CRASH_CYCLES="${1:-200}" CRASH_SEED="${2:-$(date +%s)}" \
  cargo test --release --test crash -- --nocapture
