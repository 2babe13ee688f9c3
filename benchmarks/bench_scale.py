"""Export without materialising, at scale: a Llama-shaped model of >= 8 GB of bf16 weights built on the meta
device, exported from a hub-style sharded safetensors checkpoint. Prints figures; asserts nothing.

The script first writes the checkpoint itself (``model-0000i-of-0000N.safetensors`` of about --shard-gb each plus
``model.safetensors.index.json``), tensor by tensor with its own header writer, so it never holds more than one
64 MiB block of data. Then, in alternating order (forward on even rounds, reversed on odd ones), each round runs:

* ``fxlower``: a subprocess imports torch and fxlower, builds the model under ``torch.device("meta")``, traces it,
  resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` <- 5) and records VmRSS (the baseline), then times
  ``fxlower.export(gm, out, weights_from=index)``; its extra peak RSS is VmHWM minus the baseline (anonymous and
  mapped memory the export added; page cache is not counted);
* ``cp+fsync``: ``cp -r`` of the checkpoint directory, then ``os.fsync`` of every copied file: the physical limit
  (coreutils ``cp`` copies with ``copy_file_range`` too);
* ``safetensors``: a subprocess that, per shard, ``safetensors.torch.load_file`` + ``save_file`` + fsync (per
  shard so that its memory stays at one shard's size on a shared machine; a whole-model load would need the
  model's size in RAM).

Before every timed command the outputs of the previous one are deleted, ``sync`` runs and, when the process may
(root), the page cache is dropped (``/proc/sys/vm/drop_caches`` <- 3), so every round reads the checkpoint from
disk; the output says whether it could. All files are deleted at the end.

    PYTHONPATH=. python3 benchmarks/bench_scale.py                     # 8 GB, 3 rounds
    PYTHONPATH=. python3 benchmarks/bench_scale.py --size-gb 0.5 --hidden 1024 --rounds 1   # a quick try
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from _common import REPO as _ROOT, on_path, reset_peak_rss, status_kib, write_proc  # noqa: E402

REPO = str(_ROOT)
on_path(REPO)

GB = 10 ** 9
MIB = 1 << 20
_BLOCK = 64 * MIB


# ------------------------------------------------------------------------------------------------ the model

def config(size_gb: float, hidden: int) -> dict:
    """Llama-2-7B's shape at ``hidden`` (intermediate 8/3 x hidden rounded up to 256, 32,000 tokens, untied
    lm_head), with as many layers as make at least ``size_gb`` GB of bf16 weights."""
    inter = 256 * math.ceil(int(8 * hidden / 3) / 256)
    vocab = 32000
    per_layer = 2 * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden)
    fixed = 2 * (2 * vocab * hidden + hidden)
    layers = max(1, math.ceil((size_gb * GB - fixed) / per_layer))
    return {"hidden": hidden, "inter": inter, "vocab": vocab, "layers": layers, "heads": max(1, hidden // 128)}


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """State-dict names and shapes in Hugging Face's Llama naming, in model order."""
    h, i = cfg["hidden"], cfg["inter"]
    out = [("model.embed_tokens.weight", (cfg["vocab"], h))]
    for n in range(cfg["layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", (h,))]
        out += [(p + f"self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"]
        out += [(p + "post_attention_layernorm.weight", (h,))]
        out += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (cfg["vocab"], h))]
    return out


