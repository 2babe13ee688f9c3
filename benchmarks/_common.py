"""What several benchmarks share: the repository root on ``sys.path``, PyTorch and ``fxlower-run`` timing (medians
in ms), and Linux ``/proc`` memory figures. Imports no torch at load time (bench_scale's parent process stays
without it)."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: fxlower-run's timing line (``--repeat``): the median of its timed runs.
MEDIAN = re.compile(r"^time: \d+ run\(s\), \d+ thread\(s\): median ([0-9.]+) ms", re.M)


def on_path(*dirs: Path | str) -> None:
    """Insert each of ``dirs`` at the front of ``sys.path`` in turn (the last ends first), unless already there: e.g.
    the repository root and its tests (the model zoo)."""
    for p in dirs:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def time_torch(module, inputs, repeat: int, warmup: int = 3) -> float:
    """Median ms of ``repeat`` calls of ``module(*inputs)`` under ``torch.no_grad()``, after ``warmup`` calls."""
    import torch
    with torch.no_grad():
        for _ in range(warmup):
            module(*inputs)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            module(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_fxlower(binary: Path, art: Path, threads: int, repeat: int, view: str = "module") -> float:
    """fxlower-run's own median ms of ``repeat`` executions of ``art``'s ``view`` on ``threads`` threads."""
    proc = subprocess.run([str(binary), str(art), "--view", view, "--threads", str(threads), "--repeat", str(repeat),
                           "--quiet"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"fxlower-run failed (exit {proc.returncode}): {proc.stderr.strip()}")
    m = MEDIAN.search(proc.stdout)
    if not m:
        raise RuntimeError(f"no timing in fxlower-run's output:\n{proc.stdout}")
    return float(m.group(1))


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``); KeyError if absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def write_proc(path: str, text: str) -> bool:
    """Write ``text`` to a ``/proc`` control file; False if not permitted or not there."""
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    return write_proc("/proc/self/clear_refs", "5")
