#!/usr/bin/env bash
# Download, here (with network), the wheels that benchmarks/gpu_check.sh installs on the GPU machine (no network
# there). That machine has Python 3.12 with torch, numpy, scipy, scikit-learn, matplotlib, jinja2, click, tqdm,
# pytest, hypothesis and requests; these are redrep's other dependencies (submitit, mnist1d), those of its test
# and lint extras (import-linter, selenium), pooch and platformdirs, and whatever of theirs that machine lacks.
#
#     bash benchmarks/gpu_wheels.sh          # -> .whl/ (ignored by git), one version of each, for CPython 3.12
#
# pip downloads without their dependencies (--no-deps): every wheel needed is named below, once. The versions
# are those the test extras of this checkout were tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
WHEELS=(
    submitit==1.5.4 mnist1d==0.0.2.post1 pooch==1.9.0 platformdirs==4.14.9
    import-linter==2.17 grimp==3.20
    selenium==4.51.0 trio==0.35.0 trio-websocket==0.12.2 outcome==1.3.0.post0 sniffio==1.3.1 wsproto==1.3.2
    websocket-client==1.9.2 pysocks==1.7.1
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: an older wheel beside a newer one stops the install there
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "${WHEELS[@]}"
ls -1 "$DEST"
du -sh "$DEST"
