"""Format 1.3 sharded weights and placements (docs/format.md sections 5.1 and 5.2): the writer's split and names,
determinism, round trips in Python and in the C++ runtime, tied weights across shards, ``Artifact.tensor(shard=)``
and the C++ ``read_shard`` against ``torch.chunk``, and the errors of ``export(max_shard_bytes=, placements=)``.

Expected shard layouts are worked out by hand from the rule (comments give the byte counts); slices come from
``torch.chunk`` of the original tensors.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import subprocess
from pathlib import Path

import msgpack
import pytest
import torch
from hypothesis import given, settings, strategies as st
import torch.nn as nn
from safetensors.torch import load_file
from torch.distributed.tensor import Partial, Replicate, Shard

import fxlower
from fxlower.io.mapping import shard_ranges
from fxlower.format.schema import MeshDim, Placement
from fxlower.io.tensorfile import plan_files, write_file_plan

REPO = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("FXLOWER_RUN", str(REPO / "cpp" / "build" / "fxlower-run")))
#: The test tool cpp/tests/shard.cpp, built next to fxlower-run.
SHARD_TOOL = RUN.parent / "fxlower-shard"


def shard(i: int, n: int) -> str:
    return f"weights-{i:05d}-of-{n:05d}.safetensors"


def manifest(path: Path) -> dict:
    return msgpack.unpackb((path / "manifest.msgpack").read_bytes())


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


# Mlp's F32 tensors in file order (item size, then key): 0.bias 64 bytes, 0.weight 512, 2.bias 64, 2.weight 1024,
# 4.bias 16, 4.weight 256. With max_shard_bytes=600: 0.bias + 0.weight = 576 (fits); 2.bias would make 640 -> shard
# 2; 2.weight would make 1088 -> shard 3 (alone, over the limit); 4.bias would make 1040 -> shard 4; 4.weight 272.
MLP_LAYOUT = {"0.bias": 1, "0.weight": 1, "2.bias": 2, "2.weight": 3, "4.bias": 4, "4.weight": 4}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, nn.Module, torch.Tensor]:
    path = tmp_path_factory.mktemp("shards") / "mlp.fxl"
    model = mlp()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    s = fxlower.export(model, path, (x,), golden=True, max_shard_bytes=600)
    assert s.weights_files == 4
    return path, model, x


def test_sharded_export_names_and_lists_the_shards(sharded):
    path, model, _ = sharded
    assert sorted(os.listdir(path)) == ["golden.safetensors", "manifest.msgpack"] + [shard(i, 4) for i in range(1, 5)]
    m = manifest(path)
    assert m["format_version"] == [1, 3]
    assert m["files"] == [{"path": "golden.safetensors", "role": "golden"}] + [
        {"path": shard(i, 4), "role": "weights"} for i in range(1, 5)]
    assert {t["name"]: t["file"] for t in m["tensors"] if t["kind"] != "golden"} == {
        k: shard(i, 4) for k, i in MLP_LAYOUT.items()}
    state = model.state_dict()
    for i in range(1, 5):
        stored = load_file(str(path / shard(i, 4)))
        assert sorted(stored) == sorted(k for k, j in MLP_LAYOUT.items() if j == i)
        for k, t in stored.items():
            assert torch.equal(t, state[k])


def test_sharded_export_round_trips_bit_exact(sharded):
    path, model, x = sharded
    expected = model(x)  # default grad mode
    with fxlower.load(path, verify=True) as art:
        for copy in (True, False):
            gm = art.to_graph_module(copy=copy)
            got = gm(x)
            assert got.dtype == expected.dtype and torch.equal(got.detach(), expected.detach())
            with torch.no_grad():
                assert torch.equal(gm(x), expected.detach())
            for k, t in model.state_dict().items():
                assert torch.equal(gm.state_dict()[k], t)


def test_the_split_of_the_spec_example_byte_for_byte(tmp_path):
    """docs/format.md section 5.1's example: a F32[4], b F32[2], c F32[3], d F16[8] under max_shard_bytes=24."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
            self.b = nn.Parameter(torch.tensor([5.0, 6.0]))
            self.c = nn.Parameter(torch.tensor([7.0, 8.0, 9.0]))
            self.d = nn.Parameter(torch.arange(8, dtype=torch.float16))

        def forward(self, x):
            return x * self.a.sum() + self.b.sum() + self.c.sum() + self.d.float().sum()

    fxlower.export(M(), tmp_path / "m", max_shard_bytes=24)
    f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)  # noqa: E731
    header1 = (b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
               b'"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}')
    header2 = b'{"c":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    header3 = b'{"d":{"dtype":"F16","shape":[8],"data_offsets":[0,16]}}'

    def padded(h: bytes) -> bytes:
        h += b" " * ((-(8 + len(h))) % 8)
        return struct.pack("<Q", len(h)) + h
    assert (tmp_path / "m" / shard(1, 3)).read_bytes() == padded(header1) + f32(1, 2, 3, 4) + f32(5, 6)
    assert (tmp_path / "m" / shard(2, 3)).read_bytes() == padded(header2) + f32(7, 8, 9)
    assert (tmp_path / "m" / shard(3, 3)).read_bytes() == padded(header3) + struct.pack("<8e", *range(8))
    art = fxlower.load(tmp_path / "m", verify=True)
    assert [t.file for t in art.manifest.tensors] == [shard(1, 3), shard(1, 3), shard(2, 3), shard(3, 3)]


