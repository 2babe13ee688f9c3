"""What a loaded artifact gives back: the exported module's state, the bytes it validated, and memory it owns.

- State (format 1.1, issue 13.1): the rebuilt module has the original's named_parameters(), named_buffers(),
  state_dict() keys, requires_grad flags, buffer persistence and training flags; 1.0 files keep the 1.0 rule.
- No race (issue 13.2): a loaded artifact reads only the bytes it validated, even after the directory is replaced
  by another export or deleted.
- copy=False: the rebuilt module's tensors are private copy-on-write views; writing them changes neither the
  files nor what the artifact or another rebuilt module reads.

Expected values come from the original PyTorch modules (their tensors, flags and outputs) or are written by hand.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import msgpack
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fxlower
from downgrade import rewrite, to_1_0

MANIFEST = "manifest.msgpack"


def export(gm: fx.GraphModule, path: Path, inputs=None, **kw) -> Path:
    fxlower.export(gm, path, inputs, **kw)
    return path


def read_m(p: Path) -> dict:
    return msgpack.unpackb((p / MANIFEST).read_bytes(), raw=False, strict_map_key=False)


def write_m(p: Path, m: dict) -> None:
    (p / MANIFEST).write_bytes(msgpack.packb(m, use_bin_type=True))


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN and -0.0 included)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.detach().reshape(-1).view(torch.uint8), b.detach().reshape(-1).view(torch.uint8)))


def assert_same_state(rebuilt: nn.Module, original: nn.Module) -> None:
    """named_parameters, named_buffers, state_dict: same names, same bytes, same requires_grad; same
    persistence (a buffer is in state_dict iff it was)."""
    for getter in ("named_parameters", "named_buffers"):
        got = dict(getattr(rebuilt, getter)())
        want = dict(getattr(original, getter)())
        assert sorted(got) == sorted(want), getter
        for name, t in want.items():
            assert same_tensor(got[name], t), name
            assert got[name].requires_grad == t.requires_grad, name
            assert type(got[name]) is type(t) or getter == "named_buffers", name
    got_sd, want_sd = rebuilt.state_dict(), original.state_dict()
    assert sorted(got_sd) == sorted(want_sd)
    for name, t in want_sd.items():
        assert same_tensor(got_sd[name], t), name


# ------------------------------------------------------------------------------------------------ models

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1)
        self.bn = nn.BatchNorm1d(2)
        self.gain = nn.Parameter(torch.tensor([2.0, -1.0]))

    def forward(self, x):
        return self.bn(self.conv(x)) * self.gain[:, None]


class Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.blocks(x).transpose(1, 2))


def stateful() -> fx.GraphModule:
    """The exported module: parameters that require grad and frozen ones, an unused parameter, persistent and
    non-persistent buffers (at the root, in a container, in a leaf), nested containers, mixed training flags."""
    torch.manual_seed(0)
    model = Stateful()
    with torch.no_grad():
        for b in model.blocks:
            b.bn.running_mean.copy_(torch.tensor([0.5, -0.25]))
            b.bn.running_var.copy_(torch.tensor([2.0, 0.5]))
    gm = fx.symbolic_trace(model)
    gm.head.weight.requires_grad_(False)
    gm.unused = nn.Parameter(torch.tensor([7.0]))
    gm.register_buffer("table", torch.arange(3), persistent=False)
    gm.register_buffer("kept", torch.tensor([1.5]))
    gm.get_submodule("blocks").register_buffer("scale", torch.tensor([0.25, 4.0]), persistent=False)
    gm.get_submodule("blocks.1.bn").register_buffer("extra", torch.tensor([9.0]), persistent=False)
    gm.train()
    gm.get_submodule("blocks.1").eval()
    gm.head.eval()
    return gm


# ------------------------------------------------------------------------------------------------ state

def test_rebuilt_module_has_the_original_state_and_flags(tmp_path):
    gm = stateful()
    x = torch.randn(1, 2, 2)
    art = fxlower.load(export(gm, tmp_path / "s.fxl", (x,)))
    rebuilt = art.to_graph_module()
    assert_same_state(rebuilt, gm)
    assert rebuilt.training is True
    for path in ("blocks.0.conv", "blocks.0.bn", "blocks.1.conv", "blocks.1.bn", "head"):
        assert rebuilt.get_submodule(path).training == gm.get_submodule(path).training, path
    assert [rebuilt.get_submodule(p).training for p in ("blocks.0.bn", "blocks.1.bn", "head")] == [True, False, False]
    assert isinstance(rebuilt.get_submodule("blocks.1.bn"), nn.BatchNorm1d)
    rebuilt.eval()
    gm.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), gm(x))


def test_non_persistent_buffers_stay_out_of_state_dict(tmp_path):
    gm = stateful()
    rebuilt = fxlower.load(export(gm, tmp_path / "s.fxl")).to_graph_module()
    non_persistent = {"table", "blocks.scale", "blocks.1.bn.extra"}
    assert non_persistent <= set(dict(rebuilt.named_buffers()))
    assert not non_persistent & set(rebuilt.state_dict())
    assert {"kept", "blocks.0.bn.running_mean", "blocks.0.bn.num_batches_tracked"} <= set(rebuilt.state_dict())


def test_requires_grad_flags_survive_and_gradients_flow(tmp_path):
    gm = stateful()
    rebuilt = fxlower.load(export(gm, tmp_path / "s.fxl")).to_graph_module()
    assert rebuilt.head.weight.requires_grad is False
    assert rebuilt.head.bias.requires_grad is True
    assert rebuilt.unused.requires_grad is True
    rebuilt(torch.ones(1, 2, 2)).sum().backward()
    assert rebuilt.head.weight.grad is None
    assert rebuilt.head.bias.grad is not None and rebuilt.get_submodule("blocks.0").gain.grad is not None


def test_tied_parameters_stay_one_parameter(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    gm = fx.symbolic_trace(Tied())
    rebuilt = fxlower.load(export(gm, tmp_path / "t.fxl")).to_graph_module()
    assert [n for n, _ in rebuilt.named_parameters()] in (["a.weight"], ["b.weight"])
    assert rebuilt.a.weight is rebuilt.b.weight
    assert sorted(rebuilt.state_dict()) == ["a.weight", "b.weight"]


def test_state_recorded_by_hand_is_what_the_rebuilt_module_has(tmp_path):
    """The loader follows the manifest's kind / requires_grad / persistent / training, set here by hand."""
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("scale", torch.tensor([0.5, 2.0]))

        def forward(self, x):
            return self.lin(x) * self.scale

    gm = fx.symbolic_trace(Small())
    p = export(gm, tmp_path / "h.fxl")
    m = read_m(p)
    state = {t["name"]: t for t in m["tensors"]}
    state["lin.weight"].update(kind="parameter", requires_grad=False, persistent=True)
    state["lin.bias"].update(kind="buffer", requires_grad=False, persistent=False)
    state["scale"].update(kind="parameter", requires_grad=True, persistent=True)
    m["graphs"][0]["training"] = True
    next(n for n in m["graphs"][0]["nodes"] if n["name"] == "lin")["lowering"]["training"] = True
    write_m(p, m)
    rebuilt = fxlower.load(p).to_graph_module()
    assert sorted(n for n, _ in rebuilt.named_parameters()) == ["lin.weight", "scale"]
    assert rebuilt.lin.weight.requires_grad is False and rebuilt.scale.requires_grad is True
    assert [n for n, _ in rebuilt.named_buffers()] == ["lin.bias"]
    assert sorted(rebuilt.state_dict()) == ["lin.weight", "scale"]
    assert rebuilt.training is True and rebuilt.lin.training is True


