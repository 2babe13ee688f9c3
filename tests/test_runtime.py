"""fxlower-run, the C++ reference runtime (cpp/runtime/, cpp/tools/run.cpp), driven from Python.

The binary is cpp/build/fxlower-run (or $FXLOWER_RUN); the test suite's setup (scripts/test.sh) builds cpp/build
before pytest runs. A missing binary fails these tests: they never skip.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import msgpack
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._pytree import tree_flatten

import fxlower
from downgrade import rewrite, to_1_0

try:
    from models import MODELS, trace
except ImportError:  # pragma: no cover - depends on how pytest sets sys.path
    from tests.models import MODELS, trace

REPO = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("FXLOWER_RUN", str(REPO / "cpp" / "build" / "fxlower-run")))

# The zoo models the runtime must match within the stored tolerances (the "must show" list), then the rest.
MUST_SHOW = ["resnet", "mobilenetv3", "unet", "vit", "gpt_masked", "gpt_sdpa", "lstm_tagger", "audio1d", "cnn3d",
             "transformer_encoder", "bf16_mlp"]
ZOO = MUST_SHOW + sorted(set(MODELS) - set(MUST_SHOW))

LEAF_LINE = re.compile(r"^(?P<path>output\S*) (?P<dtype>[A-Z0-9]+)\[(?P<shape>[0-9, ]*)\]: max_abs_err (?P<abs>\S+) "
                       r"max_rel_err (?P<rel>\S+) \(atol (?P<atol>\S+), rtol (?P<rtol>\S+)\): (?P<verdict>\S+)")


@pytest.fixture(scope="session")
def fxrun() -> Path:
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} does not exist: build it first (cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release "
                    f"&& cmake --build cpp/build -j2), or point $FXLOWER_RUN at it", pytrace=False)
    return BINARY


def run(binary: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)


def export(name: str, path: Path, golden=True):
    case = MODELS[name]()
    fxlower.export(trace(case), path, case.inputs, golden=golden)
    return case


def manifest(path: Path) -> dict:
    return msgpack.unpackb((path / "manifest.msgpack").read_bytes())


def golden_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "golden.safetensors"))


_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _outputs_match_pytorch(gm, inputs, art: Path, out_file: Path) -> None:
    """The tensors fxlower-run wrote with --out equal what PyTorch computes here (eval mode, no grad), leaf by leaf
    in output order: same dtype and shape, |a - e| <= atol + rtol * |e| with the artifact's tolerance for the
    dtype (exact for dtypes without one, integers and bools included)."""
    gm.eval()
    with torch.no_grad():
        expected = gm(*inputs)
    leaves = [t for t in tree_flatten(expected)[0] if isinstance(t, torch.Tensor)]
    tolerances = manifest(art)["golden"]["tolerances"]
    got = load_file(str(out_file))
    assert sorted(got, key=int) == [str(i) for i in range(len(leaves))]
    for i, e in enumerate(leaves):
        a = got[str(i)]
        assert a.dtype == e.dtype and a.shape == e.shape, (i, a.dtype, a.shape, e.dtype, e.shape)
        tol = tolerances.get(_CODES.get(e.dtype, ""), {"atol": 0.0, "rtol": 0.0})
        torch.testing.assert_close(a, e, atol=tol["atol"], rtol=tol["rtol"], equal_nan=True)


# ------------------------------------------------------------------------------------------------ golden checks


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_golden_outputs(fxrun, tmp_path, name):
    art = tmp_path / f"{name}.fxl"
    case = MODELS[name]()
    gm = trace(case)
    fxlower.export(gm, art, case.inputs, golden=True)
    proc = run(fxrun, art, "--check", "--threads", 2, "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "check: PASS" in proc.stdout
    # every output tensor is reported, within atol + rtol * max|expected|
    m = manifest(art)
    tol = {k: (v["atol"], v["rtol"]) for k, v in m["golden"]["tolerances"].items()}
    gold = golden_tensors(art)
    outputs = sorted(k for k in gold if k.startswith("golden/outputs/"))
    lines = [LEAF_LINE.match(line) for line in proc.stdout.splitlines()]
    lines = [x for x in lines if x]
    assert len(lines) == len(outputs), proc.stdout
    for match, key in zip(lines, sorted(outputs, key=lambda k: int(k.rsplit("/", 1)[1]))):
        expected = gold[key]
        atol, rtol = tol[match["dtype"]]
        assert (float(match["atol"]), float(match["rtol"])) == pytest.approx((atol, rtol))
        bound = atol + rtol * expected.double().abs().max().item()
        assert float(match["abs"]) <= bound, f"{name} {match['path']}: {match['abs']} > {bound}"
        assert match["verdict"] == "ok"
    # and what it wrote equals PyTorch's outputs, computed here rather than taken from the golden file
    _outputs_match_pytorch(gm, case.inputs, art, tmp_path / "out.safetensors")


def test_golden_nodes_all_match(fxrun, tmp_path):
    art = tmp_path / "gpt.fxl"
    case = MODELS["gpt_masked"]()
    gm = trace(case)
    fxlower.export(gm, art, case.inputs, golden="nodes")
    proc = run(fxrun, art, "--check", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^nodes: all \d+ golden node results match$", proc.stdout, re.M), proc.stdout
    _outputs_match_pytorch(gm, case.inputs, art, tmp_path / "out.safetensors")


def _tensor_span(art: Path, tensor_name: str) -> tuple[Path, int, int, str]:
    """The file, byte offset and length of a table tensor inside its safetensors file."""
    m = manifest(art)
    entry = next(t for t in m["tensors"] if t["name"] == tensor_name)
    path = art / entry["file"]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    begin, end = header[entry["key"]]["data_offsets"]
    return path, 8 + n + begin, end - begin, header[entry["key"]]["dtype"]


def test_check_names_the_first_divergent_node(fxrun, tmp_path):
    src = tmp_path / "resnet.fxl"
    export("resnet", src, golden="nodes")
    m = manifest(src)
    convs = [n for n in m["graphs"][0]["nodes"]
             if n["op"] == "call_module" and n["lowering"]["module_type"] == "torch.nn.Conv2d"]
    third = convs[2]
    weight = third["lowering"]["attrs"]["weight"]["v"]
    bad = tmp_path / "resnet-corrupt.fxl"
    shutil.copytree(src, bad)
    path, offset, length, dtype = _tensor_span(bad, weight)
    assert dtype == "F32" and length >= 64
    data = bytearray(path.read_bytes())
    values = struct.unpack_from("<16f", data, offset)
    struct.pack_into("<16f", data, offset, *(v + 1.0 for v in values))
    path.write_bytes(bytes(data))

    assert run(fxrun, src, "--check").returncode == 0
    proc = run(fxrun, bad, "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"first divergent node: node '{third['name']}' (call_module {third['target']}: torch.nn.Conv2d)" \
        in proc.stdout, proc.stdout
    assert "check: FAIL" in proc.stdout


def test_check_fails_on_a_wrong_output(fxrun, tmp_path):
    src = tmp_path / "mlp.fxl"
    export("dict_tuple_outputs", src)
    path, offset, length, dtype = _tensor_span(src, "golden/outputs/1")
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, offset, struct.unpack_from("<f", data, offset)[0] + 0.5)
    path.write_bytes(bytes(data))
    proc = run(fxrun, src, "--check")
    assert proc.returncode == 1
    assert re.search(r"^output\['aux'\]\[0\] F32\[2, 2\]: .*: MISMATCH \(1 of 4 elements\)$", proc.stdout, re.M), proc.stdout


# ------------------------------------------------------------------------------------------------ unsupported ops


class _Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.special.bessel_j0(self.lin(x))


class _ScaleShift(nn.Module):
    """A user module with a lowering rule of its own: the runtime has no handler for it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((4,), 2.0))

    def forward(self, x):
        return x * self.weight