def test_without_a_limit_or_when_all_fits_there_is_one_weights_file(tmp_path):
    for limit in (None, 1936):  # 1936 = all of Mlp's data bytes
        p = tmp_path / f"m{limit}"
        s = fxlower.export(mlp(), p, max_shard_bytes=limit)
        assert sorted(os.listdir(p)) == ["manifest.msgpack", "weights.safetensors"] and s.weights_files == 1
    s = fxlower.export(mlp(), tmp_path / "m1935", max_shard_bytes=1935)
    assert s.weights_files == 2  # 4.weight (256 bytes, the last in file order) no longer fits


def test_same_model_and_options_give_the_same_bytes(tmp_path):
    x = torch.ones(2, 8)
    kw = dict(golden=True, max_shard_bytes=600, placements={"2.weight": ((2,), [Shard(1)])})
    fxlower.export(mlp(), tmp_path / "a", (x,), **kw)
    fxlower.export(mlp(), tmp_path / "b", (x,), **kw)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) and len(names) == 6
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n


def test_tied_weights_across_shards_stay_one_key(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(4, 6, bias=False)  # weight [6, 4], 96 bytes
            self.mid = nn.Linear(6, 6)               # bias 24, weight 144
            self.out = nn.Linear(6, 4, bias=False)
            self.out.weight = nn.Parameter(torch.empty(4, 6))
            self.head = nn.Linear(4, 6, bias=False)
            self.head.weight = self.emb.weight       # tied

        def forward(self, x):
            return self.head(self.out(self.mid(self.emb(x))))

    torch.manual_seed(3)
    model = Tied().eval()
    # keys in file order: emb.weight 96, mid.bias 24, mid.weight 144, out.weight 96 (head.weight aliases emb.weight)
    # limit 100: emb.weight | mid.bias (24) | mid.weight (alone) | out.weight
    x = torch.randn(2, 4)
    fxlower.export(model, tmp_path / "t", (x,), golden=True, max_shard_bytes=100)
    m = manifest(tmp_path / "t")
    entries = {t["name"]: (t["file"], t["key"]) for t in m["tensors"] if t["kind"] != "golden"}
    assert entries == {"emb.weight": (shard(1, 4), "emb.weight"), "head.weight": (shard(1, 4), "emb.weight"),
                       "mid.bias": (shard(2, 4), "mid.bias"), "mid.weight": (shard(3, 4), "mid.weight"),
                       "out.weight": (shard(4, 4), "out.weight")}
    assert list(load_file(str(tmp_path / "t" / shard(1, 4)))) == ["emb.weight"]
    gm = fxlower.load(tmp_path / "t", verify=True).to_graph_module()
    assert gm.head.weight is gm.emb.weight
    assert torch.equal(gm(x).detach(), model(x).detach())


def test_verify_names_the_shard_with_a_flipped_byte(sharded, tmp_path):
    import shutil
    path, _, _ = sharded
    copy = tmp_path / "c"
    shutil.copytree(path, copy)
    target = copy / shard(3, 4)
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1
    target.write_bytes(bytes(raw))
    with pytest.raises(fxlower.FormatError) as info:
        fxlower.load(copy, verify=True)
    assert info.value.code == "tensor.hash" and shard(3, 4) in str(info.value) and "'2.weight'" in str(info.value)


# ------------------------------------------------------------------------------------------------ placements

PLACEMENTS = {"0.weight": ((4,), [Shard(0)]),                         # [16, 8]: 4 rows each
              "2.weight": ((2, 3), [Shard(1), Shard(0)], ("dp", "tp")),  # [16, 16]: cols by 2, rows by 3 (6, 6, 4)
              "4.weight": ((3,), [Shard(0)]),                         # [4, 16]: rows 2, 2, 0
              "2.bias": ((2, 2), [Replicate(), Shard(-1)])}           # [16]: Shard(-1) is dim 0


@pytest.fixture(scope="module")
def placed(tmp_path_factory) -> tuple[Path, nn.Module]:
    path = tmp_path_factory.mktemp("placed") / "mlp.fxl"
    model = mlp()
    fxlower.export(model, path, (torch.ones(1, 8),), golden=True, max_shard_bytes=600, placements=PLACEMENTS)
    return path, model


def test_placements_are_recorded(placed):
    path, _ = placed
    m = manifest(path)
    got = {t["name"]: t["placement"] for t in m["tensors"]}
    assert got == {
        "0.bias": None, "4.bias": None, "golden/inputs/0/0": None, "golden/outputs/0": None,
        "0.weight": {"mesh": [4], "dims": [{"kind": "shard", "dim": 0}], "mesh_dim_names": []},
        "2.weight": {"mesh": [2, 3], "dims": [{"kind": "shard", "dim": 1}, {"kind": "shard", "dim": 0}],
                     "mesh_dim_names": ["dp", "tp"]},
        "4.weight": {"mesh": [3], "dims": [{"kind": "shard", "dim": 0}], "mesh_dim_names": []},
        "2.bias": {"mesh": [2, 2], "dims": [{"kind": "replicate", "dim": -1}, {"kind": "shard", "dim": 0}],
                   "mesh_dim_names": []}}


def expected_slice(w: torch.Tensor, name: str, rank: int) -> torch.Tensor:
    """The slice from torch.chunk, per the placements above."""
    if name == "0.weight":
        return torch.chunk(w, 4, 0)[rank]
    if name == "2.weight":
        dp, tp = divmod(rank, 3)
        return torch.chunk(torch.chunk(w, 2, 1)[dp], 3, 0)[tp]
    if name == "4.weight":
        parts = torch.chunk(w, 3, 0)  # 4 rows over 3: chunks of 2, 2, and torch.chunk gives only 2
        return parts[rank] if rank < len(parts) else w[4:4]
    if name == "2.bias":
        return torch.chunk(w, 2, 0)[rank % 2]
    return w


WORLD = {"0.weight": 4, "2.weight": 6, "4.weight": 3, "2.bias": 4, "0.bias": 5}


@pytest.mark.parametrize("name", sorted(WORLD))
def test_per_rank_slices_equal_torch_chunk(placed, name):
    path, model = placed
    w = model.state_dict()[name]
    with fxlower.load(path) as art:
        for rank in range(WORLD[name]):
            got = art.tensor(name, shard=(rank, WORLD[name]))
            exp = expected_slice(w, name, rank)
            assert got.shape == exp.shape and torch.equal(got, exp), (name, rank)


def test_a_slice_reads_only_its_bytes(placed, monkeypatch):
    path, model = placed
    art = fxlower.load(path)
    real = os.preadv
    read = []

    def counting(fd, bufs, offset):
        n = real(fd, bufs, offset)
        read.append(n)
        return n
    monkeypatch.setattr(os, "preadv", counting)
    got = art.tensor("2.weight", shard=(4, 6))  # rows [6, 12), columns [8, 16): 6 runs of 8 floats
    assert read == [32] * 6
    assert torch.equal(got, model.state_dict()["2.weight"][6:12, 8:16])


def test_shard_errors(placed):
    path, _ = placed
    art = fxlower.load(path)
    with pytest.raises(ValueError) as info:
        art.tensor("2.weight", shard=(0, 4))
    assert "world=4" in str(info.value) and "6 devices" in str(info.value) and "[2, 3]" in str(info.value)
    for bad in ((6, 6), (-1, 6)):
        with pytest.raises(ValueError, match=r"rank must be in \[0, world\)"):
            art.tensor("2.weight", shard=bad)
    with pytest.raises(ValueError, match="two ints"):
        art.tensor("2.weight", shard=(1.0, 6))
    with pytest.raises(KeyError):
        art.tensor("nope", shard=(0, 1))


@pytest.mark.parametrize("placements,needles", [
    ({"nope.weight": ((2,), [Shard(0)])}, ["['nope.weight']", "0.bias"]),
    ({"0.weight": ((2,), [Partial()])}, ["placements['0.weight']", "Partial", "Replicate()"]),
    ({"0.weight": ((2,), [Shard(2)])}, ["Shard(2)", "rank 2"]),
    ({"0.weight": ((2,), [Shard(-3)])}, ["Shard(-3)", "rank 2"]),
    ({"0.weight": ((2, 2), [Shard(0)])}, ["one placement per mesh dimension", "(2, 2)"]),
    ({"0.weight": ((0,), [Shard(0)])}, ["positive ints"]),
    ({"0.weight": ((256, 257), [Shard(0), Replicate()])}, ["65792 devices", "65536"]),
    ({"0.weight": ((2, 2), [Shard(0), Shard(1)], ("tp", "tp"))}, ["distinct identifiers"]),
    ({"0.weight": [Shard(0)]}, ["(mesh_shape, "]),
])
def test_bad_placements_are_value_errors(tmp_path, placements, needles):
    with pytest.raises(ValueError) as info:
        fxlower.export(mlp(), tmp_path / "m", placements=placements)
    for n in needles:
        assert n in str(info.value), (n, str(info.value))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "1"])
