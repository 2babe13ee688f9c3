"""Memory of Artifact.to_graph_module() for a 1 GiB model: extra RSS with copy=True, copy=False, and the pre-1.1
way (clone of mapped views), beside the model size and its largest tensor.

Each measurement runs in a fresh subprocess: load the artifact, read VmRSS, rebuild, read VmRSS again and the
peak (VmHWM, reset just before the rebuild). Modes alternate between rounds; the median of the rounds is printed.

    python3 benchmarks/bench_rebuild.py [--dir build/bench-rebuild] [--rounds 3]

Measured (2 shared cores, torch 2.13 CPU, 50 s in all): model 1,026.8 MiB in 16 tensors, largest 128.3 MiB;
extra RSS after the rebuild (= peak), median of 3: copy=True 1,029.2 MiB (the module's own memory, 2.4 MiB
more than the model), copy=False 1.6 MiB, clone of mapped views (before 1.1) 2,056.0 MiB.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fxlower  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_open import model  # noqa: E402  (the same 8-layer Linear stack: width 5800 is ~1.0 GiB)

MIB = 1 << 20

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import fxlower

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

art = fxlower.load(sys.argv[2])
mode = sys.argv[3]
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
if mode == "clone-of-views":  # what to_graph_module did before 1.1: clone each tensor from the mapping
    kept = [art.tensor(n).clone() for n in art.tensors]
else:
    gm = art.to_graph_module(copy=(mode == "copy=True"))
after = status("VmRSS")
print(json.dumps({"before": before, "after": after, "peak": status("VmHWM")}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(ROOT / "build" / "bench-rebuild"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out = pathlib.Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "1GiB.fxl"
    gm = model(5800)  # 8 * (5800*5800 + 5800) float32s: 1.0 GiB; the largest tensor 128.3 MiB
    fxlower.export(gm, path, overwrite=True)
    sizes = [p.numel() * p.element_size() for p in gm.parameters()]
    del gm
    print(f"model: {sum(sizes) / MIB:,.1f} MiB in {len(sizes)} tensors, largest {max(sizes) / MIB:,.1f} MiB")
    modes = ["copy=True", "copy=False", "clone-of-views"]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else list(reversed(modes))):
            res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path), mode], check=True,
                                 capture_output=True, text=True)
            results[mode].append(json.loads(res.stdout))
    print(f"{'mode':<16}{'RSS before':>12}{'extra after':>14}{'extra peak':>13}   (MiB, median of {args.rounds})")
    for mode in modes:
        rs = results[mode]
        before = statistics.median(x["before"] for x in rs) / MIB
        after = statistics.median(x["after"] - x["before"] for x in rs) / MIB
        peak = statistics.median(x["peak"] - x["before"] for x in rs) / MIB
        print(f"{mode:<16}{before:>12,.1f}{after:>14,.1f}{peak:>13,.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
