#!/usr/bin/env bash
# Sets up everything and runs every test: the C++ build and its CTest suite (plain and under ASan/UBSan),
# then the Python suite (which also drives the C++ tools).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --cpp
JOBS=${JOBS:-2}

cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build cpp/build -j"$JOBS"
ctest --test-dir cpp/build --output-on-failure

cmake -S cpp -B cpp/build-asan -DCMAKE_BUILD_TYPE=Debug -DFXLOWER_SANITIZE=ON >/dev/null
cmake --build cpp/build-asan -j"$JOBS"
ctest --test-dir cpp/build-asan --output-on-failure

python3 -m pytest -q
