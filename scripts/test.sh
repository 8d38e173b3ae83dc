#!/usr/bin/env bash
# The README's test command: installs what the tests need beyond cargo (scripts/test-deps.sh)
# and runs every test. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
exec cargo test --locked "$@"
