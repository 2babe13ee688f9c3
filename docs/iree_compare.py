"""Compare IREE's outputs for an fxlower artifact with its golden outputs and with fxlower-run --view core.

    python3 docs/iree_compare.py DIR MODULE.vmfb [--fxlower-run PATH] [--scope model]

Runs iree-run-module on MODULE.vmfb (compiled from `fxlower-mlir DIR -o ...`) with the artifact's golden inputs and
its own weights files as parameters (--parameters=SCOPE=DIR/FILE, one per weights file), then fxlower-run --view core
on the same inputs, and prints, per output, the largest differences against the golden output (within the
artifact's stored tolerances, docs/format.md section 8) and between the two runtimes. Exit status 0 when both match
the golden outputs, 1 otherwise. Needs numpy and msgpack (no torch, no safetensors package).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack
import numpy as np

# safetensors code -> (numpy dtype of the raw bytes, iree-run-module element type)
DTYPES = {"F32": (np.float32, "f32"), "F64": (np.float64, "f64"), "F16": (np.float16, "f16"),
          "BF16": (np.uint16, "bf16"), "I64": (np.int64, "i64"), "I32": (np.int32, "i32"), "BOOL": (np.uint8, "i1")}


def read_safetensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype code, array of the raw elements); bfloat16 as uint16 bits (numpy has no bfloat16)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    out = {}
    for k, v in json.loads(raw[8:8 + n]).items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=DTYPES[v["dtype"]][0]).reshape(v["shape"])
        out[k] = (v["dtype"], a)
    return out


def as_float(a: np.ndarray, code: str) -> np.ndarray:
    if code == "BF16":  # bfloat16 bits are the high half of a float32
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("module", type=Path)
    ap.add_argument("--fxlower-run", default="fxlower-run")
    ap.add_argument("--scope", default="model")
    args = ap.parse_args(argv)
    art = args.artifact
    m = msgpack.unpackb((art / "manifest.msgpack").read_bytes(), strict_map_key=False)
    golden = art / m["golden"]["file"] if "file" in m["golden"] else art / "golden.safetensors"
    g = read_safetensors(golden)
    order = lambda k: [int(p) for p in k.split("/")[2:]]
    ins = sorted((k for k in g if k.startswith("golden/inputs/")), key=order)
    outs = sorted((k for k in g if k.startswith("golden/outputs/")), key=order)
    tols = m["golden"]["tolerances"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cmd = ["iree-run-module", f"--module={args.module}"]
        cmd += [f"--parameters={args.scope}={art / f['path']}" for f in m["files"] if f["role"] == "weights"]
        for i, k in enumerate(ins):
            f = work / f"in{i}.bin"
            code, a = g[k]
            a.tofile(f)
            dims = "x".join(map(str, a.shape))
            cmd.append(f"--input={dims}{'x' if dims else ''}{DTYPES[code][1]}=@{f}")
        cmd += [f"--output=@{work / f'out{j}.bin'}" for j in range(len(outs))]
        print("$", " ".join(cmd))
        subprocess.run(cmd, check=True, capture_output=True)
        ref = work / "ref.safetensors"
        subprocess.run([args.fxlower_run, str(art), "--view", "core", "--out", str(ref), "--quiet"], check=True,
                       capture_output=True)
        fx = read_safetensors(ref)
        ok = True
        for j, k in enumerate(outs):
            code, want = g[k]
            got = np.fromfile(work / f"out{j}.bin", dtype=DTYPES[code][0]).reshape(want.shape)
            if code in tols:
                e, a, r = as_float(want, code), as_float(got, code), as_float(fx[str(j)][1], code)
                tol = tols[code]
                good = bool(np.all(np.abs(a - e) <= tol["atol"] + tol["rtol"] * np.abs(e)))
                print(f"output {j} {code}{list(want.shape)}: max |iree - golden| {np.abs(a - e).max():.3e}, "
                      f"max |iree - fxlower-run| {np.abs(a - r).max():.3e} (atol {tol['atol']}, rtol {tol['rtol']}): "
                      f"{'ok' if good else 'MISMATCH'}")
            else:
                good = bool(np.array_equal(got, want.view(got.dtype)))
                print(f"output {j} {code}{list(want.shape)}: {'equal' if good else 'MISMATCH'}")
            ok &= good
    print("iree: PASS" if ok else "iree: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