def build_meta_model(cfg: dict):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    h, i, heads = cfg["hidden"], cfg["inter"], cfg["heads"]
    bf16 = torch.bfloat16

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(h, dtype=bf16))

        def forward(self, x):
            v = x.float()
            return (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * self.weight

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            for x in "qkvo":
                setattr(self, f"{x}_proj", nn.Linear(h, h, bias=False, dtype=bf16))

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = (p(x).view(b, s, heads, h // heads).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(o.transpose(1, 2).reshape(b, s, h))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(h, i, bias=False, dtype=bf16)
            self.up_proj = nn.Linear(h, i, bias=False, dtype=bf16)
            self.down_proj = nn.Linear(i, h, bias=False, dtype=bf16)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm()
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm()
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.self_attn(self.input_layernorm(x))
            return x + self.mlp(self.post_attention_layernorm(x))

    class LlamaModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab"], h, dtype=bf16)
            self.layers = nn.ModuleList([Layer() for _ in range(cfg["layers"])])
            self.norm = RMSNorm()

        def forward(self, ids):
            x = self.embed_tokens(ids)
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    class LlamaForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = LlamaModel()
            self.lm_head = nn.Linear(h, cfg["vocab"], bias=False, dtype=bf16)

        def forward(self, ids):
            return self.lm_head(self.model(ids))

    with torch.device("meta"):
        return LlamaForCausalLM()


# ------------------------------------------------------------------------------------------------ checkpoint

def write_checkpoint(d: str, cfg: dict, shard_bytes: int) -> tuple[list[str], int]:
    """A hub-style sharded bf16 checkpoint in ``d``: tensors in model order, a new shard when the next tensor would
    pass ``shard_bytes``; data from one random 64 MiB block (any bf16 bits are valid), written block by block."""
    import torch
    g = torch.Generator().manual_seed(0)
    block = memoryview(torch.randn(_BLOCK // 2, generator=g).to(torch.bfloat16).view(torch.uint8).numpy())
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in tensor_shapes(cfg):
        n = 2 * math.prod(shape)
        if shards[-1] and used + n > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += n
    files, weight_map, total = [], {}, 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        pos = 0
        for name, shape in shard:
            n = 2 * math.prod(shape)
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
            pos += n
            weight_map[name] = file
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((-(8 + len(raw))) % 8)
        fd = os.open(os.path.join(d, file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, struct.pack("<Q", len(raw)) + raw)
            for j, (name, shape) in enumerate(shard):
                left = 2 * math.prod(shape)
                start = (2 * j * 4099) % (_BLOCK // 2)  # a different phase per tensor
                while left:
                    piece = block[start:start + min(left, _BLOCK - start)]
                    written = os.write(fd, piece)
                    left -= written
                    start = (start + written) % _BLOCK
            os.fsync(fd)
        finally:
            os.close(fd)
        files.append(file)
        total += pos
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return files, total


# ------------------------------------------------------------------------------------------------ children

def _status(key: str) -> int:
    return status_kib(key) * 1024


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_fxlower(args) -> None:
    import torch  # noqa: F401
    import torch.fx as fx
    import fxlower
    gm = fx.symbolic_trace(build_meta_model(json.loads(args.cfg)))
    reset = reset_peak_rss()
    base = _status("VmRSS")
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    fxlower.export(gm, args.out, weights_from=os.path.join(args.ckpt, "model.safetensors.index.json"))
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "extra": _status("VmHWM") - base if reset else float("nan"),
                      "baseline": base, "cpu": _cpu_self() - cpu0}))


def child_safetensors(args) -> None:
    import torch  # noqa: F401
    from safetensors.torch import load_file, save_file
    os.mkdir(args.out)
    reset = reset_peak_rss()
    base = _status("VmRSS")
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    for name in sorted(os.listdir(args.ckpt)):
        if name.endswith(".safetensors"):
            dst = os.path.join(args.out, name)
            sd = load_file(os.path.join(args.ckpt, name))
            save_file(sd, dst, metadata={"format": "pt"})
            del sd
            fd = os.open(dst, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "extra": _status("VmHWM") - base if reset else float("nan"),
                      "baseline": base, "cpu": _cpu_self() - cpu0}))


# ------------------------------------------------------------------------------------------------ parent

def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (busy excludes idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def measured(fn):
    """Run ``fn()``; add the machine's busy share and the CPU time of the children (all threads) meanwhile."""
    b0, t0 = _cpu_ticks()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = fn()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1, t1 = _cpu_ticks()
    res.setdefault("cpu", (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    res["busy"] = (b1 - b0) / max(1, t1 - t0)
    return res


def drop_caches() -> bool:
    os.sync()
    return write_proc("/proc/sys/vm/drop_caches", "3")


def run_child(kind: str, ckpt: str, out: str, cfg: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--ckpt", ckpt, "--out", out,
           "--cfg", json.dumps(cfg)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{kind} child failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_cp(ckpt: str, out: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(["cp", "-r", ckpt, out])
    _, status, _ = os.wait4(p.pid, 0)
    if status:
        raise RuntimeError(f"cp failed with status {status}")
    for name in os.listdir(out):
        fd = os.open(os.path.join(out, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    # cp's own ru_maxrss is not reported: the forked child counts this (torch-importing) process's pages until exec
    return {"seconds": time.perf_counter() - t0, "extra": float("nan"), "baseline": 0}


def check_artifact(art_path: str, ckpt: str) -> str:
    """Compare the artifact's smallest and largest tensors with the checkpoint's (via safetensors)."""
    import torch
    import fxlower
    from safetensors import safe_open
    index = json.load(open(os.path.join(ckpt, "model.safetensors.index.json")))["weight_map"]
    art = fxlower.load(art_path)
    entries = sorted(art.manifest.tensors, key=lambda t: math.prod(t.shape))
    checked = []
    for e in (entries[0], entries[-1]):
        with safe_open(os.path.join(ckpt, index[e.name]), "pt") as f:
            same = torch.equal(f.get_tensor(e.name).view(torch.int16), art.tensor(e.name).view(torch.int16))
        checked.append(f"{e.name} {'equal' if same else 'DIFFERENT'}")
    return f"{len(art.manifest.tensors)} tensors; " + ", ".join(checked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=8.0, help="at least this many GB (10^9 bytes) of weights")
    ap.add_argument("--hidden", type=int, default=4096, help="hidden size (default 4096, Llama-2-7B's)")
    ap.add_argument("--shard-gb", type=float, default=3.0, help="checkpoint shard size (default 3 GB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a new temporary directory under build/)")
    ap.add_argument("--child", choices=["fxlower", "safetensors"], help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "fxlower":
        return child_fxlower(args)
    if args.child == "safetensors":
        return child_safetensors(args)

    cfg = config(args.size_gb, args.hidden)
    parent = args.dir or os.path.join(REPO, "build")
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-scale-", dir=parent)
    try:
        ckpt = os.path.join(work, "ckpt")
        os.mkdir(ckpt)
        t0 = time.perf_counter()
        files, total = write_checkpoint(ckpt, cfg, int(args.shard_gb * GB))
        n = len(tensor_shapes(cfg))
        print(f"model: Llama-shaped, hidden {cfg['hidden']}, intermediate {cfg['inter']}, {cfg['layers']} layers, "
              f"vocab {cfg['vocab']}: {n} bf16 tensors, {total / GB:.3f} GB; checkpoint: {len(files)} shards + "
              f"index, written in {time.perf_counter() - t0:.1f} s")
        dropped = drop_caches()
        print("page cache: " + ("dropped before every timed command (sync; drop_caches <- 3): cold reads" if dropped
                                else "NOT dropped (no permission): the checkpoint may be read from the page cache"))
        variants = {"cp+fsync": lambda out: run_cp(ckpt, out),
                    "fxlower": lambda out: run_child("fxlower", ckpt, out, cfg),
                    "safetensors": lambda out: run_child("safetensors", ckpt, out, cfg)}
        results: dict[str, list[dict]] = {k: [] for k in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                out = os.path.join(work, f"out-{name}-{r}")
                drop_caches()
                res = measured(lambda: variants[name](out))
                results[name].append(res)
                print(f"round {r + 1}/{args.rounds} {name:12s} {res['seconds']:8.2f} s  "
                      f"extra peak RSS {res['extra'] / MIB:8.1f} MiB  child CPU {res['cpu']:6.1f} s  "
                      f"machine busy {100 * res['busy']:3.0f}% of {os.cpu_count()} CPUs", flush=True)
                if name == "fxlower" and r == 0:
                    print(f"  check: {check_artifact(out, ckpt)}", flush=True)
                shutil.rmtree(out)
        print()
        print(f"{total / GB:.3f} GB in {n} tensors, {len(files)} checkpoint shards, {args.rounds} rounds, alternating "
              f"order; medians (ratio: median of per-round ratios to cp+fsync)")
        print(f"{'variant':22s} {'median s':>9s} {'GB/s':>6s} {'vs cp':>6s} {'extra peak RSS MiB':>19s} "
              f"{'min s':>7s} {'CPU s':>6s}")
        labels = {"cp+fsync": "cp -r + fsync", "fxlower": "fxlower (meta+ckpt)",
                  "safetensors": "safetensors load+save"}
        ratio = {}
        for name, rs in results.items():
            secs = [x["seconds"] for x in rs]
            ratio[name] = statistics.median(x["seconds"] / c["seconds"] for x, c in zip(rs, results["cp+fsync"]))
            med = statistics.median(secs)
            print(f"{labels[name]:22s} {med:9.2f} {total / GB / med:6.2f} {ratio[name]:6.3f} "
                  f"{statistics.median(x['extra'] for x in rs) / MIB:19.1f} {min(secs):7.2f} "
                  f"{statistics.median(x['cpu'] for x in rs):6.1f}")
        extra = max(x["extra"] for x in results["fxlower"]) / MIB
        print("(extra peak RSS: VmHWM minus VmRSS after imports and building the model, the peak mark reset "
              "first; nan for cp, not measured. CPU s: user+system time of the timed part, all threads "
              "(for cp, of the cp process); machine busy: all processes, ours and others', during the command)")
        print(f"aims: fxlower time / cp time <= 1.3: {'MET' if ratio['fxlower'] <= 1.3 else 'MISSED'} "
              f"({ratio['fxlower']:.3f})")
        print(f"      fxlower extra peak RSS <= 512 MiB: {'MET' if extra <= 512 else 'MISSED'} "
              f"({extra:.1f} MiB, the largest of {args.rounds} rounds)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"removed {work}")


if __name__ == "__main__":
    main()