class _UnsupportedModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = _ScaleShift()

    def forward(self, x):
        return self.scale(x) + 1


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _ScaleShift) or super().is_leaf_module(m, qualname)


def test_unsupported_function_names_node_and_target(fxrun, tmp_path):
    gm = torch.fx.symbolic_trace(_Unsupported().eval())
    art = tmp_path / "unsupported.fxl"
    fxlower.export(gm, art, (torch.randn(2, 4),), golden=True)
    node = next(n for n in manifest(art)["graphs"][0]["nodes"] if n["op"] == "call_function")
    proc = run(fxrun, art, "--check")
    assert proc.returncode == 2
    assert f"node '{node['name']}' (call_function {node['target']})" in proc.stderr, proc.stderr
    assert f"unsupported function '{node['target']}'" in proc.stderr
    assert proc.stdout == ""  # nothing ran


def test_unsupported_module_names_node_and_type(fxrun, tmp_path):
    fxlower.register_module(_ScaleShift, attrs={"weight": "tensor"}, version=1)
    try:
        root = _UnsupportedModule().eval()
        gm = torch.fx.GraphModule(root, _LeafTracer().trace(root))
        art = tmp_path / "unsupported-module.fxl"
        fxlower.export(gm, art, (torch.randn(2, 4),), golden=True)
    finally:
        fxlower.lowering.book.unregister_module(_ScaleShift)
    module_type = manifest(art)["graphs"][0]["nodes"][1]["lowering"]["module_type"]
    assert module_type.endswith("_ScaleShift")
    proc = run(fxrun, art)
    assert proc.returncode == 2
    assert f"node 'scale' (call_module scale: {module_type}): unsupported module type '{module_type}'" in proc.stderr, \
        proc.stderr


# ------------------------------------------------------------------------------------------------ --inputs / --out


def _compare_outputs(gm, inputs, out_file: Path, atol=1e-4, rtol=1e-3):
    with torch.no_grad():
        expected = gm(*inputs)
    leaves, _ = tree_flatten(expected)
    leaves = [t for t in leaves if isinstance(t, torch.Tensor)]
    got = load_file(str(out_file))
    assert sorted(got, key=int) == [str(i) for i in range(len(leaves))]
    for i, e in enumerate(leaves):
        a = got[str(i)]
        assert a.dtype == e.dtype and a.shape == e.shape, (i, a.dtype, a.shape, e.dtype, e.shape)
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol)