def test_bad_max_shard_bytes(tmp_path, limit):
    with pytest.raises(ValueError, match="max_shard_bytes must be a positive int"):
        fxlower.export(mlp(), tmp_path / "m", max_shard_bytes=limit)


# ------------------------------------------------------------------------------------------------ writer seam

class _Bytes:
    """A tensor source (tensorfile.TensorSource) that is not a tensor: bytes written with pwrite."""

    def __init__(self, data: bytes):
        self.data = data
        self.nbytes = len(data)

    def write_into(self, fd: int, offset: int) -> str:
        os.pwrite(fd, self.data, offset)
        return hashlib.sha256(self.data).hexdigest()


def test_write_file_plan_takes_tensors_and_sources(tmp_path):
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([7, 8], dtype=torch.int16)
    (plan,) = plan_files([("a", "F32", (2, 3)), ("b", "I16", (2,))], "w.safetensors")
    fd = os.open(tmp_path / "w.safetensors", os.O_WRONLY | os.O_CREAT)
    try:
        hashes = write_file_plan(fd, plan, lambda s: a if s.key == "a" else _Bytes(struct.pack("<2h", 7, 8)))
    finally:
        os.close(fd)
    stored = load_file(str(tmp_path / "w.safetensors"))  # read back by the safetensors library
    assert torch.equal(stored["a"], a) and torch.equal(stored["b"], b)
    assert hashes == {"a": hashlib.sha256(struct.pack("<6f", *range(6))).hexdigest(),
                      "b": hashlib.sha256(struct.pack("<2h", 7, 8)).hexdigest()}


