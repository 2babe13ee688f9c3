"""fxlower.export and fxlower.load: round trips, the files as peers read them, determinism, tensors, atomicity."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import threading
import time

import jsonschema
import msgpack
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from safetensors import safe_open
from torch.utils._pytree import tree_flatten

import fxlower
from fxlower import ArtifactExistsError, ExportError
from fxlower.format.constants import STORAGE_DTYPES
from models import MODELS, trace

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "schema.json").read_text())


def _files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(path).iterdir())}


def _same(a, b) -> bool:
    fa, _ = tree_flatten(a)
    fb, _ = tree_flatten(b)
    return len(fa) == len(fb) and all(
        (torch.equal(x, y) and x.dtype == y.dtype) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(fa, fb))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every zoo model exported once with golden data: name -> (case, gm, path)."""
    base = tmp_path_factory.mktemp("zoo")
    out = {}
    for name in sorted(MODELS):
        case = MODELS[name]()
        gm = trace(case)
        path = base / name
        fxlower.export(gm, path, case.inputs, golden=True)
        out[name] = (case, gm, path)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_is_bit_identical_on_fresh_inputs(zoo, name):
    case, gm, path = zoo[name]
    rebuilt = fxlower.load(path, verify=True).to_graph_module()
    for seed in (1, 2):
        x = case.make_inputs(seed)
        with torch.no_grad():
            assert _same(rebuilt(*x), gm(*x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_golden_outputs_are_what_the_module_computes(zoo, name):
    case, gm, path = zoo[name]
    art = fxlower.load(path)
    with torch.no_grad():
        expected = gm(*case.inputs)
    assert _same(art.golden_inputs(), case.inputs)
    assert _same(art.golden_outputs(), expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_files_read_with_plain_msgpack_safetensors_and_the_json_schema(zoo, name):
    case, gm, path = zoo[name]
    manifest = msgpack.unpackb((path / "manifest.msgpack").read_bytes(), raw=False, strict_map_key=True)
    jsonschema.validate(manifest, SCHEMA, cls=jsonschema.Draft202012Validator)
    state = {**dict(gm.named_parameters(remove_duplicate=False)), **dict(gm.named_buffers(remove_duplicate=False))}
    entries = {t["name"]: t for t in manifest["tensors"]}
    with safe_open(str(path / "weights.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        for name_, t in state.items():
            stored = f.get_tensor(entries[name_]["key"])
            assert stored.dtype == t.dtype and torch.equal(stored, t.detach())
    assert keys == {e["key"] for e in manifest["tensors"] if e["file"] == "weights.safetensors"}


def test_tied_weights_are_stored_once_and_both_names_refer_to_it(zoo):
    case, gm, path = zoo["gpt_masked"]
    manifest = msgpack.unpackb((path / "manifest.msgpack").read_bytes())
    entries = {t["name"]: t for t in manifest["tensors"]}
    assert entries["lm_head.weight"]["key"] == entries["wte.weight"]["key"] == "lm_head.weight"
    with safe_open(str(path / "weights.safetensors"), framework="pt") as f:
        assert "wte.weight" not in f.keys()
    rebuilt = fxlower.load(path).to_graph_module()
    assert rebuilt.lm_head.weight.data_ptr() == rebuilt.wte.weight.data_ptr()  # still tied after loading


@pytest.mark.parametrize("name", ["resnet", "gpt_masked", "lstm_tagger", "nested_graphmodule", "vit"])
def test_export_is_byte_identical_twice_and_after_a_load(zoo, tmp_path, name):
    case, gm, path = zoo[name]
    fxlower.export(gm, tmp_path / "again", case.inputs, golden=True)
    assert _files(tmp_path / "again") == _files(path)
    rebuilt = fxlower.load(path).to_graph_module()
    fxlower.export(rebuilt, tmp_path / "reexport", case.inputs, golden=True)
    assert _files(tmp_path / "reexport") == _files(path)


def test_digest_is_a_cache_key_for_the_program(tmp_path):
    torch.manual_seed(0)
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    a = fxlower.export(gm, tmp_path / "a")
    b = fxlower.export(gm, tmp_path / "b", (torch.randn(2, 4),), golden=True)
    with torch.no_grad():
        gm.get_submodule("0").weight[0, 0] += 1
    c = fxlower.export(gm, tmp_path / "c")
    assert a.digest == fxlower.load(tmp_path / "a").manifest.digest
    assert a.digest != c.digest
    # golden data and recorded shapes are not part of the program's cache key, but the recorded meta is part
    # of the graph: compare two exports without inputs instead.
    d = fxlower.export(fx.symbolic_trace(gm), tmp_path / "d")
    assert d.digest == c.digest and b.digest != a.digest


def test_summary_counts_what_was_written(tmp_path):
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
    s = fxlower.export(gm, tmp_path / "m", (torch.randn(1, 4),), golden=True)
    assert (s.path, s.nodes, s.graphs, s.tensors) == (str(tmp_path / "m"), 4, 1, 4)
    assert s.bytes_written == sum(len(b) for b in _files(tmp_path / "m").values())


def test_node_metadata_records_shapes_dtypes_and_structure(zoo):
    _, _, path = zoo["dict_tuple_outputs"]
    art = fxlower.load(path)
    nodes = {n.name: n for n in art.graphs[0].nodes}
    assert all(n.meta is not None for n in nodes.values())
    out = art.manifest.signature.output
    assert out["t"] == "dict" and [k for k, _ in out["v"]] == ["logits", "aux"]
    x = nodes[art.manifest.signature.inputs[0]]
    assert x.meta["t"] == "tensor" and x.meta["dtype"] == "F32"


def test_metadata_comes_from_shape_propagation_without_example_inputs(tmp_path):
    from torch.fx.passes.shape_prop import ShapeProp

    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    ShapeProp(gm).propagate(torch.randn(5, 4))
    fxlower.export(gm, tmp_path / "m")
    relu = fxlower.load(tmp_path / "m").graphs[0].node("_1")
    assert relu.meta == {"t": "tensor", "dtype": "F32", "shape": [5, 3]}


def test_golden_nodes_stores_every_tensor_valued_node(tmp_path):
    case = MODELS["resnet"]()
    gm = trace(case)
    fxlower.export(gm, tmp_path / "m", case.inputs, golden="nodes")
    art = fxlower.load(tmp_path / "m")
    stored = art.golden_nodes()
    compute = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    assert list(stored) == compute
    env = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            env[n.name] = out.clone() if isinstance(out, torch.Tensor) else out  # before in-place ops change it
            return out

    with torch.no_grad():
        Rec(gm).run(*case.inputs)
    assert all(torch.equal(stored[n], env[n]) for n in compute)
    assert art.golden_mode == "nodes" and art.tolerances()["F32"] == (1e-3, 1e-4)


def test_golden_needs_example_inputs(tmp_path):
    gm = fx.symbolic_trace(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"^golden=True needs example_inputs \(golden data is the outputs they "
                                         r"produce\); pass them, e\.g\. export\(gm, path, \(x,\), golden=True\), "
                                         r"or leave golden=False$"):
        fxlower.export(gm, tmp_path / "m", golden=True)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------------ tensors

class _Holder(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for k, v in tensors.items():
            self.register_buffer(k, v)

    def forward(self, x):
        return x


def _export_buffers(tmp_path, tensors) -> fxlower.Artifact:
    """Export a graph that returns every tensor through a get_attr node."""
    graph = fx.Graph()
    graph.output(tuple(graph.get_attr(name) for name in tensors))
    gm = fx.GraphModule(_Holder(tensors), graph)
    fxlower.export(gm, tmp_path / "m")
    return fxlower.load(tmp_path / "m", verify=True)


def test_every_storage_dtype_round_trips_byte_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for code, (dtype, size) in STORAGE_DTYPES.items():
        raw = torch.randint(0, 256, (3, 5 * size), dtype=torch.uint8, generator=g)
        if dtype == torch.bool:
            raw = raw % 2
        tensors[code.lower()] = raw.view(dtype)
    tensors["f32_specials"] = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf"), 1e-45])
    tensors["nan_payload"] = torch.tensor([0x7FC00001, 0xFFF00002 - (1 << 32)], dtype=torch.int32).view(torch.float32)
    art = _export_buffers(tmp_path, tensors)
    for name, t in tensors.items():
        loaded = art.tensor(name)
        assert loaded.dtype == t.dtype and loaded.shape == t.shape
        assert torch.equal(loaded.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_zero_d_and_empty_tensors_round_trip(tmp_path):
    tensors = {"scalar": torch.tensor(3.5), "empty": torch.zeros(0, 4), "empty_i8": torch.zeros(2, 0, dtype=torch.int8)}
    art = _export_buffers(tmp_path, tensors)
    for name, t in tensors.items():
        assert art.tensor(name).shape == t.shape and torch.equal(art.tensor(name), t)


def test_non_contiguous_tensors_are_stored_contiguous(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    tensors = {"transposed": base.t(), "strided": base[:, ::2], "expanded": torch.ones(3, 1).expand(3, 5)}
    art = _export_buffers(tmp_path, tensors)
    for name, t in tensors.items():
        assert torch.equal(art.tensor(name), t) and art.tensor(name).is_contiguous()


@pytest.mark.parametrize("make, kind", [
    (lambda: torch.ones(2, dtype=torch.complex64), "dtype torch.complex64"),
    (lambda: torch.ones(2, 2).to_sparse(), "a sparse tensor"),
    pytest.param(lambda: torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8), "a quantized tensor",
                 id="quantized", marks=pytest.mark.filterwarnings("ignore:.*quantized tensor creation")),
    (lambda: torch.ones(2, device="meta"), "a meta tensor"),
])
def test_tensors_format_v1_cannot_store_are_refused_by_name(tmp_path, make, kind):
    m = _Holder({})
    m.bad = make()  # a plain attribute, reached through get_attr

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = m

        def forward(self, x):
            return x + self.inner.bad

    gm = fx.symbolic_trace(M())
    with pytest.raises(ExportError, match=rf"tensor 'inner.bad' .*{kind}"):
        fxlower.export(gm, tmp_path / "m")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------ atomicity

def _small() -> fx.GraphModule:
    torch.manual_seed(0)
    return fx.symbolic_trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))


def test_existing_path_is_refused_without_overwrite(tmp_path):
    fxlower.export(_small(), tmp_path / "m")
    before = _files(tmp_path / "m")
    with pytest.raises(ArtifactExistsError, match="overwrite=True") as info:
        fxlower.export(_small(), tmp_path / "m")
    assert isinstance(info.value, FileExistsError) and info.value.errno == errno.EEXIST
    assert _files(tmp_path / "m") == before and sorted(os.listdir(tmp_path)) == ["m"]


def test_overwrite_replaces_an_artifact(tmp_path):
    fxlower.export(_small(), tmp_path / "m")
    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3)))
    fxlower.export(gm, tmp_path / "m", overwrite=True)
    assert fxlower.load(tmp_path / "m").graphs[0].nodes[1].lowering.module_type == "torch.nn.Conv2d"
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_overwrite_never_replaces_something_that_is_not_an_artifact(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for target in ("notes", "file"):
        with pytest.raises(ExportError, match="not an fxlower artifact directory"):
            fxlower.export(_small(), tmp_path / target, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["file", "notes"]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt(),
                                 OSError(errno.ENOSPC, "No space left on device")])
@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_half_way_through_writing_tensors_leaves_the_old_artifact_or_nothing(
        tmp_path, monkeypatch, exc, existing):
    if existing:
        fxlower.export(_small(), tmp_path / "m")
    before = _files(tmp_path / "m") if existing else None
    import fxlower.io.tensorfile as tf
    real = tf._pwrite_all
    calls = []

    def failing(fd, data, offset):
        calls.append(len(data))
        if len(calls) == 3:  # header, first tensor, then fail on the second
            raise exc
        return real(fd, data, offset)

    monkeypatch.setattr(tf, "_pwrite_all", failing)
    model = fx.symbolic_trace(nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4)))
    expected = ExportError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expected) as info:
        fxlower.export(model, tmp_path / "m", overwrite=True)
    if isinstance(exc, OSError):
        assert "errno 28" in str(info.value) and "No space left" in str(info.value)
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == (["m"] if existing else [])  # no temporary left behind
    if existing:
        assert _files(tmp_path / "m") == before