@pytest.mark.parametrize("name", ["misc_leaves_c", "dict_tuple_outputs", "resnet", "lstm_tagger"])
def test_inputs_and_out_round_trip(fxrun, tmp_path, name):
    case = MODELS[name]()
    gm = trace(case)
    art = tmp_path / f"{name}.fxl"
    fxlower.export(gm, art, case.inputs, golden=True)
    inputs = case.make_inputs(7)  # not the golden inputs
    save_file({str(i): t.contiguous() for i, t in enumerate(inputs)}, str(tmp_path / "in.safetensors"))
    proc = run(fxrun, art, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _compare_outputs(gm, inputs, tmp_path / "out.safetensors")


def test_inputs_of_another_shape(fxrun, tmp_path):
    """The graph is shape-generic (size(), getattr shape, slicing by them): other batch and sequence lengths run."""
    case = MODELS["gpt_masked"]()
    gm = trace(case)
    art = tmp_path / "gpt.fxl"
    fxlower.export(gm, art, case.inputs)  # no golden data at all
    idx = torch.randint(0, 64, (3, 11), generator=torch.Generator().manual_seed(3))
    save_file({"0": idx}, str(tmp_path / "in.safetensors"))
    proc = run(fxrun, art, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _compare_outputs(gm, (idx,), tmp_path / "out.safetensors")


def test_bf16_outputs_are_written_as_bf16(fxrun, tmp_path):
    case = MODELS["bf16_mlp"]()
    gm = trace(case)
    art = tmp_path / "bf16.fxl"
    fxlower.export(gm, art, case.inputs, golden=True)
    proc = run(fxrun, art, "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stderr
    _compare_outputs(gm, case.inputs, tmp_path / "out.safetensors", atol=0.02, rtol=0.02)


@pytest.mark.parametrize("activation", [nn.GELU(approximate="tanh"), F.gelu, nn.ReLU()], ids=["GELU_tanh", "F_gelu", "ReLU"])
def test_transformer_activation_and_final_norm_children(fxrun, tmp_path, activation):
    """A layer's activation recorded as a function or as a child module (with its own attributes), and the stack's
    final LayerNorm child: the runtime reads them as such, and its outputs are PyTorch's."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0, activation=activation, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False)).eval()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    art = tmp_path / "enc.fxl"
    fxlower.export(gm, art, (x,), golden=True)
    proc = run(fxrun, art, "--check", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _outputs_match_pytorch(gm, (x,), art, tmp_path / "out.safetensors")


@pytest.mark.parametrize("activation", [nn.GELU(approximate="tanh"), F.relu], ids=["GELU_tanh", "F_relu"])
def test_format_1_0_artifacts_still_run(fxrun, tmp_path, activation):
    """A 1.0 artifact (activation and children written as strs) runs as its 1.1 twin does."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0, activation=activation, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False)).eval()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    art = tmp_path / "enc.fxl"
    fxlower.export(gm, art, (x,), golden=True)
    rewrite(art, to_1_0)
    assert manifest(art)["format_version"] == [1, 0]
    proc = run(fxrun, art, "--check", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _outputs_match_pytorch(gm, (x,), art, tmp_path / "out.safetensors")


def test_inputs_file_with_a_repeated_key_is_refused(fxrun, tmp_path):
    """--inputs goes through the reader's strict safetensors code: a header naming a key twice is an error, not a
    last-one-wins guess."""
    case = MODELS["audio1d"]()
    art = tmp_path / "audio.fxl"
    fxlower.export(trace(case), art, case.inputs, golden=True)
    x = case.inputs[0].contiguous()
    data = x.numpy().tobytes()
    entry = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [0, len(data)]}
    header = ('{"0":' + json.dumps(entry) + ',"0":' + json.dumps(entry) + "}").encode()
    header += b" " * (-(8 + len(header)) % 8)
    (tmp_path / "in.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    proc = run(fxrun, art, "--inputs", tmp_path / "in.safetensors")
    assert proc.returncode == 2
    assert "[safetensors.header]" in proc.stderr and "the key \"0\" twice" in proc.stderr, proc.stderr


def test_without_golden_data_inputs_are_required(fxrun, tmp_path):
    case = MODELS["audio1d"]()
    art = tmp_path / "audio.fxl"
    fxlower.export(trace(case), art, case.inputs)
    proc = run(fxrun, art)
    assert proc.returncode == 2
    assert "no golden inputs; pass --inputs FILE" in proc.stderr
    assert run(fxrun, art, "--check").returncode == 2


# ------------------------------------------------------------------------------------------------ threads and timing


def test_thread_counts_agree_and_repeat_times(fxrun, tmp_path):
    art = tmp_path / "unet.fxl"
    export("unet", art)
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"out{threads}.safetensors"
        proc = run(fxrun, art, "--threads", threads, "--repeat", 3, "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"^time: 3 run\(s\), {threads} thread\(s\): median [0-9.]+ ms", proc.stdout, re.M), proc.stdout
        outs.append(load_file(str(out))["0"])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)


def test_usage_errors(fxrun, tmp_path):
    assert run(fxrun).returncode == 2
    proc = run(fxrun, "--bogus")
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = run(fxrun, tmp_path / "missing.fxl")
    assert proc.returncode == 2 and "artifact.missing" in proc.stderr


# ------------------------------------------------------------------------------------------------ docs/ops.md


@pytest.fixture(scope="module")
def gen_ops():
    spec = importlib.util.spec_from_file_location("gen_ops_doc", REPO / "scripts" / "gen_ops_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ops_doc_is_up_to_date(fxrun, gen_ops):
    listing = run(fxrun, "--list-ops").stdout
    checked_in = (REPO / "docs" / "ops.md").read_text(encoding="utf-8")
    assert checked_in == gen_ops.render(listing), \
        "docs/ops.md is stale; rebuild cpp/build and run: python3 scripts/gen_ops_doc.py"


def test_list_ops_covers_the_zoo(fxrun, gen_ops):
    ops = gen_ops.parse(run(fxrun, "--list-ops").stdout)
    for module in ("torch.nn.Conv2d", "torch.nn.LSTM", "torch.nn.MultiheadAttention", "torch.nn.TransformerEncoder",
                   "torch.nn.EmbeddingBag", "torch.nn.Upsample"):
        assert module in ops["module"]
    for fn in ("operator.getitem", "builtins.getattr", "torch.nn.functional.scaled_dot_product_attention",
               "torch.einsum", "torch.flatten", "operator.add"):
        assert fn in ops["function"]
    for method in ("view", "size", "masked_fill", "transpose", "type_as", "split"):
        assert method in ops["method"]


# ------------------------------------------------------------------------------------------------ operator coverage
#
# Small graphs, one family of operations each, exported with golden data and checked by fxlower-run --check.


class _Fn(nn.Module):
    """forward(*inputs) = fn(*inputs), with any submodules attached, traced through fn."""

    def __init__(self, fn, nin: int, **modules) -> None:
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            setattr(self, k, m)
        self.nin = nin

    def forward(self, a, b=None, c=None, d=None):
        xs = (a, b, c, d)[: self.nin]
        return self.fn(getattr(self, "m", self), *xs)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _r(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_g(seed)).to(dtype)


def _i(high, *shape, seed=0):
    return torch.randint(0, high, shape, generator=_g(seed))


OP_CASES = {
    "arith_broadcast": (lambda s, x, y: ((x + y) * 2 - x / (y.abs() + 1) + x ** 2 - 0.5 * y, torch.add(x, y, alpha=3),
                                         torch.sub(x, 1.5), torch.mul(y, x), torch.true_divide(x, 2), -x, 1 - x, 2 / (y.abs() + 1),
                                         torch.maximum(x, y), torch.minimum(x, y), torch.pow(x.abs(), y), 2 ** y),
                        (_r(3, 1, 5), _r(4, 5, seed=1))),
    "floordiv_mod": (lambda s, x, y: (torch.floor_divide(x, 0.7), x % 0.5, torch.remainder(x, -0.3), torch.fmod(x, 0.4),
                                      x // y.clamp(min=0.2), torch.div(x, 0.3, rounding_mode="trunc"),
                                      torch.div(x, 0.3, rounding_mode="floor")),
                     (_r(4, 6) * 3, _r(4, 6, seed=1))),
    "int_arith": (lambda s, i, j: ((i * 3 + 1) // 2 % 5, i - j, i.float() / 3, i / j.clamp(min=1), i ** 2, -i, abs(i - 20),
                                   torch.bitwise_and(i, 6), i | j, i ^ j, ~i, i << 1, i >> 1, torch.maximum(i, j)),
                  (_i(40, 3, 4), _i(40, 3, 4, seed=1))),
    "compare_logical": (lambda s, x, y: (((x > 0) & (y < 0.5)) | ~(x == y), x >= y, x <= 0.1, x != y, torch.eq(x, x),
                                         torch.logical_xor(x > 0, y > 0), torch.logical_not(x > 0),
                                         torch.where(x > y, x, y), torch.where(x > 0, x, 0.0), (x > 0).float(),
                                         x.masked_fill(y > 0, -1.0), torch.isnan(x), torch.isfinite(x / 0.0)),
                        (_r(3, 5), _r(3, 5, seed=1))),
    "unary_math": (lambda s, x: (torch.exp(x), torch.log(x.abs() + 1), torch.sqrt(x.abs()), torch.rsqrt(x.abs() + 1),
                                 torch.sin(x), torch.cos(x), torch.tanh(x), torch.sigmoid(x), torch.erf(x), x.floor(),
                                 x.ceil(), torch.round(x), x.round(decimals=1), torch.sign(x), torch.reciprocal(x + 10),
                                 x.abs(), x.clamp(-0.5, 0.5), torch.clamp(x, max=0.1), x.clamp_min(0), x.clamp_max(0),
                                 torch.log1p(x.abs()), torch.expm1(x), torch.log2(x.abs() + 1), x.square(),
                                 torch.atan2(x, x + 1), x.pow(3), torch.trunc(x * 3), torch.frac(x * 3)),
                   (_r(4, 7) * 2,)),
    "reductions": (lambda s, x: (x.sum(dim=(0, 2), keepdim=True), x.mean(-1), torch.amax(x, dim=1), x.amin((0, 1)),
                                 x.max(dim=1), torch.min(x, dim=-1, keepdim=True), x.argmax(dim=2), x.argmin(),
                                 x.max(), torch.sum(x), x.prod(dim=1), x.var(dim=1), x.std(dim=(1, 2), keepdim=True),
                                 torch.var(x, dim=0, unbiased=False), torch.logsumexp(x, dim=-1), x.norm(dim=-1),
                                 torch.norm(x), x.cumsum(dim=1), (x > 0).all(dim=1), (x > 0).any(), x.sum(1, dtype=torch.float64),
                                 torch.linalg.vector_norm(x, ord=1, dim=1), x.max(dim=1).values, x.min(1).indices),
                   (_r(3, 4, 5),)),
    "shape_ops": (lambda s, x: (x.reshape(-1), x.view(2, -1), x.permute(2, 0, 1), x.transpose(0, 1), x.swapaxes(1, 2),
                                x.unsqueeze(0).squeeze(0), torch.flatten(x, 1), x.flatten(0, 1).unflatten(0, (4, 2)),
                                x.chunk(3, dim=2)[1], torch.split(x, [1, 3], dim=1)[1], x.narrow(2, 1, 2), x[:, :1].expand(-1, 4, -1),
                                x.repeat(1, 2, 1), x.tile((2,)), x.repeat_interleave(2, dim=1), x.flip(0, 2), x.roll(1, 2),
                                torch.roll(x, shifts=(1, -1), dims=(0, 1)), torch.stack([x, x * 2], dim=-1),
                                torch.cat([x, x], dim=0), torch.movedim(x, 0, -1), x[0].t(), x.mT, x.unbind(1)[2],
                                x.squeeze(), x.unsqueeze(-1).squeeze(-1), x.reshape(x.shape[0], -1).contiguous(),
                                torch.narrow(x, 0, 1, 1), x.select(1, 2), x.expand_as(x), x.view_as(x)),
                  (_r(2, 4, 6),)),
    "getitem": (lambda s, x, idx: (x[..., 1:3], x[:, None, ::2], x[-1], x[idx], x[x > 0], x[[0, 2]], x[1:, -1],
                                   x[:, 1], x[None], x[..., None, 0], x[0, 1:3, None], x[2:0]),
                (_r(4, 5, 3), torch.tensor([3, 0, 2]))),
    "factories": (lambda s, x: (torch.arange(x.shape[1]), torch.arange(1, 7, 2), torch.arange(0.5, 2.5, 0.5),
                                torch.zeros((x.shape[0], 3)), torch.ones((2, x.size(1))), torch.full((2, 2), 7),
                                torch.zeros_like(x), torch.ones_like(x, dtype=torch.int64), torch.full_like(x, 0.25),
                                torch.tril(torch.ones(4, 4)), torch.triu(x, diagonal=1), x.new_zeros(3), x.new_ones((2, 1)),
                                torch.empty(0, 3), torch.arange(x.shape[0], dtype=torch.float64) * 2),
                  (_r(3, 5),)),
    "casts": (lambda s, x, i: (x.to(torch.float64), x.double() * 2, x.half(), x.bfloat16().float(), (x * 3).int(),
                               (x * 3).long(), x.bool(), i.float(), i.to(x.dtype), i.type_as(x), x.to(i),
                               x.float(), (x * 100).to(torch.int32) // 7, i.to(torch.int8) * 10, x.type(torch.float64)),
              (_r(3, 4), _i(9, 3, 4))),
    "softmax_family": (lambda s, x: (F.softmax(x, dim=1), x.softmax(-1), F.log_softmax(x, 0), x.log_softmax(dim=2),
                                     F.softmin(x, dim=1), torch.softmax(x, 2, dtype=torch.float64), F.normalize(x, dim=1),
                                     F.glu(x, dim=-1), F.gelu(x, approximate="tanh"), F.gelu(x)),
                       (_r(2, 3, 4) * 3,)),
    "functional_acts": (lambda s, x: (F.relu(x), F.relu6(x * 4), F.leaky_relu(x, 0.2), F.elu(x, 0.5), F.celu(x, 1.5),
                                      F.selu(x), F.silu(x), F.mish(x), F.hardswish(x), F.hardsigmoid(x),
                                      F.hardtanh(x, -0.3, 0.6), F.softplus(x, beta=2, threshold=3), F.softsign(x),
                                      F.softshrink(x, 0.2), F.hardshrink(x, 0.3), F.tanhshrink(x), F.threshold(x, 0.1, -2.0),
                                      F.logsigmoid(x), torch.relu(x), torch.tanh(x), x.relu(), x.sigmoid(), torch.selu(x)),
                        (_r(3, 8) * 3,)),
    "matmul": (lambda s, a, b, v: (a @ b, torch.matmul(v[:4], b[0]), torch.matmul(a, v[:4]), torch.bmm(a, b),
                                   a.unsqueeze(1) @ b.unsqueeze(0), torch.mm(a[0], b[0]), v[:4] @ v[:4],
                                   torch.einsum("bij,bjk->bik", a, b), torch.einsum("bij->bji", a),
                                   torch.einsum("i,j->ij", v, v), torch.einsum("bi,bi->b", a[:, 0], a[:, 1]),
                                   torch.einsum("bij,bkj->bik", a, a), torch.einsum("...ij,...jk", a, b),
                                   torch.einsum("bij->b", a), torch.addmm(v[:5], a[0], b[0]), torch.outer(v, v)),
               (_r(2, 3, 4), _r(2, 4, 5, seed=1), _r(6, seed=2))),
    "linear_conv_functional": (lambda s, x, w: (F.linear(x.flatten(1)[:, :27], w.flatten(1)[:5]),
                                                F.conv2d(x, w, padding=1), F.conv2d(x, w[:, :1], groups=3, stride=2),
                                                F.conv2d(x, w, padding="same", dilation=2), F.conv1d(x[:, :, 0], w[:, :, 0]),
                                                F.conv_transpose2d(x, w.transpose(0, 1), stride=2, output_padding=1),
                                                F.conv_transpose2d(x, w[:3, :1], groups=3, padding=1)),
                               (_r(2, 3, 4, 4), _r(6, 3, 3, 3, seed=1))),
    "pool_functional": (lambda s, x: (F.max_pool2d(x, 3, 2, 1, ceil_mode=True), F.max_pool2d(x, 2, dilation=2),
                                      F.max_pool2d(x, 2, return_indices=True), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                                      F.avg_pool2d(x, 2, divisor_override=3), F.avg_pool2d(x, 3, 2, ceil_mode=True),
                                      F.adaptive_avg_pool2d(x, (3, 5)), F.adaptive_max_pool1d(x.flatten(2), 5),
                                      F.adaptive_avg_pool2d(x, (None, 2)), F.max_pool1d(x.flatten(2), 4),
                                      F.avg_pool1d(x.flatten(2), 3, 2, 1), F.lp_pool2d(x, 2, 2)),
                        (_r(2, 3, 7, 9),)),
    "interpolate_pad": (lambda s, x: (F.interpolate(x, scale_factor=2), F.interpolate(x, size=(5, 7), mode="bilinear"),
                                      F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=True),
                                      F.interpolate(x, size=(3, 11), mode="nearest"),
                                      F.interpolate(x, scale_factor=(2, 3), mode="nearest-exact"),
                                      F.interpolate(x.flatten(2), scale_factor=2.5, mode="linear"),
                                      F.interpolate(x.unsqueeze(2), scale_factor=(2, 1, 2), mode="trilinear"),
                                      F.pad(x, (1, 2)), F.pad(x, (1, 1, 2, 0), value=0.5), F.pad(x, (2, 1, 1, 2), mode="reflect"),
                                      F.pad(x, (3, 0, 0, 3), mode="replicate"), F.pad(x, (1, 2, 2, 1), mode="circular"),
                                      F.pad(x, (-1, -1))),
                        (_r(1, 2, 4, 5),)),
    "sdpa": (lambda s, q, k, v: (F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                 F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 5).tril().bool()),
                                 F.scaled_dot_product_attention(q, k, v, attn_mask=torch.randn(5, 5), scale=0.3),
                                 F.scaled_dot_product_attention(q[:, :, :2], k, v)),
             (_r(2, 3, 5, 4), _r(2, 3, 5, 4, seed=1), _r(2, 3, 5, 6, seed=2))),
    "inplace_and_aliasing": (lambda s, x: (lambda y: (y.add_(1), y.mul_(2), y)[2] + x)(x.clone()), (_r(3, 3),)),
    "sorting": (lambda s, x: (torch.sort(x, dim=1), x.sort(descending=True), torch.argsort(x, dim=0),
                              torch.topk(x, 3), x.topk(2, dim=0, largest=False), torch.sort(x, dim=1).values,
                              x.topk(1).indices),
                (_r(4, 6),)),
    "shape_arithmetic": (lambda s, x: x.view(x.size(0), -1) * (x.shape[1] // 2) + math.sqrt(x.size(-1)) + x.dim() + x.numel(),
                         (_r(2, 3, 4),)),
}

MODULE_CASES = {
    "conv_padding_modes": (lambda: nn.ModuleList([nn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect"),
                                                  nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate", stride=2),
                                                  nn.Conv2d(2, 4, (2, 3), padding="same", padding_mode="circular"),
                                                  nn.Conv3d(2, 4, 3, padding=1, padding_mode="circular", groups=2),
                                                  nn.Conv2d(2, 4, 4, padding="same", dilation=2),
                                                  nn.Conv2d(2, 2, 3, padding="valid", bias=False)]),
                           lambda m, x: (m[0](x[:, :, 0, 0]), m[1](x[:, :, 0]), m[2](x[:, :, 1]), m[3](x), m[4](x[:, :, 2]),
                                         m[5](x[:, :, 3])),
                           (_r(1, 2, 5, 6, 7),)),
    "conv_transpose": (lambda: nn.ModuleList([nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1),
                                              nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
                                              nn.ConvTranspose2d(4, 2, 2, dilation=2, bias=False),
                                              nn.ConvTranspose3d(4, 2, 3, stride=(1, 2, 2))]),
                       lambda m, x: (m[0](x[:, :3, 0]), m[1](x), m[2](x), m[3](x.unsqueeze(2))),
                       (_r(2, 4, 5, 6),)),
    "pool_modules": (lambda: nn.ModuleList([nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.MaxPool2d(2, return_indices=True),
                                            nn.AvgPool2d(3, 2, 1, divisor_override=2), nn.AvgPool3d(2, ceil_mode=True, count_include_pad=False),
                                            nn.AdaptiveMaxPool2d((2, 3), return_indices=True), nn.LPPool1d(3, 2),
                                            nn.MaxPool1d(3, stride=1, dilation=2), nn.AdaptiveAvgPool3d((1, 2, 3)),
                                            nn.MaxPool3d(2, stride=1, padding=1), nn.AdaptiveMaxPool3d(2)]),
                     lambda m, x: (m[0](x), m[1](x), m[2](x), m[3](x.unsqueeze(1)), m[4](x), m[5](x.flatten(2)),
                                   m[6](x.flatten(2)), m[7](x.unsqueeze(1)), m[8](x.unsqueeze(1)), m[9](x.unsqueeze(1))),
                     (_r(2, 3, 7, 8),)),
    "norm_modules": (lambda: nn.ModuleList([nn.BatchNorm1d(4), nn.BatchNorm1d(4, affine=False), nn.InstanceNorm2d(4, track_running_stats=True),
                                            nn.GroupNorm(2, 4, affine=False), nn.LayerNorm([5, 6], elementwise_affine=False),
                                            nn.RMSNorm([6]), nn.LocalResponseNorm(3, alpha=0.1), nn.InstanceNorm1d(4),
                                            nn.BatchNorm3d(4), nn.InstanceNorm3d(4, affine=True)]),
                     lambda m, x: (m[0](x.flatten(2)), m[1](x[:, :, 0, 0]), m[2](x), m[3](x), m[4](x), m[5](x), m[6](x),
                                   m[7](x[0].flatten(1)), m[8](x.unsqueeze(2)), m[9](x.unsqueeze(2))),
                     (_r(2, 4, 5, 6),)),
    "embedding_modules": (lambda: nn.ModuleList([nn.Embedding(10, 4, padding_idx=0), nn.Embedding(10, 3, max_norm=1.0),
                                                 nn.EmbeddingBag(10, 3, mode="sum"), nn.EmbeddingBag(10, 3, mode="max"),
                                                 nn.EmbeddingBag(10, 2, mode="mean", include_last_offset=True, padding_idx=2),
                                                 nn.EmbeddingBag(10, 3, mode="sum")]),
                          lambda m, ids, off, w: (m[0](ids), m[1](ids.view(2, 4)), m[2](ids, off), m[3](ids.view(2, 4)),
                                                  m[4](ids, off), m[5](ids, off, per_sample_weights=w)),
                          (torch.tensor([0, 2, 9, 4, 2, 2, 7, 1]), torch.tensor([0, 3, 3, 8]), _r(8))),
    "mha_variants": (lambda: nn.ModuleList([nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 4, kdim=6, vdim=5, batch_first=True),
                                            nn.MultiheadAttention(8, 2, bias=True, add_bias_kv=True, add_zero_attn=True)]),
                     lambda m, x, kv6, kv5: (m[0](x, x, x, attn_mask=torch.randn(5, 5),
                                                  key_padding_mask=torch.tensor([[0.0] * 4 + [-math.inf], [0.0] * 5]))[0],
                                             m[0](x, x, x, need_weights=True, average_attn_weights=False),
                                             m[1](x.transpose(0, 1), kv6, kv5, need_weights=True),
                                             m[2](x, x, x, attn_mask=torch.ones(5, 5).triu(1).bool())[0],
                                             m[0](x[:, 0], x[:, 0], x[:, 0])[0]),
                     (_r(5, 2, 8), _r(2, 7, 6, seed=1), _r(2, 7, 5, seed=2))),
    "transformer_variants": (lambda: nn.ModuleList([
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", norm_first=True),
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, norm=nn.LayerNorm(8),
                              enable_nested_tensor=False),
        nn.TransformerDecoderLayer(8, 2, 16, batch_first=True, norm_first=True),
        nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16), 2),
        nn.Transformer(8, 2, 1, 1, 16, batch_first=True)]),
        lambda m, x, mem: (m[0](x, src_mask=torch.randn(5, 5)), m[1](x.transpose(0, 1), src_key_padding_mask=torch.tensor([[False] * 4 + [True]] * 2)),
                           m[2](x.transpose(0, 1), mem), m[3](x, mem.transpose(0, 1), tgt_mask=nn.Transformer.generate_square_subsequent_mask(5)),
                           m[4](mem, x.transpose(0, 1))),
        (_r(5, 2, 8), _r(2, 3, 8, seed=1))),
    "rnn_variants": (lambda: nn.ModuleList([nn.LSTM(4, 6, proj_size=3), nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True),
                                            nn.RNN(4, 3, nonlinearity="relu"), nn.RNN(4, 3, bias=False), nn.LSTMCell(4, 5),
                                            nn.GRUCell(4, 5), nn.RNNCell(4, 5)]),
                     lambda m, x, h: (m[0](x), m[0](x, (h[:1, :, :3], h[1:2, :, :6])), m[1](x.transpose(0, 1)),
                                      m[2](x), m[3](x[:, 0]), m[4](x[0]), m[4](x[0], (h[0, :, :5], h[1, :, :5])), m[5](x[0]),
                                      m[6](x[0], h[0, :, :5]), m[0](x[:, 0])),
                     (_r(7, 2, 4), _r(2, 2, 6, seed=1))),
    "resampling_modules": (lambda: nn.ModuleList([nn.Upsample(scale_factor=(1, 2, 2), mode="trilinear"),
                                                  nn.Upsample(size=(5, 3), mode="bilinear", align_corners=True),
                                                  nn.Upsample(scale_factor=3), nn.UpsamplingNearest2d(size=(6, 4)),
                                                  nn.UpsamplingBilinear2d(scale_factor=2), nn.PixelShuffle(2),
                                                  nn.PixelUnshuffle(2), nn.Fold((4, 6), 2, stride=2),
                                                  nn.Unfold(3, padding=1, dilation=1, stride=2)]),
                           lambda m, x: (m[0](x.unsqueeze(2)), m[1](x), m[2](x), m[3](x), m[4](x), m[5](x), m[6](x),
                                         m[7](m[8](x)[:, :16, :6]), m[8](x)),
                           (_r(1, 4, 4, 6),)),
    "unpool_fractional_lrn": (lambda: nn.ModuleList([nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2),
                                                     nn.MaxPool1d(3, 2, 1, return_indices=True), nn.MaxUnpool1d(3, 2, 1),
                                                     nn.FractionalMaxPool2d(2, output_size=(3, 4), return_indices=True,
                                                                            _random_samples=torch.rand(2, 3, 2, generator=_g(5))),
                                                     nn.FractionalMaxPool3d(2, output_ratio=0.5,
                                                                            _random_samples=torch.rand(2, 3, 3, generator=_g(6))),
                                                     nn.CrossMapLRN2d(3, alpha=0.1, beta=0.75, k=1.0),
                                                     nn.CrossMapLRN2d(4, alpha=0.5, beta=0.5, k=2.0)]),
                              lambda m, x: (lambda p, p2, q: (m[1](p[0], p[1]), m[1](p2[0], p2[1], output_size=(7, 9)),
                                                              m[3](q[0], q[1])))(m[0](x[:, :, :6, :8]), m[0](x), m[2](x.flatten(2)))
                              + (m[4](x), m[5](x.unsqueeze(2).expand(-1, -1, 4, -1, -1)), m[6](x), m[7](x)),
                              (_r(2, 3, 7, 9),)),
    "float64_mlp": (lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.LayerNorm(7), nn.Linear(7, 3)).double(),
                    lambda m, x: m(x), (_r(4, 5, dtype=torch.float64),)),
    "float16_mlp": (lambda: nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).half(),
                    lambda m, x: m(x) * 2, (_r(3, 8, dtype=torch.float16),)),
    "bf16_conv": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).to(torch.bfloat16),
                  lambda m, x: m(x).flatten(1).float(), (_r(1, 3, 6, 6, dtype=torch.bfloat16),)),
    "misc_modules": (lambda: nn.ModuleList([nn.Bilinear(3, 4, 2), nn.CosineSimilarity(dim=-1), nn.PairwiseDistance(p=1.0),
                                            nn.PReLU(), nn.GLU(), nn.Softmax2d(), nn.Unflatten(1, (2, 2)), nn.Flatten(0),
                                            nn.ReLU(inplace=True), nn.Identity(), nn.RReLU(), nn.ChannelShuffle(2),
                                            nn.ReflectionPad1d((2, 1)), nn.ZeroPad3d(1), nn.CircularPad1d(2)]),
                     lambda m, x, y: (m[0](x[..., :3], y), m[1](x, y), m[2](x, y), m[3](x), m[4](x), m[5](x.unsqueeze(0)),
                                      m[6](x), m[7](x), m[8](x * 1), m[9](x), m[10](x), m[11](x.unsqueeze(-1)),
                                      m[12](x), m[13](x.unsqueeze(0)), m[14](x)),
                     (_r(2, 4, 4), _r(2, 4, 4, seed=1))),
}