def test_write_file_plan_rejects_a_value_that_does_not_fit_its_slot(tmp_path):
    (plan,) = plan_files([("a", "F32", (2, 3))], "w.safetensors")
    for value, needle in [(torch.zeros(3, 2), "F32[3, 2] but its slot"), (_Bytes(b"x" * 20), "gives 20")]:
        fd = os.open(tmp_path / "w.safetensors", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            with pytest.raises(fxlower.ExportError, match=needle.replace("[", r"\[").replace("]", r"\]")):
                write_file_plan(fd, plan, lambda s: value)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------------ C++

def _binary(p: Path) -> Path:
    if not p.is_file():
        pytest.fail(f"{p} does not exist: build cpp/build (cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release && "
                    f"cmake --build cpp/build -j2), or point $FXLOWER_RUN at its fxlower-run", pytrace=False)
    return p


def test_cpp_runtime_runs_a_sharded_artifact(sharded):
    path, _, _ = sharded
    r = subprocess.run([str(_binary(RUN)), "--check", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.endswith("check: PASS\n"), r.stdout + r.stderr


@pytest.mark.parametrize("name", sorted(WORLD))
def test_cpp_read_shard_equals_torch_chunk(placed, name, tmp_path):
    path, model = placed
    w = model.state_dict()[name]
    tool = _binary(SHARD_TOOL)
    for rank in range(WORLD[name]):
        out = tmp_path / f"{rank}.bin"
        r = subprocess.run([str(tool), str(path), name, str(rank), str(WORLD[name]), str(out)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        exp = expected_slice(w, name, rank).contiguous()
        assert r.stdout.startswith(f"F32 [{', '.join(map(str, exp.shape))}] ranges"), r.stdout
        assert out.read_bytes() == exp.numpy().tobytes(), (name, rank)


def test_cpp_read_shard_errors(placed, tmp_path):
    path, _ = placed
    r = subprocess.run([str(_binary(SHARD_TOOL)), str(path), "2.weight", "0", "4", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "[api.range]" in r.stderr and "world 4" in r.stderr and "6 devices" in r.stderr
    r = subprocess.run([str(_binary(SHARD_TOOL)), str(path), "2.weight", "6", "6", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "[api.range]" in r.stderr and "rank must be in [0, world)" in r.stderr


def test_cpp_inspect_verifies_every_shard(sharded, tmp_path):
    import shutil
    inspect = _binary(RUN.parent / "fxlower-inspect")
    path, _, _ = sharded
    r = subprocess.run([str(inspect), "--verify", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "verify      8 tensors: all SHA-256 match" in r.stdout, r.stdout + r.stderr
    copy = tmp_path / "c"
    shutil.copytree(path, copy)
    raw = bytearray((copy / shard(4, 4)).read_bytes())
    raw[-1] ^= 1
    (copy / shard(4, 4)).write_bytes(bytes(raw))
    r = subprocess.run([str(inspect), "--verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "[tensor.hash]" in r.stderr and "4.weight" in r.stderr and shard(4, 4) in r.stderr


# ------------------------------------------------------------------------------------------------ properties

@st.composite
def _placed_shapes(draw):
    shape = draw(st.lists(st.integers(0, 7), min_size=1, max_size=3))
    mesh = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    dims = [MeshDim("shard", draw(st.integers(0, len(shape) - 1))) if draw(st.booleans()) else MeshDim("replicate", -1)
            for _ in mesh]
    return shape, Placement(mesh=mesh, dims=dims)


@settings(max_examples=200, deadline=None)
@given(_placed_shapes())
def test_shard_ranges_are_nested_torch_chunks(case):
    """Every rank's slice is what torch.chunk gives when applied mesh dimension by mesh dimension (a chunk index
    past the chunks torch.chunk returns is empty)."""
    shape, p = case
    full = torch.arange(math.prod(shape)).reshape(shape)
    world = math.prod(p.mesh)
    for rank in range(world):
        coord, r = [], rank
        for m in reversed(p.mesh):
            coord.append(r % m)
            r //= m
        coord.reverse()
        expected = full
        for c, m, d in zip(coord, p.mesh, p.dims):
            if d.kind == "shard":
                parts = torch.chunk(expected, m, d.dim) if expected.shape[d.dim] else ()
                expected = parts[c] if c < len(parts) else expected.narrow(d.dim, expected.shape[d.dim], 0)
        box = shard_ranges(shape, p, rank)
        got = full[tuple(slice(a, b) for a, b in box)]
        assert got.shape == expected.shape and torch.equal(got, expected), (shape, p, rank, box)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    class Cube(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("t", torch.arange(5 * 6 * 7, dtype=torch.int32).reshape(5, 6, 7))

        def forward(self, x):
            return x + self.t

    path = tmp_path_factory.mktemp("cube") / "c.fxl"
    fxlower.export(Cube(), path)
    return fxlower.load(path)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=3, max_size=3))
def test_read_box_equals_indexing(cube, bounds):
    full = torch.arange(5 * 6 * 7, dtype=torch.int32).reshape(5, 6, 7)
    box = tuple((min(a, b, n), min(max(a, b), n)) for (a, b), n in zip(bounds, (5, 6, 7)))
    got = cube._files.read_box(cube.tensors["t"], box)
    assert torch.equal(got, full[tuple(slice(a, b) for a, b in box)])


@pytest.mark.parametrize("edit_fn,code,where", [
    (lambda p: p.__setitem__("mesh", [0]), "tensor.placement", "tensors[1].placement.mesh"),
    (lambda p: p["dims"][0].__setitem__("kind", "partial"), "schema.type", "tensors[1].placement.dims[0].kind"),
    (lambda p: p["dims"][0].__setitem__("dim", 2), "tensor.placement", "tensors[1].placement.dims[0].dim"),
    (lambda p: p.__setitem__("mesh_dim_names", ["a", "b"]), "tensor.placement", "placement.mesh_dim_names"),
])
def test_reader_rejects_bad_placements_naming_the_field(placed, tmp_path, edit_fn, code, where):
    import shutil
    path, _ = placed
    copy = tmp_path / "c"
    shutil.copytree(path, copy)
    m = manifest(copy)
    entry = m["tensors"][1]
    assert entry["name"] == "0.weight"
    edit_fn(entry["placement"])
    (copy / "manifest.msgpack").write_bytes(msgpack.packb(m))
    with pytest.raises(fxlower.FormatError) as info:
        fxlower.load(copy)
    assert info.value.code == code and where in str(info.value), str(info.value)
