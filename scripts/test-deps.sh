#!/usr/bin/env bash
# What the tests need beyond cargo, installed once and checked:
#  - xmllint (Debian's libxml2-utils), the validator the payment-file test runs;
#  - the official ISO 20022 pain.001.001.03 XSD, as shipped in the sepaxml wheel on PyPI
#    (pinned by hash), extracted to target/test-deps/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v xmllint >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q libxml2-utils >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q libxml2-utils >/dev/null; }
fi

dir=target/test-deps
xsd=$dir/pain.001.001.03.xsd
xsd_sha256=ed4be42522e3e35b108b3ad2ebbcc65da987cddbf6cfdc20828cd4fd0d69c51a
wheel=sepaxml-2.7.0-py3-none-any.whl
wheel_sha256=6644f695c66c2bf8f49065d4d7b0814da42140d03292131ec08e09798ad07b5d
if ! echo "$xsd_sha256  $xsd" | sha256sum -c --status 2>/dev/null; then
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps --dest "$dir" sepaxml==2.7.0
    echo "$wheel_sha256  $dir/$wheel" | sha256sum -c --quiet
    python3 - "$dir/$wheel" "$xsd" <<'PY'
import sys, zipfile
open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("sepaxml/schemas/pain.001.001.03.xsd"))
PY
    echo "$xsd_sha256  $xsd" | sha256sum -c --quiet
fi