def test_a_missing_parent_fails_before_any_work(tmp_path, monkeypatch):
    import fxlower.io.writing as w
    monkeypatch.setattr(w._Program, "collect", lambda self: pytest.fail("did heavy work"))
    with pytest.raises(ExportError, match="cannot create the temporary directory") as info:
        fxlower.export(_small(), tmp_path / "nope" / "m")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_files_get_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        fxlower.export(_small(), tmp_path / "m", (torch.randn(1, 8),), golden=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o750
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f.name


def test_concurrent_overwrites_never_mix_two_artifacts(tmp_path):
    models = [fx.symbolic_trace(nn.Sequential(nn.Linear(64, 64 + i))) for i in range(4)]
    errors = []

    def run(gm):
        try:
            for _ in range(3):
                fxlower.export(gm, tmp_path / "m", overwrite=True)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(gm,)) for gm in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    art = fxlower.load(tmp_path / "m", verify=True)  # complete and self-consistent
    assert art.graphs[0].nodes[1].lowering.attrs["out_features"] in range(64, 68)
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_overwriting_an_artifact_that_is_mapped_keeps_the_mapped_bytes(tmp_path):
    gm = _small()
    fxlower.export(gm, tmp_path / "m")
    art = fxlower.load(tmp_path / "m")
    mapped = art.tensor("0.weight")
    expected = gm.get_submodule("0").weight.detach().clone()
    with torch.no_grad():
        gm.get_submodule("0").weight.zero_()
    fxlower.export(gm, tmp_path / "m", overwrite=True)
    assert torch.equal(mapped, expected)  # the old file was renamed away, never truncated
    assert torch.equal(fxlower.load(tmp_path / "m").tensor("0.weight"), torch.zeros(8, 8))