def test_a_1_0_file_keeps_the_1_0_rule(tmp_path):
    """1.0: floating leaf tensors are frozen parameters, other tensors buffers, only what the graph uses is
    placed, and the module is in eval mode."""
    gm = stateful()
    p = rewrite(export(gm, tmp_path / "old.fxl"), to_1_0)
    rebuilt = fxlower.load(p).to_graph_module()
    params = dict(rebuilt.named_parameters())
    assert "unused" not in params and "table" not in dict(rebuilt.named_buffers())  # no graph node uses them
    assert params["head.weight"].requires_grad is False and params["head.bias"].requires_grad is False
    assert "blocks.0.bn.num_batches_tracked" in dict(rebuilt.named_buffers())  # an int leaf tensor: a buffer
    assert "blocks.0.gain" in dict(rebuilt.named_buffers())  # get_attr: a buffer under the 1.0 rule
    assert "blocks.1.bn.extra" not in dict(rebuilt.named_buffers())  # not a BatchNorm rule attribute
    assert all(not mod.training for mod in rebuilt.modules())


# ------------------------------------------------------------------------------------------------ EdgeNeXt

class LayerNormCF(nn.LayerNorm):
    """EdgeNeXt style: a LayerNorm subclass with a forward of its own."""

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


@pytest.fixture
def layer_norm_cf_rule():
    """A rule for LayerNormCF, registered for the test only (the book is global)."""
    fxlower.register_module(LayerNormCF, attrs={"normalized_shape": "int[]", "eps": "float", "elementwise_affine": "bool",
                                                "weight": "tensor|none", "bias": "tensor|none"},
                            version=1)
    yield
    fxlower.lowering.book.unregister_module(LayerNormCF)


class EdgeStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = LayerNormCF(4)
        with torch.no_grad():
            self.norm.weight.copy_(torch.tensor([1.5, -0.5, 2.0, 0.25]))
            self.norm.bias.copy_(torch.tensor([0.125, 0.0, -1.0, 3.0]))

    def forward(self, x):
        # The same module is a leaf here ...
        y = self.norm(x)
        # ... and its parameters are get_attr nodes there.
        return F.layer_norm(y * 2, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)


class _LeafNorm(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return qualname == "norm" or super().is_leaf_module(m, qualname)


def test_a_module_that_is_a_leaf_and_has_get_attr_parameters_reloads_bit_exactly_from_1_0(tmp_path, layer_norm_cf_rule):
    model = EdgeStyle().eval()
    gm = fx.GraphModule(model, _LeafNorm().trace(model))
    x = torch.randn(2, 4)
    rebuilt = fxlower.load(rewrite(export(gm, tmp_path / "e10.fxl", (x,)), to_1_0)).to_graph_module()
    with torch.no_grad():
        assert same_tensor(rebuilt(x), gm(x))
    assert rebuilt.norm.weight.requires_grad is False  # 1.0 rule: a frozen parameter


def test_a_module_that_is_a_leaf_and_has_get_attr_parameters_reloads_bit_exactly(tmp_path, layer_norm_cf_rule):
    model = EdgeStyle().eval()
    gm = fx.GraphModule(model, _LeafNorm().trace(model))
    ops = {(n.op, str(n.target)) for n in gm.graph.nodes}
    assert ("call_module", "norm") in ops and ("get_attr", "norm.weight") in ops
    x = torch.randn(2, 4)
    art = fxlower.load(export(gm, tmp_path / "e.fxl", (x,), golden=True))
    rebuilt = art.to_graph_module()  # was: KeyError "attribute 'weight' already exists"
    assert isinstance(rebuilt.norm, LayerNormCF)
    assert rebuilt.norm.weight is dict(rebuilt.named_parameters())["norm.weight"]
    with torch.no_grad():
        assert same_tensor(rebuilt(x), gm(x))
    assert same_tensor(rebuilt(*art.golden_inputs()), art.golden_outputs())
    assert_same_state(rebuilt, gm)


# ------------------------------------------------------------------------------------------------ names

def test_module_names_that_are_not_identifiers_round_trip(tmp_path):
    root = nn.Module()
    for name in ("block1-0", "layer 1", "ü", "0"):
        root.add_module(name, nn.Linear(2, 2))
    g = fx.Graph()
    x = g.placeholder("x")
    y = x
    for name in ("block1-0", "layer 1", "ü", "0"):
        y = g.call_module(name, (y,))
    w = g.get_attr("layer 1.weight")
    g.output(g.call_function(torch.add, (y, g.call_function(torch.sum, (w,)))))
    gm = fx.GraphModule(root, g)
    x_in = torch.randn(3, 2)
    art = fxlower.load(export(gm, tmp_path / "n.fxl", (x_in,), golden=True))
    rebuilt = art.to_graph_module()
    assert 'getattr(self, "block1-0")' in rebuilt.code and 'getattr(self, "layer 1")' in rebuilt.code
    assert "self.ü" in rebuilt.code
    with torch.no_grad():
        assert same_tensor(rebuilt(x_in), gm(x_in))
    assert_same_state(rebuilt, gm)


# ------------------------------------------------------------------------------------------------ no race

class Pair(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 3, generator=g))
            self.lin.bias.copy_(torch.randn(3, generator=g))
        self.register_buffer("shift", torch.randn(3, generator=g))

    def forward(self, x):
        return self.lin(x) + self.shift


