"""Hostile inputs for what format 1.3 added (docs/format.md sections 2.1 Placement, 5.1, 5.2; RELIABILITY.md):
placements with very many mesh dimensions, artifacts with thousands of shards, the open-file limit, and
``weights_from`` sources that are not regular files. Each case is checked on the Python loader and, where it is
an artifact, on the C++ reader (fxlower-inspect next to $FXLOWER_RUN, default cpp/build)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import torch.nn as nn

import fxlower

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests" / "conformance" / "v1.3" / "valid" / "placements"
RUN = Path(os.environ.get("FXLOWER_RUN", str(ROOT / "cpp" / "build" / "fxlower-run")))
INSPECT = RUN.parent / "fxlower-inspect"


def _mc():
    spec = importlib.util.spec_from_file_location("make_conformance", ROOT / "scripts" / "make_conformance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MC = _mc()


def crafted(tmp_path: Path, name: str, fn) -> Path:
    """valid/placements with ``fn(manifest, dir)`` applied and the digest recomputed (so only ``fn``'s fault)."""
    d = tmp_path / name
    shutil.copytree(BASE, d)
    m = MC.read_m(d)
    fn(m, d)
    m["digest"] = MC.digest(m)
    MC.write_m(d, m)
    return d


def inspect(path: Path) -> tuple[int, str, float]:
    """fxlower-inspect on ``path``: return code, stderr, and the child's CPU seconds."""
    if not INSPECT.is_file():
        pytest.fail(f"{INSPECT} does not exist: build cpp/build, or point $FXLOWER_RUN at its fxlower-run",
                    pytrace=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([str(INSPECT), str(path)], capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.returncode, r.stderr, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def py_load_cpu(path: Path) -> float:
    t = time.process_time()
    fxlower.load(path).close()
    return time.process_time() - t


# ------------------------------------------------------------------------------------------------ mesh dimensions

N_DIMS = 100_000


def _many_dims(names):
    def fn(m, d):
        p = MC.tensor(m, "b.weight")["placement"]
        p["mesh"] = [1] * N_DIMS  # 1 device: within the 65536 cap however many dimensions
        p["dims"] = [{"kind": "replicate", "dim": -1}] * N_DIMS
        p["mesh_dim_names"] = names
    return fn


@pytest.fixture(scope="module")
def many_dims(tmp_path_factory) -> Path:
    return crafted(tmp_path_factory.mktemp("dims"), "many", _many_dims([f"n{i}" for i in range(N_DIMS)]))


def test_many_mesh_dimensions_are_checked_in_linear_time_python(many_dims):
    # 100,000 distinct names (a 3 MB manifest): the repeated-name check was a scan of the earlier names per name,
    # 5e9 comparisons (minutes); decoding and checking them is a few seconds.
    assert py_load_cpu(many_dims) < 25
    art = fxlower.load(many_dims)
    assert len(art.tensors["b.weight"].placement.mesh) == N_DIMS
    assert art.tensor("b.weight", shard=(0, 1)).shape == (2, 8)


def test_many_mesh_dimensions_are_checked_in_linear_time_cpp(many_dims):
    # the same scan in C++: ~12 s CPU for 100,000 names; a hash set takes milliseconds
    rc, err, cpu = inspect(many_dims)
    assert rc == 0, err
    assert cpu < 2


def test_a_name_repeated_at_the_end_of_many_is_still_found(tmp_path):
    names = [f"n{i}" for i in range(N_DIMS - 1)] + ["n0"]
    d = crafted(tmp_path, "repeat", _many_dims(names))
    with pytest.raises(fxlower.FormatError) as e:
        fxlower.load(d)
    assert e.value.code == "tensor.placement" and "'n0' appears twice" in str(e.value)
    assert f"mesh_dim_names[{N_DIMS - 1}]" in str(e.value)
    rc, err, _ = inspect(d)
    assert rc == 1 and "[tensor.placement]" in err and "appears twice" in err, err


# ------------------------------------------------------------------------------------------------ many shards

N_SHARDS, PER_SHARD = 5000, 10


def _add_shards(n: int, per: int):
    def fn(m, d):
        for i in range(n):
            path = f"x{i:05d}.safetensors"
            tensors = {}
            for j in range(per):
                key = f"zz.{i:05d}.{j:02d}"
                data = bytes([i % 251, j, 0, 0])
                tensors[key] = ("F32", [1], data)
                m["tensors"].append({"name": key, "dtype": "F32", "shape": [1], "file": path, "key": key,
                                     "sha256": hashlib.sha256(data).hexdigest(), "kind": "buffer",
                                     "requires_grad": False, "persistent": True, "placement": None})
            MC.st_write(d / path, tensors)
            m["files"].append({"path": path, "role": "weights"})
        m["tensors"].sort(key=lambda t: t["name"])
    return fn


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    return crafted(tmp_path_factory.mktemp("shards"), "many", _add_shards(N_SHARDS, PER_SHARD))


def test_many_shards_load_in_linear_time_python(many_shards):
    # 5000 files x 50,000 tensors: each file's entries were found by a scan of the whole table (2.5e8 steps, twice)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < N_SHARDS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N_SHARDS + 100), hard))
    try:
        assert py_load_cpu(many_shards) < 12
        with fxlower.load(many_shards, verify=True) as art:
            assert bytes(art.stored_bytes("zz.04999.09")) == bytes([4999 % 251, 9, 0, 0])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_many_shards_load_in_linear_time_cpp(many_shards):
    # Each file's entries, and each entry's file, were found by scans (files x tensors): 1.7 s CPU here, 0.2 s now.
    rc, err, cpu = inspect(many_shards)
    assert rc == 0, err
    assert cpu < 1.0


def test_more_shards_than_open_files_is_a_clear_os_error_not_a_missing_file(tmp_path):
    # The Python loader keeps one descriptor per tensor file; past the limit it says so (the file exists).
    d = crafted(tmp_path, "shards", _add_shards(300, 1))
    code = ("import resource, fxlower\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            f"try:\n    fxlower.load({str(d)!r})\n"
            "except OSError as e:\n    print('OSError', e.errno, e)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = r.stdout
    assert out.startswith("OSError 24 "), out + r.stderr
    assert "cannot open: Too many open files" in out and "one descriptor per tensor file" in out
    assert "ulimit -n" in out and "artifact.missing" not in out
    # The C++ reader maps each file and closes its descriptor: the same limit does not stop it.
    rc, err, _ = inspect(d)
    assert rc == 0, err


# ------------------------------------------------------------------------------------------------ weights_from

class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


def _alarm(signum, frame):
    raise TimeoutError("blocked: opening a FIFO waits for a writer")


def _export_from(src, tmp_path):
    """The ExportError of exporting a meta Lin from ``src``; a blocked open fails the test after 20 s."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        with pytest.raises(fxlower.ExportError) as e:
            fxlower.export(Lin().to("meta"), tmp_path / "out.fxl", weights_from=src)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not (tmp_path / "out.fxl").exists()
    return str(e.value)


def test_weights_from_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    assert f"the checkpoint file {fifo} is a FIFO" in _export_from(fifo, tmp_path)


def test_weights_from_an_index_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.safetensors.index.json"
    os.mkfifo(fifo)
    msg = _export_from(fifo, tmp_path)
    assert f"the checkpoint index {fifo} is a FIFO" in msg


def test_an_index_naming_a_fifo_or_a_directory_says_what_it_is(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    os.mkfifo(tmp_path / "a.safetensors")
    index.write_text('{"metadata": {}, "weight_map": {"fc.weight": "a.safetensors", "fc.bias": "a.safetensors"}}')
    assert f"the checkpoint file {tmp_path / 'a.safetensors'} is a FIFO" in _export_from(index, tmp_path)
    os.unlink(tmp_path / "a.safetensors")
    os.mkdir(tmp_path / "a.safetensors")
    assert f"the checkpoint file {tmp_path / 'a.safetensors'} is a directory" in _export_from(index, tmp_path)


# ------------------------------------------------------------------------------------------------ slice maths

def test_a_slice_of_a_dimension_near_int64_max_does_not_overflow(tmp_path):
    # I8[0, 2^63 - 1] holds 0 bytes and is valid; Shard(1) over mesh [65536]: s = ceil((2^63 - 1) / 65536) = 2^47,
    # so rank 65535 holds columns [65535 * 2^47, 2^63 - 1), 2^47 - 1 of them ((c + 1) * s = 2^63 overflowed int64).
    big = 2 ** 63 - 1

    def fn(m, d):
        MC.st_write(d / "big.safetensors", {"zz.big": ("I8", [0, big], b"")})
        m["files"].append({"path": "big.safetensors", "role": "weights"})
        m["tensors"].append({"name": "zz.big", "dtype": "I8", "shape": [0, big], "file": "big.safetensors",
                             "key": "zz.big", "sha256": hashlib.sha256(b"").hexdigest(), "kind": "buffer",
                             "requires_grad": False, "persistent": True,
                             "placement": {"mesh": [65536], "dims": [{"kind": "shard", "dim": 1}],
                                           "mesh_dim_names": []}})
    d = crafted(tmp_path, "big", fn)
    with fxlower.load(d, verify=True) as art:
        assert tuple(art.tensor("zz.big", shard=(0, 65536)).shape) == (0, 2 ** 47)
        assert tuple(art.tensor("zz.big", shard=(65535, 65536)).shape) == (0, 2 ** 47 - 1)
    tool = RUN.parent / "fxlower-shard"
    for rank, lo, hi in [(0, 0, 2 ** 47), (65534, 65534 * 2 ** 47, 65535 * 2 ** 47), (65535, 65535 * 2 ** 47, big)]:
        r = subprocess.run([str(tool), str(d), "zz.big", str(rank), "65536", str(tmp_path / "out.bin")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"I8 [0, {hi - lo}] ranges [0, 0) [{lo}, {hi})"), r.stdout


@pytest.mark.parametrize("mesh, dims, needle", [
    ([2], [("shard", -1)], "shard dim -1 is outside [0, 2)"),  # was read as the last dimension, [(0, 10), (0, 2)]
    ([2], [("shard", 5)], "shard dim 5 is outside [0, 2)"),  # was an IndexError
    ([-1, -1], [("shard", 0), ("shard", 0)], "each size is an int in [1, 65536]"),  # was ranges (-10, -10)
    ([2, 2], [("shard", 0)], "dims has 1 entries for a mesh of 2 dimensions"),  # was half applied
])
def test_shard_ranges_refuses_a_hand_built_placement_a_loaded_one_cannot_be(mesh, dims, needle):
    from fxlower.format.schema import MeshDim, Placement
    from fxlower.io.mapping import shard_ranges
    with pytest.raises(ValueError) as e:
        shard_ranges([10, 4], Placement(mesh=mesh, dims=[MeshDim(k, d) for k, d in dims]), 0)
    assert needle in str(e.value)


def test_messages_about_a_mesh_of_many_dimensions_stay_short(tmp_path, many_dims):
    # A mesh is printed cut at 80 characters: 100,000 dimensions are not a 300 KB message.
    with fxlower.load(many_dims) as art:
        with pytest.raises(ValueError) as e:
            art.tensor("b.weight", shard=(0, 2))
        assert "world must be 1" in str(e.value) and len(str(e.value)) < 300
    d = crafted(tmp_path, "over", lambda m, d: MC.tensor(m, "b.weight")["placement"].update(
        mesh=[1] * 50_000 + [65537], dims=[{"kind": "replicate", "dim": -1}] * 50_001, mesh_dim_names=[]))
    with pytest.raises(fxlower.FormatError) as e:
        fxlower.load(d)
    assert e.value.code == "tensor.placement" and "more than 65536 devices" in str(e.value)
    assert len(str(e.value)) < 400