@pytest.mark.parametrize("padding", ["same", "valid", (1, 2)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_padding_modes_round_trip_bit_identically(tmp_path, padding, mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, (3, 4), dilation=(1, 2), padding=padding, padding_mode=mode)
    gm = fx.symbolic_trace(nn.Sequential(conv))
    fxlower.export(gm, tmp_path / "m")
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(fxlower.load(tmp_path / "m").to_graph_module()(x), gm(x))


def test_concurrent_first_exports_with_overwrite_all_succeed(tmp_path):
    """Several exports racing to create a new path: with overwrite=True, the later ones replace the first."""
    for round_ in range(5):
        target = tmp_path / f"m{round_}"
        errors = []
        barrier = threading.Barrier(3)

        def run(i):
            try:
                gm = fx.symbolic_trace(nn.Sequential(nn.Linear(8, 8 + i)))
                barrier.wait()
                fxlower.export(gm, target, overwrite=True)
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        fxlower.load(target, verify=True)
    assert sorted(os.listdir(tmp_path)) == [f"m{i}" for i in range(5)]


# ------------------------------------------------------------------------------------------------ crash leftovers

_STALLING_EXPORT = r"""
import sys, time
import torch, torch.nn as nn
import fxlower, fxlower.io.tensorfile as tf

target, marker = sys.argv[1], sys.argv[2]
real = tf._start_writeback


def stall(fd, offset, length):  # called after each written piece: once a weight is written, say so and hang
    real(fd, offset, length)
    if offset + length > 4 << 20:
        with open(marker, "w") as f:
            f.write(str(offset + length))
        time.sleep(600)


tf._start_writeback = stall
torch.manual_seed(1)
fxlower.export(nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)]), target, overwrite=True)
"""


def _start_stalled_export(tmp_path, target, name):
    """A subprocess export of 4 x 4 MiB weights that stops after writing its first weight (and says so)."""
    marker = tmp_path / f"{name}.marker"
    proc = subprocess.Popen([sys.executable, "-c", _STALLING_EXPORT, str(target), str(marker)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not marker.exists() or not marker.read_text():
        if proc.poll() is not None:
            pytest.fail(f"the export subprocess ended early: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the export subprocess never reached its first tensor")
        time.sleep(0.05)
    return proc, int(marker.read_text())


def _temporaries(parent, base="m"):
    return sorted(p for p in parent.iterdir() if p.name.startswith(base + ".fxlower-tmp-"))


def test_a_killed_export_leaves_an_orphan_that_the_next_export_removes_sparing_a_live_one(tmp_path):
    target = tmp_path / "out" / "m"
    target.parent.mkdir()
    old = fxlower.export(_small(), target)
    before = _files(target)
    procs = []
    try:
        live, _ = _start_stalled_export(tmp_path, target, "live")  # runs (stalled) throughout, holding its lock
        procs.append(live)
        (live_tmp,) = _temporaries(target.parent)
        killed, written = _start_stalled_export(tmp_path, target, "killed")
        procs.append(killed)
        (orphan,) = [p for p in _temporaries(target.parent) if p != live_tmp]
        # mid-write: the temporary holds a partial weights file; the old artifact is intact and loads
        size = (orphan / "weights.safetensors").stat().st_size
        assert size == written and 4 << 20 < size < 4 * ((4 << 20) + 4096)
        assert _files(target) == before and fxlower.load(target, verify=True).manifest.digest == old.digest
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(60) == -signal.SIGKILL
        assert _temporaries(target.parent) == sorted([live_tmp, orphan])  # the orphan outlives its export
        assert _files(target) == before

        torch.manual_seed(2)
        new = fxlower.export(nn.Sequential(nn.Linear(3, 2)), target, overwrite=True)
        assert new.removed_temporaries == (str(orphan),)
        assert _temporaries(target.parent) == [live_tmp]  # the running export's temporary is untouched
        assert (live_tmp / "weights.safetensors").stat().st_size > 4 << 20
        assert fxlower.load(target, verify=True).manifest.digest == new.digest
        live.send_signal(signal.SIGKILL)
        live.wait(60)
        from fxlower.io.writing import remove_orphaned_temporaries
        assert remove_orphaned_temporaries(target) == [str(live_tmp)]
        assert sorted(p.name for p in target.parent.iterdir()) == ["m"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(60)


def test_an_export_without_orphans_reports_none(tmp_path):
    assert fxlower.export(_small(), tmp_path / "m").removed_temporaries == ()


# ------------------------------------------------------------------------------------------------ messages

def test_an_nn_module_is_traced_like_symbolic_trace_does(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.randn(1, 3, 8, 8)
    fxlower.export(model, tmp_path / "module", (x,), golden=True)
    fxlower.export(fx.symbolic_trace(model), tmp_path / "traced", (x,), golden=True)
    assert _files(tmp_path / "module") == _files(tmp_path / "traced")


def test_an_untraceable_module_names_its_type_the_tracer_error_and_the_fix(tmp_path):
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ExportError) as info:
        fxlower.export(Branchy(), tmp_path / "m")
    msg = str(info.value)
    assert msg.startswith("export traces an nn.Module with torch.fx.symbolic_trace, which failed on "
                          "test_export.test_an_untraceable_module_names_its_type_the_tracer_error_and_the_fix."
                          "<locals>.Branchy: TraceError: symbolically traced variables cannot be used as inputs "
                          "to control flow. ")
    assert "is_leaf_module" in msg and "@fxlower.register_module" in msg and "torch.fx.wrap" in msg
    assert type(info.value.__cause__).__name__ == "TraceError"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", [3, "model", lambda x: x])
def test_export_of_something_else_is_a_type_error(tmp_path, value):
    with pytest.raises(TypeError, match=r"^export expects a torch\.fx\.GraphModule, a torch\.nn\.Module or a "
                                        r"torch\.export\.ExportedProgram, got "):
        fxlower.export(value, tmp_path / "m")


def test_a_failing_example_input_names_the_node_and_chains_the_cause(tmp_path):
    gm = _small()  # Linear(8, 8): a 5-wide input cannot be multiplied
    with pytest.raises(ExportError) as info:
        fxlower.export(gm, tmp_path / "m", (torch.randn(1, 5),))
    assert str(info.value) == (
        "running the example inputs failed at node '_0' (call_module 0) in the root graph: RuntimeError: mat1 and "
        "mat2 shapes cannot be multiplied (1x5 and 8x8). example_inputs must be what the model's forward accepts "
        "(count, shapes, dtypes, devices); fix them, or export without example_inputs")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert os.listdir(tmp_path) == []


def test_a_failing_example_input_in_a_nested_graph_names_that_graph(tmp_path):
    inner = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4)))
    outer = fx.symbolic_trace(nn.Sequential(nn.Identity(), nn.ReLU()))
    outer.add_submodule("inner", inner)
    with outer.graph.inserting_before(list(outer.graph.nodes)[-1]):
        relu = [n for n in outer.graph.nodes if n.op == "call_module" and n.target == "1"][0]
        call = outer.graph.call_module("inner", (relu,))
    list(outer.graph.nodes)[-1].args = (call,)
    outer.recompile()
    with pytest.raises(ExportError, match=r"^running the example inputs failed at node '_0' \(call_module 0\) in "
                                          r"graph 'inner': RuntimeError: mat1 and mat2"):
        fxlower.export(outer, tmp_path / "m", (torch.randn(2, 3),))


def test_an_unsupported_module_error_from_export_gives_a_fix_export_takes(tmp_path):
    class Mystery(nn.Module):
        def forward(self, x):
            return x * 2

    class Leafy(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, Mystery) or super().is_leaf_module(m, qualname)

    root = nn.Sequential(Mystery(), nn.ReLU())
    gm = fx.GraphModule(root, Leafy().trace(root))
    with pytest.raises(fxlower.UnsupportedModuleError) as info:
        fxlower.export(gm, tmp_path / "m")
    name = "test_export.test_an_unsupported_module_error_from_export_gives_a_fix_export_takes.<locals>.Mystery"
    assert str(info.value) == (
        "export needs a lowering rule for every leaf module; 1 module type(s) in the graph have none:\n"
        f"  {name}: {name} has no lowering rule; used by node '_0'\n"
        "Register a rule for each before exporting (docs/writing-rules.md), e.g. "
        "fxlower.register_module(Mystery, attrs=[...], version=1), or decorate the class with "
        "@fxlower.register_module(attrs=[...], version=1).")
    assert "strict=False" not in str(info.value)
    assert list(info.value.unsupported) == [name]


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_existing_file_is_refused_without_suggesting_overwrite(tmp_path, overwrite):
    (tmp_path / "m").write_text("mine")
    with pytest.raises(ArtifactExistsError) as info:
        fxlower.export(_small(), tmp_path / "m", overwrite=overwrite)
    assert str(info.value) == (
        f"[Errno 17] {tmp_path / 'm'} exists and is not an fxlower artifact directory (it is a file, not a "
        "directory); overwrite=True replaces only artifact directories, never other data. Choose another path, "
        f"or move or remove what is there yourself: '{tmp_path / 'm'}'")
    assert (tmp_path / "m").read_text() == "mine" and os.listdir(tmp_path) == ["m"]


def test_an_existing_directory_of_other_files_is_described(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for n in ("a.txt", "b.txt", "c.txt", "d.txt", "weights.safetensors"):
        (d / n).write_text("x")
    with pytest.raises(ArtifactExistsError, match=r"\(it is a directory without manifest\.msgpack that holds "
                                                  r"a\.txt, b\.txt, c\.txt, \.\.\.\); overwrite=True replaces only"):
        fxlower.export(_small(), d, overwrite=True)
    (tmp_path / "link").symlink_to(d)
    with pytest.raises(ArtifactExistsError, match=r"\(it is a symbolic link\)"):
        fxlower.export(_small(), tmp_path / "link")


def test_an_existing_artifact_suggests_overwrite(tmp_path):
    fxlower.export(_small(), tmp_path / "m")
    with pytest.raises(ArtifactExistsError) as info:
        fxlower.export(_small(), tmp_path / "m")
    assert str(info.value) == (f"[Errno 17] {tmp_path / 'm'} exists (an fxlower artifact); pass overwrite=True to "
                               f"replace it, or choose another path: '{tmp_path / 'm'}'")


# ------------------------------------------------------------------------------------------------ reading

def test_tensors_come_from_the_checked_file_even_if_the_path_is_replaced(tmp_path):
    """load keeps the descriptors it validated; replacing a file afterwards changes nothing it serves."""
    torch.manual_seed(0)
    gm = _small()
    fxlower.export(gm, tmp_path / "m")
    art = fxlower.load(tmp_path / "m")
    with torch.no_grad():
        gm.get_submodule("0").weight.fill_(7.0)
    fxlower.export(gm, tmp_path / "other")
    os.replace(tmp_path / "other" / "weights.safetensors", tmp_path / "m" / "weights.safetensors")
    torch.manual_seed(0)
    expected = nn.Linear(8, 8).weight.detach()  # the first Linear _small() builds from seed 0
    assert torch.equal(art.tensor("0.weight"), expected)
    art.verify()
    art.close()


@pytest.mark.parametrize("through_library", [True, False])
def test_tensors_and_stored_bytes_match_the_library_reader(tmp_path, monkeypatch, through_library):
    """Tensors as safetensors.torch.load_file reads the same file, with the library (Linux) or fxlower's own
    mapping (other systems)."""
    import safetensors.torch

    import fxlower.io.mapping as mapping
    if not through_library:
        monkeypatch.setattr(mapping, "_FD_PATH", None)
    torch.manual_seed(0)
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to(torch.bfloat16))
    fxlower.export(gm, tmp_path / "m")
    art = fxlower.load(tmp_path / "m", verify=True)
    ref = safetensors.torch.load_file(tmp_path / "m" / "weights.safetensors")
    for name, entry in art.tensors.items():
        t = art.tensor(name)
        assert t.dtype == ref[entry.key].dtype and torch.equal(t, ref[entry.key]), name
        raw = ref[entry.key].reshape(-1).view(torch.uint8).numpy().tobytes() if ref[entry.key].numel() else b""
        assert bytes(art.stored_bytes(name)) == raw
    art.close()
    with pytest.raises(ValueError, match="is closed"):
        art.tensor("0.weight")


def test_without_directory_locks_exports_work_and_nothing_is_judged_orphaned(tmp_path, monkeypatch):
    """Where flock on a directory fails (e.g. NFS: EBADF/ENOLCK), export still works, and the cleaner never
    removes a temporary it cannot judge."""
    from fxlower.io import writing

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(writing.fcntl, "flock", no_locks)
    (tmp_path / "m.fxlower-tmp-0000000000000001").mkdir()
    s = fxlower.export(_small(), tmp_path / "m")
    assert s.removed_temporaries == ()
    assert sorted(os.listdir(tmp_path)) == ["m", "m.fxlower-tmp-0000000000000001"]
    monkeypatch.undo()  # locks work again: now the orphan can be judged
    assert writing.remove_orphaned_temporaries(tmp_path / "m") == [str(tmp_path / "m.fxlower-tmp-0000000000000001")]


def test_an_unexpected_lock_error_fails_the_export_naming_it(tmp_path, monkeypatch):
    from fxlower.io import writing

    def broken(fd, op):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(writing.fcntl, "flock", broken)
    with pytest.raises(ExportError, match=r"cannot create the temporary directory in .*: Input/output error "
                                          r"\(errno 5\)"):
        fxlower.export(_small(), tmp_path / "m")
    assert os.listdir(tmp_path) == []
