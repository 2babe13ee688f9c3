"""Opening an artifact costs the same whatever the size of its weights: 1 MB vs 1 GB, C++ and Python.

Both readers map the tensor files and validate only the manifest and the safetensors headers at open, so the
time depends on the number of tensors and nodes, not on bytes. The two models here have the same graph (8 Linear
layers) and differ only in width. Prints the median open time of each, alternating the two artifacts.

    python3 benchmarks/bench_open.py [--dir build/bench-open] [--rounds 7]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fxlower  # noqa: E402


def model(width: int) -> torch.fx.GraphModule:
    layers = []
    for _ in range(8):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return torch.fx.symbolic_trace(nn.Sequential(*layers))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(ROOT / "build" / "bench-open"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    out = pathlib.Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    # 8 layers of width w hold 8 * (w*w + w) float32s: w=128 -> 0.5 MiB... w=5800 -> ~1.0 GiB
    sizes = {"1 MB": 180, "1 GB": 5800}
    paths = {}
    for label, width in sizes.items():
        path = out / label.replace(" ", "")
        torch.manual_seed(0)
        s = fxlower.export(model(width), path, overwrite=True)
        paths[label] = path
        print(f"{label}: {s.bytes_written / 1e6:,.1f} MB written, {s.tensors} tensors, {s.nodes} nodes")
    exe = out / "bench_open"
    subprocess.run(["g++", "-O2", "-std=c++17", "-DMSGPACK_NO_BOOST", f"-I{ROOT / 'cpp' / 'include'}",
                    str(ROOT / "benchmarks" / "bench_open.cpp"), "-o", str(exe)], check=True)
    cpp: dict[str, list[float]] = {k: [] for k in paths}
    py: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for label in order:
            res = subprocess.run([str(exe), str(paths[label]), "20"], check=True, capture_output=True, text=True)
            cpp[label].append(float(res.stdout.split()[0]))
            t0 = time.perf_counter()
            fxlower.load(paths[label]).close()
            py[label].append((time.perf_counter() - t0) * 1e6)
    print(f"\n{'artifact':<8} {'C++ load (us)':>14} {'Python load (us)':>17}")
    for label in paths:
        print(f"{label:<8} {statistics.median(cpp[label]):>14.0f} {statistics.median(py[label]):>17.0f}")
    ratio_c = statistics.median(a / b for a, b in zip(cpp["1 GB"], cpp["1 MB"]))
    ratio_p = statistics.median(a / b for a, b in zip(py["1 GB"], py["1 MB"]))
    print(f"\nmedian ratio 1 GB / 1 MB: C++ {ratio_c:.2f}, Python {ratio_p:.2f} (aim: about 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
