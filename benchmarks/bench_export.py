"""Benchmarks for fxlower.export / fxlower.load. Prints figures; asserts nothing.

Two benchmarks (see benchmarks/README.md):

* weights: a >= 1 GB float32 Linear stack. Wall time of fxlower.export against safetensors.torch.save_file,
  torch.save (each also followed by an fsync, since neither syncs) and a raw os.write + fsync of the same number
  of bytes (the physical limit). Peak extra memory of each write is measured in a fresh subprocess
  (``--one VARIANT``): the model is built, the variant is run once on a tiny model (imports, thread pools), the
  kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` = 5), the write runs, and VmHWM minus the RSS just
  before the write is reported.
* load: the same weights read back: fxlower.load + to_graph_module(copy=False) with every tensor touched (views
  served by the safetensors library, ``safe_open`` on the checked descriptor; and, as "before", fxlower's own
  mapping of the descriptor), fxlower.load + to_graph_module(copy=True) (owned copies read with pread), against
  safetensors.torch.load_file + clone, torch.load of a torch.save file and a raw read of the weights file into one
  buffer (the limit). The files are in the page cache (warm reads).
* graph: N blocks of [Linear(16,16), ReLU, add residual] (~3N nodes). symbolic_trace, fxlower.export (without
  and with example inputs), fxlower.load, Artifact.to_graph_module, torch.export.export and torch.export.save.

Rounds alternate the order of the compared commands (forward on even rounds, reversed on odd ones); reported
figures are medians over rounds, and ratios are medians of per-round ratios. Before each timed write the script
touches 1.2x the model's bytes of page cache (writes and deletes an unsynced scratch file; see warm_memory): the
VM hands idle memory back to its host, and a big write after a pause otherwise runs several times slower. Every
measurement writes to a new path, waits (up to --quiet-wait s) for other processes to leave the CPUs idle, and
reports the share of the machine others used meanwhile.

Run from the repository root:

    PYTHONPATH=. python3 benchmarks/bench_export.py                  # both benchmarks, 3 rounds
    PYTHONPATH=. python3 benchmarks/bench_export.py --only graph --graph-blocks 500
    PYTHONPATH=. python3 benchmarks/bench_export.py --only load --rounds 9
    PYTHONPATH=. python3 benchmarks/bench_export.py --profile        # adds cProfile reports and a write timeline
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.fx as fx
import torch.nn as nn

from _common import REPO as _ROOT, on_path, reset_peak_rss, status_kib  # noqa: E402

REPO = str(_ROOT)
on_path(REPO)

import fxlower  # noqa: E402

MIB = 1 << 20
RAW_CHUNK = 64 * MIB

WEIGHT_VARIANTS = ["raw", "fxlower", "safetensors", "safetensors+fsync", "torch.save", "torch.save+fsync"]

# ================================================================================================ helpers


def median(xs):
    return statistics.median(xs)


_SCRATCH_BUF: torch.Tensor | None = None


def warm_memory(nbytes: int, directory: str, mode: str = "cache") -> None:
    """Touch ``nbytes`` of memory just before a timed write, so that the write does not pay for memory that the
    VM handed back to its host while idle.

    ``cache`` (default) writes a scratch file of ``nbytes`` into ``directory`` without fsync and deletes it: the
    page-cache pages it frees are the ones the timed write then gets. Measured on the development VM, a 1.07 GB
    write() phase took 0.21-0.23 s after this, 1.1-2.6 s after a 3 s pause without it, and 1.1-1.7 s after
    ``anon`` (allocating, filling and freeing an anonymous buffer, which does not help page-cache writes).
    """
    global _SCRATCH_BUF
    if nbytes <= 0 or mode == "none":
        return
    if mode == "anon":
        buf = torch.empty(nbytes, dtype=torch.uint8)
        buf.fill_(1)
        del buf
        return
    if _SCRATCH_BUF is None:
        _SCRATCH_BUF = torch.full((RAW_CHUNK,), 1, dtype=torch.uint8)
    mv = memoryview(_SCRATCH_BUF.numpy()).cast("B")
    path = os.path.join(directory, "warm-scratch.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, mv[:min(left, RAW_CHUNK)])
    finally:
        os.close(fd)
        os.remove(path)


def rm(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_busy() -> tuple[float, float]:
    """(busy seconds of the whole machine, this process's CPU seconds) so far."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(vals[:8]) - idle) / hz, time.process_time()


def wait_quiet(max_wait: float, threshold: float = 0.15, interval: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` of the CPUs; return the last share.

    Other people's builds on this 2-core machine otherwise land in the middle of a measurement.
    """
    deadline = time.monotonic() + max_wait
    share = 0.0
    while True:
        b0, o0 = _cpu_busy()
        time.sleep(interval)
        b1, o1 = _cpu_busy()
        share = max(0.0, (b1 - b0) - (o1 - o0)) / (interval * (os.cpu_count() or 1))
        if share < threshold or time.monotonic() >= deadline:
            return share


class Timed:
    """Wall time of a block, this process's CPU time, and the share of the CPUs other processes (kernel threads
    included) used meanwhile."""

    def __enter__(self):
        self._b, self._o = _cpu_busy()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t
        b, o = _cpu_busy()
        self.cpu = o - self._o  # this process's CPU seconds, all threads (user + system)
        self.others = max(0.0, (b - self._b) - (o - self._o)) / (max(self.seconds, 1e-3) * (os.cpu_count() or 1))
        return False


def default_dir() -> str:
    base = os.path.join(REPO, "build")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="bench-export-", dir=base)


# ================================================================================================ weights model


class LinearStack(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, device="meta"))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def weights_dims(args) -> list[int]:
    return [args.width // 2] + [args.width] * (args.layers + 1) + [args.width // 2]


def build_weights_model(args) -> fx.GraphModule:
    model = LinearStack(weights_dims(args)).to_empty(device="cpu")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.uniform_(-0.01, 0.01, generator=g)  # real, touched pages
    model.eval()
    return fx.symbolic_trace(model)


def state_dict_of(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in gm.state_dict().items()}


def tensor_nbytes(sd: dict[str, torch.Tensor]) -> tuple[int, int]:
    sizes = [t.numel() * t.element_size() for t in sd.values()]
    return sum(sizes), max(sizes)


def raw_write(buf: torch.Tensor, path: str) -> None:
    mv = memoryview(buf.numpy()).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        pos = 0
        n = len(mv)
        while pos < n:
            pos += os.write(fd, mv[pos:pos + RAW_CHUNK])
        os.fsync(fd)
    finally:
        os.close(fd)


def run_variant(variant: str, gm: fx.GraphModule, sd: dict, raw_buf: torch.Tensor | None, out: str) -> None:
    """One write of ``variant`` to ``out`` (a directory for fxlower, a file otherwise)."""
    if variant == "raw":
        raw_write(raw_buf, out)
    elif variant == "control":  # memory-measurement control: copies the largest tensor, then writes it
        big = max(sd.values(), key=lambda t: t.numel() * t.element_size())
        raw_write(big.clone().view(-1).view(torch.uint8), out)
    elif variant == "fxlower":
        fxlower.export(gm, out, overwrite=True)
    elif variant.startswith("safetensors"):
        import safetensors.torch
        safetensors.torch.save_file(sd, out)
        if variant.endswith("+fsync"):
            fsync_path(out)
    elif variant.startswith("torch.save"):
        torch.save(sd, out)
        if variant.endswith("+fsync"):
            fsync_path(out)
    else:
        raise ValueError(variant)


def out_path(d: str, variant: str, tag: str = "") -> str:
    """A fresh name per measurement, so that no timing depends on how the file system recycles a deleted name."""
    stem = variant.replace("+", "_").replace(".", "_") + tag
    return os.path.join(d, stem + (".fxl" if variant == "fxlower" else ".bin"))


def one_variant_memory(args) -> None:
    """Child process: build the model, run ``args.one`` once, print its peak extra memory as JSON."""
    variant = args.one
    gm = build_weights_model(args)
    sd = state_dict_of(gm)
    total, largest = tensor_nbytes(sd)
    raw_buf = None
    if variant == "raw":
        raw_buf = torch.empty(total, dtype=torch.uint8).fill_(7)
    # One-time costs (lazy imports, thread pools, allocator arenas) on a tiny model, outside the measurement.
    tiny = fx.symbolic_trace(LinearStack([8, 8, 8]).to_empty(device="cpu"))
    tiny_out = out_path(args.dir, "tiny-" + variant)
    run_variant(variant, tiny, state_dict_of(tiny), torch.zeros(64, dtype=torch.uint8), tiny_out)
    rm(tiny_out)
    gc.collect()
    out = out_path(args.dir, variant)
    rm(out)
    warm_memory(int(args.warm_factor * total), args.dir, args.warm)
    gc.collect()
    base_kib = status_kib("VmRSS")
    method = "clear_refs"
    if not reset_peak_rss():
        method = "ru_maxrss"  # only valid when the write's peak exceeds the build's
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    run_variant(variant, gm, sd, raw_buf, out)
    dt = time.perf_counter() - t0
    if method == "clear_refs":
        extra_kib = status_kib("VmHWM") - base_kib
    else:
        extra_kib = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(before_max, base_kib))
    rm(out)
    print(json.dumps({"variant": variant, "extra_mib": extra_kib / 1024, "method": method, "seconds": dt,
                      "largest_mib": largest / MIB, "total_bytes": total}))


def measure_memory(args, variant: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", variant, "--dir", args.dir,
           "--width", str(args.width), "--layers", str(args.layers), "--warm-factor", str(args.warm_factor),
           "--warm", args.warm]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        return {"variant": variant, "extra_mib": float("nan"), "method": "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_weights(args) -> dict:
    print("== weights benchmark ==", flush=True)
    t0 = time.perf_counter()
    gm = build_weights_model(args)
    sd = state_dict_of(gm)
    total, largest = tensor_nbytes(sd)
    print(f"model: Linear stack dims {weights_dims(args)}, {len(sd)} tensors, {total / 1e9:.3f} GB float32, "
          f"largest tensor {largest / MIB:.0f} MiB (built in {time.perf_counter() - t0:.1f} s)", flush=True)
    raw_buf = torch.empty(total, dtype=torch.uint8).fill_(7)

    # Untimed warm-up: one raw write (page cache, file system) and one tiny run of each variant (imports).
    warm = out_path(args.dir, "warmup")
    warm_memory(int(args.warm_factor * total), args.dir, args.warm)
    raw_write(raw_buf, warm)
    rm(warm)
    tiny = fx.symbolic_trace(LinearStack([8, 8, 8]).to_empty(device="cpu"))
    for v in WEIGHT_VARIANTS:
        p = out_path(args.dir, "tiny-" + v)
        run_variant(v, tiny, state_dict_of(tiny), torch.zeros(64, dtype=torch.uint8), p)
        rm(p)
    os.sync()

    times: dict[str, list[float]] = {v: [] for v in WEIGHT_VARIANTS}
    others: dict[str, list[float]] = {v: [] for v in WEIGHT_VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in WEIGHT_VARIANTS}
    for r in range(args.rounds):
        order = WEIGHT_VARIANTS if r % 2 == 0 else WEIGHT_VARIANTS[::-1]
        for v in order:
            out = out_path(args.dir, v, f"-r{r}")
            rm(out)
            os.sync()
            gc.collect()
            wait_quiet(args.quiet_wait)
            warm_memory(int(args.warm_factor * total), args.dir, args.warm)
            with Timed() as tm:
                run_variant(v, gm, sd, raw_buf, out)
            times[v].append(tm.seconds)
            cpus[v].append(tm.cpu)
            others[v].append(tm.others)
            os.sync()  # untimed: the non-fsync variants' dirty pages must not slow the next command
            rm(out)
        print(f"round {r + 1}/{args.rounds} ({'forward' if r % 2 == 0 else 'reversed'}): "
              + ", ".join(f"{v} {times[v][-1]:.2f}s" + (f" [others {others[v][-1]:.0%}]" if others[v][-1] > 0.1
                                                        else "") for v in WEIGHT_VARIANTS), flush=True)
    del raw_buf
    gc.collect()

    mem = {}
    if not args.no_memory:
        for v in WEIGHT_VARIANTS + ["control"]:
            mem[v] = measure_memory(args, v)
            print(f"memory {v}: +{mem[v]['extra_mib']:.1f} MiB ({mem[v]['method']})", flush=True)

    rows = []
    for v in WEIGHT_VARIANTS:
        ts = times[v]
        vs_raw = median([a / b for a, b in zip(ts, times["raw"])])
        vs_fx = median([a / b for a, b in zip(ts, times["fxlower"])])
        rows.append((v, median(ts), total / median(ts) / 1e9, vs_raw, vs_fx,
                     mem.get(v, {}).get("extra_mib", float("nan")), largest / MIB, min(ts), median(others[v]),
                     median(cpus[v])))
    print()
    print(f"weights: {total / 1e9:.3f} GB in {len(sd)} tensors, {args.rounds} rounds, alternating order; "
          f"medians (ratios are medians of per-round ratios)")
    hdr = ("variant", "median s", "GB/s", "vs raw", "vs fxlower", "peak extra MiB", "largest MiB", "min s",
           "CPU s", "others' CPU")
    print(f"{hdr[0]:<19}{hdr[1]:>9}{hdr[2]:>7}{hdr[3]:>8}{hdr[4]:>11}{hdr[5]:>16}{hdr[6]:>13}{hdr[7]:>8}"
          f"{hdr[8]:>7}{hdr[9]:>13}")
    for v, t, gbs, rr, rf, m, lg, mn, oth, cpu in rows:
        print(f"{v:<19}{t:>9.3f}{gbs:>7.3f}{rr:>8.3f}{rf:>11.3f}{m:>16.2f}{lg:>13.0f}{mn:>8.3f}{cpu:>7.2f}"
              f"{oth:>13.0%}")
    print("(min s: fastest round; CPU s: median CPU time of this process, all threads; others' CPU: median share "
          "of the machine used meanwhile by other processes and kernel threads, e.g. writeback)")
    if "control" in mem:
        print(f"memory-method control (a write that first copies the largest tensor): "
              f"+{mem['control']['extra_mib']:.1f} MiB measured, {largest / MIB:.0f} MiB expected")
    print("notes: safetensors.save_file and torch.save do not fsync (their '+fsync' rows add one); fxlower "
          "also hashes every tensor (SHA-256), fsyncs the directory and renames it into place.")
    noisy = [v for v in WEIGHT_VARIANTS if max(times[v]) > 1.5 * min(times[v])]
    if noisy:
        print(f"NOISY: slowest round > 1.5x fastest for {', '.join(noisy)}; with few rounds one slow round moves "
              f"the medians and ratios (use --rounds 9 or more before drawing conclusions)")
    by = {r[0]: r for r in rows}
    fx_ratio_raw = by["fxlower"][3]
    fx_mem = by["fxlower"][5]
    peers = ["safetensors+fsync", "torch.save+fsync", "safetensors", "torch.save"]
    ahead = {p: by[p][4] > 1.0 for p in peers}  # peer time / fxlower time, median of per-round ratios
    print("aims: fxlower within 10% of the raw write (median ratio): "
          f"{'MET' if fx_ratio_raw <= 1.10 else 'MISSED'} ({fx_ratio_raw:.3f}x)")
    vs_st = 1.0 / by["safetensors+fsync"][4]  # fxlower time / library time, from the median per-round ratio
    print("      fxlower within 10% of safetensors.save_file+fsync: "
          f"{'MET' if vs_st <= 1.10 else 'MISSED'} ({vs_st:.3f}x)")
    print("      ahead of both peers: " + ", ".join(
        f"{p} {'MET' if ahead[p] else 'MISSED'} (peer/fxlower {by[p][4]:.2f})" for p in peers))
    print("      extra memory <= largest tensor: "
          f"{'MET' if fx_mem <= largest / MIB else ('MISSED' if fx_mem == fx_mem else 'not measured')} "
          f"({fx_mem:.2f} MiB vs {largest / MIB:.0f} MiB)")
    print(flush=True)
    return {"times": times, "memory": mem, "total_bytes": total, "largest_bytes": largest}


# ================================================================================================ load

LOAD_VARIANTS = ["raw read", "fxlower", "fxlower (own mmap)", "fxlower copy=True", "safetensors+clone", "torch.load"]


def _raw_read(path: str, buf: torch.Tensor) -> None:
    mv = memoryview(buf.numpy()).cast("B")
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < len(mv):
            n = os.readv(fd, [mv[pos:pos + RAW_CHUNK]])
            if n == 0:
                break
            pos += n
    finally:
        os.close(fd)


def run_load_variant(variant: str, paths: dict[str, str], buf: torch.Tensor) -> None:
    from fxlower.io import mapping
    if variant == "raw read":
        _raw_read(paths["weights file"], buf)
    elif variant.startswith("fxlower"):
        saved = mapping._FD_PATH
        if variant == "fxlower (own mmap)":
            mapping._FD_PATH = None  # the 1.0 path: fxlower maps the descriptor itself
        try:
            art = fxlower.load(paths["fxlower"])
            if variant == "fxlower copy=True":
                art.to_graph_module(copy=True)  # owned copies of every tensor, read with pread
            else:  # zero-copy views (the library's private mapping, or fxlower's), every byte touched
                for t in art.to_graph_module(copy=False).state_dict().values():
                    t.view(-1)[::1024].sum()
            art.close()
        finally:
            mapping._FD_PATH = saved
    elif variant == "safetensors+clone":
        import safetensors.torch
        {k: v.clone() for k, v in safetensors.torch.load_file(paths["safetensors"]).items()}
    elif variant == "torch.load":
        torch.load(paths["torch"], weights_only=True)
    else:
        raise ValueError(variant)


def bench_load(args) -> dict:
    print("== load benchmark ==", flush=True)
    import safetensors.torch
    gm = build_weights_model(args)
    sd = state_dict_of(gm)
    total, largest = tensor_nbytes(sd)
    paths = {"fxlower": os.path.join(args.dir, "load.fxl"), "safetensors": os.path.join(args.dir, "load.st"),
             "torch": os.path.join(args.dir, "load.pt")}
    rm(paths["fxlower"])
    fxlower.export(gm, paths["fxlower"])
    paths["weights file"] = os.path.join(paths["fxlower"], "weights.safetensors")
    safetensors.torch.save_file(sd, paths["safetensors"])
    torch.save(sd, paths["torch"])
    os.sync()
    del gm, sd
    gc.collect()
    buf = torch.empty(os.path.getsize(paths["weights file"]), dtype=torch.uint8)
    buf.fill_(1)
    print(f"model: {total / 1e9:.3f} GB float32 in 10 tensors, largest {largest / MIB:.0f} MiB; files in the page "
          f"cache", flush=True)
    for v in LOAD_VARIANTS:  # warm-up: page cache, imports
        run_load_variant(v, paths, buf)
        gc.collect()
    times: dict[str, list[float]] = {v: [] for v in LOAD_VARIANTS}
    others: dict[str, list[float]] = {v: [] for v in LOAD_VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in LOAD_VARIANTS}
    for r in range(args.rounds):
        order = LOAD_VARIANTS if r % 2 == 0 else LOAD_VARIANTS[::-1]
        for v in order:
            gc.collect()
            wait_quiet(args.quiet_wait)
            warm_memory(int(args.warm_factor * total), args.dir, "anon")  # the copies land in anonymous memory
            with Timed() as tm:
                run_load_variant(v, paths, buf)
            gc.collect()
            times[v].append(tm.seconds)
            others[v].append(tm.others)
            cpus[v].append(tm.cpu)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {times[v][-1]:.3f}s" for v in LOAD_VARIANTS),
              flush=True)
    print()
    print(f"load: {total / 1e9:.3f} GB, {args.rounds} rounds, alternating order; medians (ratios: medians of "
          f"per-round ratios)")
    print(f"{'variant':<22}{'median s':>9}{'GB/s':>7}{'vs raw':>8}{'vs fxlower':>11}{'min s':>8}{'CPU s':>7}"
          f"{'CPU vs fxlower':>15}{'others CPU':>12}")
    for v in LOAD_VARIANTS:
        ts = times[v]
        print(f"{v:<22}{median(ts):>9.3f}{total / median(ts) / 1e9:>7.2f}"
              f"{median([a / b for a, b in zip(ts, times['raw read'])]):>8.3f}"
              f"{median([a / b for a, b in zip(ts, times['fxlower'])]):>11.3f}{min(ts):>8.3f}"
              f"{median(cpus[v]):>7.3f}{median([a / b for a, b in zip(cpus[v], cpus['fxlower'])]):>15.3f}"
              f"{median(others[v]):>12.0%}")
    print("(fxlower: load validates the manifest and headers, to_graph_module copies every tensor into owned "
          "memory; safetensors+clone: load_file then clone each tensor, the same work without validation)")
    print(flush=True)
    for p in ("fxlower", "safetensors", "torch"):
        rm(paths[p])
    return {"times": times}


# ================================================================================================ graph model


class Block(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.linear = nn.Linear(d, d)
        self.relu = nn.ReLU()

    def forward(self, x):
        return x + self.relu(self.linear(x))


class BlockStack(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.Sequential(*[Block() for _ in range(n)])
        with torch.no_grad():  # small weights, so that 2,000 residual blocks stay finite (for the sanity check)
            for b in self.blocks:
                b.linear.weight.mul_(0.05)
                b.linear.bias.mul_(0.05)

    def forward(self, x):
        return self.blocks(x)


def bench_graph(args) -> dict:
    print(f"== graph benchmark: {args.graph_blocks} blocks of [Linear(16,16), ReLU, add] ==", flush=True)
    torch.manual_seed(0)
    model = BlockStack(args.graph_blocks).eval()
    x = torch.randn(4, 16)
    d = args.dir
    art = os.path.join(d, "graph.fxl")
    gm0 = fx.symbolic_trace(model)
    nodes = len(gm0.graph.nodes)
    s = fxlower.export(gm0, art, (x,), overwrite=True)
    a = fxlower.load(art)
    rebuilt = a.to_graph_module()
    a.close()
    with torch.no_grad():
        err = (rebuilt(x) - model(x)).abs().max().item()
    print(f"graph: {nodes} fx nodes; artifact {s.nodes} nodes, {s.tensors} tensors, "
          f"manifest {os.path.getsize(os.path.join(art, 'manifest.msgpack')) / 1e6:.2f} MB; "
          f"rebuilt module max |diff| vs eager {err:.2e}", flush=True)

    # Each step: untimed setup, then the timed call; returns a Timed.
    def t_trace():
        with Timed() as tm:
            fx.symbolic_trace(model)
        return tm

    def t_export(with_inputs: bool):
        def f():
            gm = fx.symbolic_trace(model)  # a fresh, never-lifted module (untimed)
            out = os.path.join(d, "graph-round.fxl")
            rm(out)
            gc.collect()
            with Timed() as tm:
                fxlower.export(gm, out, (x,) if with_inputs else None, overwrite=True)
            rm(out)
            return tm
        return f

    def t_load():
        with Timed() as tm:
            art_obj = fxlower.load(art)
        art_obj.close()
        return tm

    def t_to_gm():
        art_obj = fxlower.load(art)
        gc.collect()
        with Timed() as tm:
            art_obj.to_graph_module()
        art_obj.close()
        return tm

    def t_load_to_gm():
        with Timed() as tm:
            art_obj = fxlower.load(art)
            art_obj.to_graph_module()
        art_obj.close()
        return tm

    split: dict[str, list[Timed]] = {"torch.export.export": [], "torch.export.save": []}

    def t_torch_export():
        out = os.path.join(d, "graph.pt2")
        with Timed() as tm:
            with Timed() as te:
                ep = torch.export.export(model, (x,))
            with Timed() as ts:
                torch.export.save(ep, out)
        rm(out)
        split["torch.export.export"].append(te)
        split["torch.export.save"].append(ts)
        return tm

    items = [("symbolic_trace", t_trace),
             ("fxlower.export", t_export(False)),
             ("fxlower.export (inputs)", t_export(True)),
             ("fxlower.load", t_load),
             ("to_graph_module", t_to_gm),
             ("load + to_graph_module", t_load_to_gm)]
    if not args.no_torch_export:
        items.append(("torch.export export+save", t_torch_export))
    for _, f in items:  # warm-up (imports, caches), untimed; torch.export's is a small model
        if f is not t_torch_export:
            f()
    if not args.no_torch_export:
        torch.export.save(torch.export.export(BlockStack(4).eval(), (x,)), os.path.join(d, "warm.pt2"))
        rm(os.path.join(d, "warm.pt2"))
    times: dict[str, list[float]] = {k: [] for k, _ in items}
    others: dict[str, list[float]] = {k: [] for k, _ in items}
    cpus: dict[str, list[float]] = {k: [] for k, _ in items}
    for r in range(args.rounds):
        order = items if r % 2 == 0 else items[::-1]
        for k, f in order:
            gc.collect()
            wait_quiet(args.quiet_wait)
            tm = f()
            times[k].append(tm.seconds)
            cpus[k].append(tm.cpu)
            others[k].append(tm.others)
        print(f"round {r + 1}/{args.rounds} ({'forward' if r % 2 == 0 else 'reversed'}): "
              + ", ".join(f"{k} {times[k][-1]:.2f}s" + (f" [others {others[k][-1]:.0%}]" if others[k][-1] > 0.1
                                                        else "") for k, _ in items), flush=True)
    for k, v in split.items():
        if v:
            times[k] = [t.seconds for t in v]
            cpus[k] = [t.cpu for t in v]
            others[k] = others["torch.export export+save"]

    noisy = [k for k in times if max(times[k]) > 1.5 * min(times[k])]
    if noisy:
        print(f"NOISY: slowest round > 1.5x fastest for {', '.join(noisy)} (use more --rounds)")
    trace, trace_cpu = times["symbolic_trace"], cpus["symbolic_trace"]
    print()
    print(f"graph: {args.graph_blocks} blocks, {nodes} nodes, {args.rounds} rounds, alternating order; medians "
          f"(ratios are medians of per-round ratios)")
    print(f"{'step':<27}{'median s':>10}{'min s':>8}{'per node us':>13}{'vs trace':>10}{'CPU s':>8}"
          f"{'CPU vs trace':>14}{'others CPU':>12}")
    for k, ts in times.items():
        vs = median([a / b for a, b in zip(ts, trace)])
        vs_cpu = median([a / b for a, b in zip(cpus[k], trace_cpu)])
        print(f"{k:<27}{median(ts):>10.3f}{min(ts):>8.3f}{median(ts) / nodes * 1e6:>13.1f}{vs:>10.2f}"
              f"{median(cpus[k]):>8.3f}{vs_cpu:>14.2f}{median(others[k]):>12.0%}")
    print("(CPU s: this process's CPU time, less sensitive than wall time to other processes on the machine)")
    for label, key in (("without inputs", "fxlower.export"), ("with inputs", "fxlower.export (inputs)")):
        r = median([a / b for a, b in zip(times[key], trace)])
        rc = median([a / b for a, b in zip(cpus[key], trace_cpu)])
        print(f"aim: exporting costs less than tracing (export/trace < 1), {label}: "
              f"{'MET' if r < 1 else 'MISSED'} ({r:.2f}x wall, {rc:.2f}x CPU)")
    print(flush=True)
    return {"times": times, "nodes": nodes}


def _dir_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def bench_core(args) -> dict:
    """The core view (format 1.2) of the graph model: torch.export.save vs fxlower.export of the same
    ExportedProgram (already Core ATen; torch.export and run_decompositions are untimed and shared)."""
    print(f"== core benchmark: {args.graph_blocks} blocks; torch.export.save vs fxlower.export(ep) ==", flush=True)
    torch.manual_seed(0)
    model = BlockStack(args.graph_blocks).eval()
    x = torch.randn(4, 16)
    d = args.dir
    with Timed() as te:
        ep = torch.export.export(model, (x,)).run_decompositions()
    nodes = len(ep.graph.nodes)
    print(f"torch.export.export + run_decompositions (untimed below): {te.seconds:.2f}s, {nodes} core nodes",
          flush=True)
    pt2, fxl = os.path.join(d, "core.pt2"), os.path.join(d, "core.fxl")

    def t_save():
        rm(pt2)
        gc.collect()
        with Timed() as tm:
            torch.export.save(ep, pt2)
        return tm

    def t_fxl():
        rm(fxl)
        gc.collect()
        with Timed() as tm:
            fxlower.export(ep, fxl, overwrite=True)
        return tm

    items = [("torch.export.save", t_save), ("fxlower.export (core)", t_fxl)]
    for _, f in items:
        f()  # warm-up
    times: dict[str, list[float]] = {k: [] for k, _ in items}
    for r in range(args.rounds):
        for k, f in (items if r % 2 == 0 else items[::-1]):
            wait_quiet(args.quiet_wait)
            times[k].append(f().seconds)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k, _ in items), flush=True)
    sizes = {"torch.export.save": _dir_bytes(pt2), "fxlower.export (core)": _dir_bytes(fxl)}
    manifest = os.path.getsize(os.path.join(fxl, "manifest.msgpack"))
    print(f"{'step':<24}{'median s':>10}{'min s':>8}{'bytes':>12}")
    for k, ts in times.items():
        print(f"{k:<24}{median(ts):>10.3f}{min(ts):>8.3f}{sizes[k]:>12}")
    ratio = median([a / b for a, b in zip(times["torch.export.save"], times["fxlower.export (core)"])])
    print(f"fxlower manifest {manifest} bytes; aim: core export >= 5x faster than torch.export.save: "
          f"{'MET' if ratio >= 5 else 'MISSED'} ({ratio:.1f}x, median of per-round ratios)", flush=True)
    rm(pt2)
    rm(fxl)
    return {"times": times, "bytes": sizes}


# ================================================================================================ profiling


def profile_call(label: str, fn, top: int) -> None:
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    dt = time.perf_counter() - t
    print(f"-- cProfile: {label} ({dt:.2f} s under the profiler) --")
    for sort in ("tottime", "cumulative"):
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.strip_dirs().sort_stats(sort).print_stats(top)
        text = s.getvalue()
        start = text.find("   ncalls")
        print(f"top {top} by {sort}:")
        print(text[start:].rstrip())
    print(flush=True)


def bench_profile(args) -> None:
    print("== profiles ==", flush=True)
    d = args.dir
    if args.only in (None, "graph"):
        model = BlockStack(args.graph_blocks).eval()
        x = torch.randn(4, 16)
        out = os.path.join(d, "prof-graph.fxl")
        fxlower.export(fx.symbolic_trace(BlockStack(4)), out, overwrite=True)  # warm-up
        for with_inputs in (False, True):
            gm = fx.symbolic_trace(model)
            rm(out)
            gc.collect()
            wait_quiet(args.quiet_wait)
            profile_call(f"fxlower.export, {args.graph_blocks} blocks, inputs={with_inputs}",
                         lambda: fxlower.export(gm, out, (x,) if with_inputs else None, overwrite=True),
                         args.profile_top)
        rm(out)
        fxlower.export(fx.symbolic_trace(model), out, overwrite=True)
        profile_call(f"fxlower.load, {args.graph_blocks} blocks", lambda: fxlower.load(out).close(),
                     args.profile_top)
        a = fxlower.load(out)
        profile_call(f"Artifact.to_graph_module, {args.graph_blocks} blocks", a.to_graph_module, args.profile_top)
        a.close()
        rm(out)
    if args.only in (None, "weights"):
        gm = build_weights_model(args)
        out = os.path.join(d, "prof-weights.fxl")
        total = tensor_nbytes(state_dict_of(gm))[0]
        wait_quiet(args.quiet_wait)
        warm_memory(int(args.warm_factor * total), args.dir, args.warm)
        profile_call("fxlower.export, weights (main thread only; hashing runs on another thread)",
                     lambda: fxlower.export(gm, out, overwrite=True), args.profile_top)
        rm(out)
        weights_timeline(args, gm, out)


def weights_timeline(args, gm: fx.GraphModule, out: str) -> None:
    """Where fxlower.export's wall time goes on the weights model: wraps (in this process only) the writer's
    write, hash and fsync calls to time them, and compares with the raw write split into write() and fsync()."""
    import hashlib

    from fxlower.io import tensorfile, writing
    sd = state_dict_of(gm)
    total = tensor_nbytes(sd)[0]
    base = out
    t = time.perf_counter()
    for v in sd.values():
        hashlib.sha256(memoryview(v.reshape(-1).view(torch.uint8).numpy())).hexdigest()
    sha_s = time.perf_counter() - t
    print(f"-- weights export timeline ({args.rounds} runs; seconds from the start of export) --")
    print(f"SHA-256 of all {total / 1e9:.2f} GB on one thread, alone: {sha_s:.2f} s ({total / sha_s / 1e9:.2f} GB/s)")
    events: list[tuple[str, float, float]] = []
    t00 = [0.0]
    originals = {}

    def wrap(mod, name: str, label: str) -> None:
        f = getattr(mod, name, None)
        if f is None:
            return
        originals[(mod, name)] = f

        def g(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                events.append((label, t0 - t00[0], time.perf_counter() - t00[0]))
        setattr(mod, name, g)

    wrap(tensorfile, "_sha256", "hash (2nd thread)")
    wrap(tensorfile, "_write_all", "write()")
    try:
        for i in range(args.rounds):
            out = f"{base}-{i}.fxl"
            os.sync()
            gc.collect()
            wait_quiet(args.quiet_wait)
            warm_memory(int(args.warm_factor * total), args.dir, args.warm)
            events.clear()
            real_fsync = os.fsync

            def fsync(fd, _f=real_fsync):
                t0 = time.perf_counter()
                try:
                    return _f(fd)
                finally:
                    events.append(("fsync", t0 - t00[0], time.perf_counter() - t00[0]))
            writing.os.fsync = fsync  # writing.os is the os module: restored below
            t00[0] = time.perf_counter()
            try:
                fxlower.export(gm, out, overwrite=True)
            finally:
                writing.os.fsync = real_fsync
            wall = time.perf_counter() - t00[0]
            os.sync()
            rm(out)
            agg: dict[str, list[float]] = {}
            for lab, a, b in events:
                e = agg.setdefault(lab, [0.0, a, b])
                e[0] += b - a
                e[1] = min(e[1], a)
                e[2] = max(e[2], b)
            # the same tensors written raw (no header, no hashing), split into write() and fsync
            raw_out = f"{base}-{i}.raw"
            os.sync()
            wait_quiet(args.quiet_wait)
            warm_memory(int(args.warm_factor * total), args.dir, args.warm)
            t0 = time.perf_counter()
            fd = os.open(raw_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            for v in sd.values():
                mv = memoryview(v.reshape(-1).view(torch.uint8).numpy()).cast("B")
                pos = 0
                while pos < len(mv):
                    pos += os.write(fd, mv[pos:pos + RAW_CHUNK])
            t1 = time.perf_counter()
            os.fsync(fd)
            t2 = time.perf_counter()
            os.close(fd)
            os.sync()
            rm(raw_out)
            print(f"fxlower total {wall:.2f}: " + "; ".join(
                f"{k} busy {v[0]:.2f} from {v[1]:.2f} to {v[2]:.2f}" for k, v in agg.items())
                + f"  | raw: write() {t1 - t0:.2f} + fsync {t2 - t1:.2f} = {t2 - t0:.2f}", flush=True)
    finally:
        for (mod, name), f in originals.items():
            setattr(mod, name, f)


# ================================================================================================ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="output directory (default: a new temp dir under build/)")
    ap.add_argument("--only", choices=["weights", "load", "graph", "core"], default=None)
    ap.add_argument("--width", type=int, default=8192, help="weights model width (default 8192)")
    ap.add_argument("--layers", type=int, default=3,
                    help="square width x width layers in the weights model (default 3: 1.07 GB in all)")
    ap.add_argument("--graph-blocks", type=int, default=2000)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    ap.add_argument("--no-torch-export", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also print cProfile reports of fxlower")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--keep", action="store_true", help="keep the output directory")
    ap.add_argument("--warm", choices=["cache", "anon", "none"], default="cache",
                    help="how to touch memory before each timed write (default cache: write and delete an "
                         "unsynced scratch file; see warm_memory)")
    ap.add_argument("--warm-factor", type=float, default=1.2,
                    help="touch this many times the model's bytes before each timed write (default 1.2)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each measurement wait up to this many seconds for other processes to leave "
                         "the CPUs idle (default 30)")
    ap.add_argument("--one", choices=WEIGHT_VARIANTS + ["control"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        one_variant_memory(args)
        return

    own_dir = args.dir is None
    args.dir = os.path.abspath(args.dir) if args.dir else default_dir()
    os.makedirs(args.dir, exist_ok=True)
    print(f"torch {torch.__version__}, fxlower {fxlower.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus, {args.rounds} rounds", flush=True)
    try:
        if args.only in (None, "weights"):
            bench_weights(args)
        if args.only in (None, "load"):
            bench_load(args)
        if args.only in (None, "graph"):
            bench_graph(args)
        if args.only in (None, "core"):
            bench_core(args)
        if args.profile:
            bench_profile(args)
    finally:
        if own_dir and not args.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