@pytest.mark.parametrize("replace", ["overwrite", "delete"])
def test_a_loaded_artifact_reads_the_bytes_it_validated(tmp_path, replace):
    first, second = fx.symbolic_trace(Pair(1)), fx.symbolic_trace(Pair(2))
    path = tmp_path / "race.fxl"
    x = torch.randn(2, 3)
    export(first, path, (x,), golden=True)
    art = fxlower.load(path)
    if replace == "overwrite":
        export(second, path, (x,), golden=True, overwrite=True)
        assert same_tensor(fxlower.load(path).tensor("shift"), second.shift)  # the path holds the other model
    else:
        shutil.rmtree(path)
    want = dict(first.state_dict())
    for name in ("lin.weight", "lin.bias", "shift"):
        assert same_tensor(art.tensor(name), want[name]), name
        assert bytes(art.stored_bytes(name)) == want[name].numpy().tobytes(), name
    art.verify()
    for copy in (True, False):
        rebuilt = art.to_graph_module(copy=copy)
        assert_same_state(rebuilt, first)
        with torch.no_grad():
            assert same_tensor(rebuilt(x), first(x))
    assert same_tensor(art.golden_inputs()[0], x)
    art.close()


def test_a_closed_artifact_refuses_reads(tmp_path):
    art = fxlower.load(export(fx.symbolic_trace(Pair(1)), tmp_path / "c.fxl"))
    art.close()
    with pytest.raises(ValueError, match="closed"):
        art.tensor("shift")
    with pytest.raises(ValueError, match="closed"):
        art.to_graph_module()


# ------------------------------------------------------------------------------------------------ copy=False

def test_zero_copy_module_writes_stay_private(tmp_path):
    model = fx.symbolic_trace(Pair(3))
    p = export(model, tmp_path / "z.fxl")
    before = (p / "weights.safetensors").read_bytes()
    art = fxlower.load(p)
    view = art.to_graph_module(copy=False)
    assert_same_state(view, model)
    with torch.no_grad():
        view.lin.weight.add_(1.0)
        view.shift.zero_()
    assert torch.equal(view.lin.weight, model.lin.weight + 1.0)
    assert same_tensor(art.tensor("lin.weight"), model.lin.weight)  # the artifact's reads are unchanged
    assert_same_state(art.to_graph_module(copy=False), model)  # so is another rebuild
    art.verify()
    art.close()
    assert torch.equal(view.shift, torch.zeros(3))  # the module keeps its mapping after close
    assert (p / "weights.safetensors").read_bytes() == before


def test_copied_module_owns_its_memory(tmp_path):
    model = fx.symbolic_trace(Pair(4))
    p = export(model, tmp_path / "o.fxl")
    art = fxlower.load(p)
    rebuilt = art.to_graph_module()
    view = art.to_graph_module(copy=False)
    # Someone writes into the file in place (not a replace): a copy does not see it, an untouched view does.
    weights = p / "weights.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        f.write(b"\0" * (size - 8 - n))
    assert_same_state(rebuilt, model)
    assert torch.equal(view.shift, torch.zeros(3))


def _graph_using(*names: str) -> fx.Graph:
    """x -> x + sum of each named tensor (as float64): get_attr nodes for them (fx folds buffers it traces)."""
    g = fx.Graph()
    y = g.placeholder("x")
    for name in names:
        t = g.call_method("to", (g.get_attr(name), torch.float64))
        y = g.call_function(torch.add, (y, g.call_function(torch.sum, (t,))))
    g.output(y)
    return g


def test_special_values_survive_bit_exactly(tmp_path):
    class Special(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("f", torch.tensor([float("nan"), -0.0, float("-inf"), 5e-324], dtype=torch.float64))
            self.register_buffer("i", torch.tensor([-(2**63), 2**63 - 1], dtype=torch.int64))


    model = fx.GraphModule(Special(), _graph_using("f", "i"))
    art = fxlower.load(export(model, tmp_path / "sp.fxl"))
    for copy in (True, False):
        rebuilt = art.to_graph_module(copy=copy)
        assert bytes(rebuilt.f.numpy().tobytes()) == struct.pack("<4d", float("nan"), -0.0, float("-inf"), 5e-324)
        assert rebuilt.i.tolist() == [-(2**63), 2**63 - 1]
