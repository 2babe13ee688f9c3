#!/usr/bin/env bash
# Sets up fxlower and runs the main job on the built-in example: trace, lift, export with golden data, load back,
# and print a summary of the artifact.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --cpp
cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build cpp/build -j"${JOBS:-2}" >/dev/null
python3 -m fxlower demo "${1:-build/example.fxl}"
