"""Benchmark of fxlower-run (the C++ reference runtime) against PyTorch eager on the CPU. Prints figures; asserts
nothing (but a model whose fxlower-run --check fails is reported as such).

Models (bigger than the test zoo's, so that times mean something):

* resnet18: the zoo's ResNet-18 shape with real ResNet-18 widths (64, 128, 256, 512), 1000 classes, one
  1x3x224x224 image.
* gpt: the zoo's GPT block stack at sequence 256, width 256, 4 heads, 4 layers, vocabulary 1024, with
  F.scaled_dot_product_attention (``--gpt-masked`` adds the masked-softmax variant).

Both sides run at the same thread count (``torch.set_num_threads`` and ``fxlower-run --threads``). PyTorch is
timed in-process under ``torch.no_grad()`` after warm-up runs; fxlower-run times its own executions
(``--repeat``, load excluded, one warm-up run). Each figure is the median of ``--repeat`` runs; rounds alternate
which side runs first, and the reported ratio is the median of the per-round ratios.

Run from the repository root after building cpp/build:

    PYTHONPATH=. python3 benchmarks/bench_runtime.py
    PYTHONPATH=. python3 benchmarks/bench_runtime.py --threads 1 --rounds 5 --only gpt
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _common import REPO, on_path, time_fxlower, time_torch

on_path(REPO, REPO / "tests")
import fxlower  # noqa: E402
from models import GPTSmall, ResNet18Small, _randomize_bn  # noqa: E402

DEFAULT_BINARY = REPO / "cpp" / "build" / "fxlower-run"


def make_models(gpt_masked: bool) -> dict:
    torch.manual_seed(0)
    models = {}
    resnet = ResNet18Small(widths=(64, 128, 256, 512), num_classes=1000)
    _randomize_bn(resnet)
    models["resnet18"] = (resnet.eval(), (torch.randn(1, 3, 224, 224),))
    tokens = torch.randint(0, 1024, (1, 256), generator=torch.Generator().manual_seed(1))
    models["gpt"] = (GPTSmall(vocab=1024, block_size=256, dim=256, heads=4, depth=4, use_sdpa=True).eval(), (tokens,))
    if gpt_masked:
        models["gpt-masked"] = (GPTSmall(vocab=1024, block_size=256, dim=256, heads=4, depth=4,
                                         use_sdpa=False).eval(), (tokens,))
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--binary", type=Path, default=Path(os.environ.get("FXLOWER_RUN", str(DEFAULT_BINARY))))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per measurement (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (default %(default)s)")
    parser.add_argument("--only", choices=["resnet18", "gpt", "gpt-masked"], action="append")
    parser.add_argument("--gpt-masked", action="store_true", help="also the masked-softmax GPT variant")
    args = parser.parse_args(argv)
    if not args.binary.is_file():
        print(f"error: {args.binary} does not exist; build cpp/build first", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    models = make_models(args.gpt_masked or (args.only and "gpt-masked" in args.only))
    if args.only:
        models = {k: v for k, v in models.items() if k in args.only}
    print(f"torch {torch.__version__}, {args.threads} thread(s) on both sides, median of {args.repeat} runs, "
          f"{args.rounds} rounds")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fxlower-bench-") as tmp:
        for name, (module, inputs) in models.items():
            art = Path(tmp) / f"{name}.fxl"
            # both views in one artifact (format 1.2): the module view and the Core ATen view of the same weights
            fxlower.export(torch.fx.symbolic_trace(module), art, inputs, golden=True, core=True)
            verdicts = []
            for view in ("module", "core"):
                check = subprocess.run([str(args.binary), str(art), "--view", view, "--check", "--quiet",
                                        "--threads", str(args.threads)], capture_output=True, text=True, check=False)
                verdicts.append(f"{view} " + ("PASS" if check.returncode == 0
                                              else f"FAIL ({check.stdout.strip() or check.stderr.strip()})"))
            sides = ["torch", "module", "core"]
            times: dict[str, list[float]] = {k: [] for k in sides}
            ratios: dict[str, list[float]] = {"module": [], "core": [], "core/module": []}
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                got = {}
                for side in order:
                    got[side] = (time_torch(module, inputs, args.repeat) if side == "torch"
                                 else time_fxlower(args.binary, art, args.threads, args.repeat, side))
                for k in sides:
                    times[k].append(got[k])
                ratios["module"].append(got["module"] / got["torch"])
                ratios["core"].append(got["core"] / got["torch"])
                ratios["core/module"].append(got["core"] / got["module"])
            rows.append((name, {k: statistics.median(v) for k, v in times.items()},
                         {k: statistics.median(v) for k, v in ratios.items()}, "; ".join(verdicts)))
    print(f"{'model':<12} {'torch eager':>12} {'module view':>12} {'core view':>12} {'module/eager':>13} "
          f"{'core/eager':>11} {'core/module':>12}  check")
    for name, t, r, verdict in rows:
        print(f"{name:<12} {t['torch']:>9.2f} ms {t['module']:>9.2f} ms {t['core']:>9.2f} ms {r['module']:>12.2f}x "
              f"{r['core']:>10.2f}x {r['core/module']:>11.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