def _op_case(name):
    if name in OP_CASES:
        fn, inputs = OP_CASES[name]
        return _Fn(fn, len(inputs)).eval(), inputs
    make, fn, inputs = MODULE_CASES[name]
    torch.manual_seed(0)
    m = make()
    if isinstance(m, nn.ModuleList):
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
                with torch.no_grad():
                    sub.running_mean.uniform_(-0.1, 0.1)
                    sub.running_var.uniform_(0.5, 1.5)
    return _Fn(fn, len(inputs), m=m).eval(), inputs


def test_setitem_mutates_in_place(fxrun, tmp_path):
    """operator.setitem (which symbolic tracing cannot record, but hand-built graphs and other passes can)."""
    import operator

    g = torch.fx.Graph()
    x = g.placeholder("x")
    idx = g.placeholder("idx")
    y = g.call_method("clone", (x,))
    g.call_function(operator.setitem, (y, 0, 1.0))
    half = g.call_function(operator.mul, (g.call_function(operator.getitem, (x, (slice(None), slice(None, 2)))), 2))
    g.call_function(operator.setitem, (y, (slice(None), slice(1, 3)), half))
    g.call_function(operator.setitem, (y, (Ellipsis, 0), g.call_function(torch.zeros, ((3, 4),))))
    g.call_function(operator.setitem, (y, idx, -1.0))
    g.call_function(operator.setitem, (y, g.call_function(operator.gt, (y, 2)), 0.0))
    g.call_function(operator.setitem, (y, (1, slice(None), None, 2),
                                       g.call_function(operator.getitem, (x, (1, slice(None), slice(3, 4))))))
    g.output((y, x))
    gm = torch.fx.GraphModule(nn.Module(), g)
    art = tmp_path / "setitem.fxl"
    inputs = (_r(3, 4, 5) * 2, torch.tensor([2]))
    fxlower.export(gm, art, inputs, golden=True)
    proc = run(fxrun, art, "--check", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _outputs_match_pytorch(gm, inputs, art, tmp_path / "out.safetensors")


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("name", list(OP_CASES) + list(MODULE_CASES))
def test_operator_coverage(fxrun, tmp_path, name):
    module, inputs = _op_case(name)
    gm = torch.fx.symbolic_trace(module)
    art = tmp_path / f"{name}.fxl"
    fxlower.export(gm, art, inputs, golden=True)
    proc = run(fxrun, art, "--check", "--out", tmp_path / "out.safetensors")
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "check: PASS" in proc.stdout
    _outputs_match_pytorch(gm, inputs, art, tmp_path / "out.safetensors")


# ------------------------------------------------------------------------------------------------ core view (1.2)
# These tests export with fxlower.export(..., core=True) (the format 1.2 writer) and run the core view.

@pytest.mark.parametrize("name", ZOO)
def test_zoo_core_view_matches_golden_outputs(fxrun, tmp_path, name):
    case = MODELS[name]()
    art = tmp_path / "a"
    fxlower.export(trace(case), art, case.inputs, golden=True, core=True)
    proc = run(fxrun, art, "--view", "core", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("check: PASS")


class _DynBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _dyn_batch_artifact(tmp_path):
    torch.manual_seed(0)
    model = _DynBatch().eval()
    x = torch.randn(3, 3, 8, 8)
    batch = torch.export.Dim("batch", min=2, max=6)
    art = tmp_path / "dyn"
    fxlower.export(model, art, (x,), golden=True, core=True, dynamic_shapes={"x": {0: batch}})
    return model, art


def test_core_view_dynamic_batch_runs_at_sizes_in_range(fxrun, tmp_path):
    model, art = _dyn_batch_artifact(tmp_path)
    tol = manifest(art)["golden"]["tolerances"]["F32"]
    for n in (2, 4, 6):
        x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(n))
        save_file({"0": x}, str(tmp_path / f"in{n}.safetensors"))
        out = tmp_path / f"out{n}.safetensors"
        proc = run(fxrun, art, "--view", "core", "--inputs", tmp_path / f"in{n}.safetensors", "--out", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        got = load_file(str(out))["0"]
        with torch.no_grad():
            want = model(x)
        assert got.shape == (n, 2)
        assert torch.allclose(got, want, atol=tol["atol"], rtol=tol["rtol"]), (got - want).abs().max()


def test_core_view_size_out_of_range_names_the_symbol_and_range(fxrun, tmp_path):
    _, art = _dyn_batch_artifact(tmp_path)
    symbols = manifest(art)["core"]["symbols"]
    assert len(symbols) == 1
    (sym, rec), = symbols.items()
    assert (rec["min"], rec["max"]) == (2, 6)
    save_file({"0": torch.randn(7, 3, 8, 8)}, str(tmp_path / "in7.safetensors"))
    proc = run(fxrun, art, "--view", "core", "--inputs", tmp_path / "in7.safetensors")
    assert proc.returncode == 2
    assert f"symbol {sym} = 7" in proc.stderr and "outside its range [2, 6]" in proc.stderr


class _Cumsum(nn.Module):
    def forward(self, x):
        return torch.relu(x).cumsum(dim=1)


def test_core_view_unsupported_operator_is_named_before_execution(fxrun, tmp_path):
    art = tmp_path / "a"
    fxlower.export(_Cumsum(), art, (torch.randn(2, 3),), golden=True, core=True)
    proc = run(fxrun, art, "--view", "core", "--check")
    assert proc.returncode == 2
    assert "1 unsupported operation(s):" in proc.stderr
    assert "(call_function aten.cumsum.default): unsupported operator 'aten.cumsum.default'" in proc.stderr
    assert "check:" not in proc.stdout  # nothing ran


def test_core_view_absent_is_a_runtime_error(fxrun, tmp_path):
    art = tmp_path / "a"
    export("resnet", art)
    proc = run(fxrun, art, "--view", "core")
    assert proc.returncode == 2
    assert "the artifact has no core view" in proc.stderr


def test_view_option_rejects_other_values(fxrun, tmp_path):
    art = tmp_path / "a"
    export("resnet", art)
    proc = run(fxrun, art, "--view", "aten")
    assert proc.returncode == 2
    assert "--view takes module or core, not 'aten'" in proc.stderr


def _core_targets(case) -> set[str]:
    ep = torch.export.export(case.module, case.inputs, kwargs=case.kwargs).run_decompositions()
    out = set()
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        t = n.target
        if isinstance(t, torch._ops.OpOverload):
            ns, name = t._schema.name.split("::")
            out.add(f"{ns}.{name}.{t._overloadname or 'default'}")
        else:
            out.add(f"{t.__module__.lstrip('_')}.{t.__name__}")
    return out


def test_zoo_core_ops_list_in_ops_doc_is_current(gen_ops):
    """docs/ops.md's list of the zoo's core operators is what torch.export + run_decompositions() produce now."""
    found = set()
    for name in ZOO:
        found |= _core_targets(MODELS[name]())
    assert sorted(found) == list(gen_ops.ZOO_CORE_OPS)


def test_list_ops_covers_the_zoo_core_ops(fxrun, gen_ops):
    functions = set(gen_ops.parse(run(fxrun, "--list-ops").stdout)["function"])
    missing = [op for op in gen_ops.ZOO_CORE_OPS if op not in functions and op not in gen_ops.CONTROL_FLOW]
    assert missing == []


# ------------------------------------------------------------------------------------------------ core view: what
# a C++ consumer gains (issue 12): leaves it has no handler for, dynamic sequence length, control flow, and models
# that symbolic_trace cannot take.

def fxl_test_scaled_tanh(x):
    """A third-party-style leaf function: the module view keeps it as a call_function that C++ does not know."""
    return torch.tanh(x) * 0.5


torch.fx.wrap("fxl_test_scaled_tanh")


class _UserLeaf(nn.Module):
    """A user's leaf module with a lowering rule and no C++ handler."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 6))

    def forward(self, x):
        return x * self.weight + 1.0


class _UsesLeaves(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.leaf = _UserLeaf()

    def forward(self, x):
        return self.leaf(fxl_test_scaled_tanh(self.fc(x)))


def test_core_view_runs_what_the_module_view_cannot(fxrun, tmp_path):
    fxlower.register_module(_UserLeaf, attrs={"weight": "tensor"}, version=1)
    try:
        class Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m, qualname):
                return isinstance(m, _UserLeaf) or super().is_leaf_module(m, qualname)
        torch.manual_seed(0)
        model = _UsesLeaves().eval()
        gm = torch.fx.GraphModule(model, Tracer().trace(model))
        x = torch.randn(3, 6)
        art = tmp_path / "a"
        fxlower.export(gm, art, (x,), golden=True, core=True)
    finally:
        fxlower.lowering.book.unregister_module(_UserLeaf)
    nodes = {n["name"]: n for n in manifest(art)["graphs"][0]["nodes"]}
    assert nodes["leaf"]["op"] == "call_module" and nodes["leaf"]["lowering"]["module_type"].endswith("_UserLeaf")
    wrapped = nodes["fxl_test_scaled_tanh"]["target"]
    assert wrapped.endswith(".fxl_test_scaled_tanh")
    module_view = run(fxrun, art, "--check")
    assert module_view.returncode == 2  # the module view needs Python for these; named before execution
    assert wrapped in module_view.stderr or "_UserLeaf" in module_view.stderr
    core_view = run(fxrun, art, "--view", "core", "--check", "--out", tmp_path / "out.safetensors")
    assert core_view.returncode == 0, core_view.stdout + core_view.stderr
    with torch.no_grad():
        want = model(x)
    assert torch.allclose(load_file(str(tmp_path / "out.safetensors"))["0"], want, rtol=1e-3, atol=1e-4)


class _SeqModel(nn.Module):
    """A sequence model whose length is dynamic: embedding, a causal attention block, a head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def forward(self, ids):
        h = self.emb(ids)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.norm(h + a))


def test_core_view_dynamic_sequence_length_runs_at_sizes_in_range(fxrun, tmp_path):
    torch.manual_seed(0)
    model = _SeqModel().eval()
    ids = torch.randint(0, 20, (2, 8))
    seq = torch.export.Dim("seq", min=2, max=32)
    art = tmp_path / "seq"
    fxlower.export(model, art, (ids,), golden=True, core=True, dynamic_shapes={"ids": {1: seq}})
    (name, sym), = manifest(art)["core"]["symbols"].items()
    assert (sym["min"], sym["max"], sym["dim"]) == (2, 32, 1)
    for n in (3, 8, 17):
        x = torch.randint(0, 20, (2, n), generator=torch.Generator().manual_seed(n))
        save_file({"0": x}, str(tmp_path / f"in{n}.safetensors"))
        out = tmp_path / f"out{n}.safetensors"
        proc = run(fxrun, art, "--view", "core", "--inputs", tmp_path / f"in{n}.safetensors", "--out", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with torch.no_grad():
            want = model(x)
        got = load_file(str(out))["0"]
        assert got.shape == (2, n, 5)
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-4), (got - want).abs().max()


class _CondLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        from torch._higher_order_ops.while_loop import while_loop
        y = torch.cond(x.sum() > 0, lambda v: self.fc(v), lambda v: v * 2.0, (x,))
        return while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5), (torch.zeros((), dtype=torch.int64), y))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["true_branch", "false_branch"])
def test_cond_and_while_loop_round_trip_and_run_in_cpp(fxrun, tmp_path, sign):
    torch.manual_seed(0)
    model = _CondLoop().eval()
    x = torch.rand(2, 4) * sign
    ep = torch.export.export(model, (x,))
    art = tmp_path / "cf"
    fxlower.export(ep, art, golden=True)
    with torch.no_grad():
        want = model(x)
    rebuilt = fxlower.load(art).to_graph_module(view="core")(x)
    assert torch.equal(rebuilt[0], want[0]) and torch.equal(rebuilt[1], want[1])
    proc = run(fxrun, art, "--check")  # a core-only artifact runs its core view
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("check: PASS")


@pytest.mark.parametrize("make", ["gpt2", "bert", "llama"])
def test_transformers_style_models_run_both_views_in_cpp(fxrun, tmp_path, make):
    import hf_models
    case = getattr(hf_models, make)()
    art = tmp_path / make
    fxlower.export(case.module, art, (), example_kwargs=case.kwargs, core=True, golden=True)
    for view in ("module", "core"):
        proc = run(fxrun, art, "--view", view, "--check")
        assert proc.returncode == 0, (view, proc.stdout + proc.stderr)
        assert proc.stdout.rstrip().endswith("check: PASS")
