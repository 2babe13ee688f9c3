#!/usr/bin/env bash
# Installs what fxlower needs on a fresh Debian machine: the CPU build of torch (pinned first, so that no multi-GB
# CUDA build is pulled), the package with its test extras (selenium among them), Debian's chromium and
# chromium-driver (the viewer tests drive a headless browser), and with --cpp the Debian packages of the C++ side.
# Usage: scripts/setup.sh [--cpp]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e '.[test]'

pkgs=(chromium chromium-driver)
if [ "${1:-}" = "--cpp" ]; then
  pkgs+=(libmsgpack-cxx-dev nlohmann-json3-dev libopenblas-dev cmake g++)
fi
need=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
