"""IREE (llvm-cpu) executing fxlower-mlir's output vs fxlower-run --view core vs PyTorch eager, one artifact each, on
the CPU. Prints figures; asserts nothing (a model whose IREE outputs leave the golden tolerances is reported).

Models (ResNet- and GPT-shaped, smaller than bench_runtime's so that IREE's compile stays short):

* resnet: the zoo's ResNet-18 shape with widths (32, 64, 128, 256), 100 classes, one 1x3x128x128 image.
* gpt: the zoo's GPT block stack (F.scaled_dot_product_attention), sequence 128, width 128, 4 heads, 2 layers,
  vocabulary 512.

Each model is exported once with core=True; fxlower-mlir writes the MLIR and iree-compile builds it for the host
CPU (compile time reported separately: fxlower-mlir's and iree-compile's wall times). All three run at the same
thread count: torch.set_num_threads(N), fxlower-run --threads N, and IREE's local-task driver with
--task_topology_max_group_count=N. PyTorch is timed in-process under torch.no_grad() after warm-up runs; fxlower-run
times its own executions (--repeat, one warm-up); IREE is timed by iree-benchmark-module (--benchmark_repetitions,
weights read from the artifact's safetensors file through --parameters). Each figure is a median.

Run from the repository root after building cpp/build (fxlower-run and fxlower-mlir):

    PYTHONPATH=. python3 benchmarks/bench_iree.py
    PYTHONPATH=. python3 benchmarks/bench_iree.py --threads 1 --repeat 20 --only gpt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import REPO, on_path, time_fxlower, time_torch

on_path(REPO, REPO / "tests")
import fxlower  # noqa: E402
from models import GPTSmall, ResNet18Small, _randomize_bn  # noqa: E402

BUILD = REPO / "cpp" / "build"
FLAGS = ["--iree-input-type=torch", "--iree-hal-target-device=local",
         "--iree-hal-local-target-device-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]
ELEM = {torch.float32: "f32", torch.int64: "i64"}


def make_models() -> dict:
    torch.manual_seed(0)
    resnet = ResNet18Small(widths=(32, 64, 128, 256), num_classes=100)
    _randomize_bn(resnet)
    tokens = torch.randint(0, 512, (1, 128), generator=torch.Generator().manual_seed(1))
    return {"resnet": (resnet.eval(), (torch.randn(1, 3, 128, 128),)),
            "gpt": (GPTSmall(vocab=512, block_size=128, dim=128, heads=4, depth=2, use_sdpa=True).eval(), (tokens,))}


def iree_inputs(inputs, work: Path) -> list[str]:
    args = []
    for i, t in enumerate(inputs):
        f = work / f"in{i}.bin"
        t.contiguous().numpy().tofile(f)
        args.append(f"--input={'x'.join(map(str, t.shape))}x{ELEM[t.dtype]}=@{f}")
    return args


def time_iree(vmfb: Path, params: list[str], inputs: list[str], threads: int, repeat: int) -> float:
    proc = subprocess.run(["iree-benchmark-module", f"--module={vmfb}", *params, "--device=local-task",
                           f"--task_topology_max_group_count={threads}", "--function=main", *inputs,
                           f"--benchmark_repetitions={repeat}", "--benchmark_min_time=1x",
                           "--benchmark_format=json"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"iree-benchmark-module failed: {proc.stderr[-2000:]}")
    runs = [b["real_time"] for b in json.loads(proc.stdout)["benchmarks"] if b.get("run_type") == "iteration"]
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fxlower-run", type=Path, default=Path(os.environ.get("FXLOWER_RUN", BUILD / "fxlower-run")))
    parser.add_argument("--fxlower-mlir", type=Path,
                        default=Path(os.environ.get("FXLOWER_MLIR", BUILD / "fxlower-mlir")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per measurement (default %(default)s)")
    parser.add_argument("--only", choices=["resnet", "gpt"], action="append")
    args = parser.parse_args(argv)
    for tool in ("iree-compile", "iree-benchmark-module", "iree-run-module"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (pip install iree-base-compiler iree-base-runtime)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) on every side, median of {args.repeat} runs")
    print(f"{'model':8} {'pytorch ms':>11} {'fxlower-run core ms':>20} {'iree ms':>9} "
          f"{'fxlower-mlir s':>15} {'iree-compile s':>15}  check")
    models = make_models()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (module, inputs) in models.items():
            if args.only and name not in args.only:
                continue
            work = Path(tmp) / name
            work.mkdir()
            art = work / "art"
            fxlower.export(module, art, inputs, golden=True, core=True)
            t = time.perf_counter()
            subprocess.run([str(args.fxlower_mlir), str(art), "-o", str(work / "m.mlir")], check=True,
                           capture_output=True)
            t_emit = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run(["iree-compile", *FLAGS, str(work / "m.mlir"), "-o", str(work / "m.vmfb")], check=True,
                           capture_output=True)
            t_compile = time.perf_counter() - t
            params = [f"--parameters=model={art / f}" for f in ("weights.safetensors",)]
            ins = iree_inputs(inputs, work)
            # One checked run: IREE's output against PyTorch's.
            subprocess.run(["iree-run-module", f"--module={work / 'm.vmfb'}", *params, *ins,
                            f"--output=@{work / 'out.bin'}"], check=True, capture_output=True)
            with torch.no_grad():
                want = module(*inputs)
            got = torch.from_numpy(np.fromfile(work / "out.bin", dtype=np.float32)).reshape(want.shape)
            err = float((got - want).abs().max())
            ok = bool(torch.allclose(got, want, rtol=1e-3, atol=1e-4))
            t_torch = time_torch(module, inputs, args.repeat)
            t_fx = time_fxlower(args.fxlower_run, art, args.threads, args.repeat, "core")
            t_iree = time_iree(work / "m.vmfb", params, ins, args.threads, args.repeat)
            print(f"{name:8} {t_torch:11.2f} {t_fx:20.2f} {t_iree:9.2f} {t_emit:15.2f} {t_compile:15.1f}  "
                  f"{'ok' if ok else 'MISMATCH'} (max |iree - torch| {err:.1e})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
