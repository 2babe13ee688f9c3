"""What export records in format 1.1 besides the graph: tensor state, training flags, the overload each call
binds to, and the eval-mode golden run. Expected values are written out by hand from PyTorch's own state."""

from __future__ import annotations

import msgpack
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fxlower
from fxlower.errors import ExportError


def _manifest(path) -> dict:
    with open(path / "manifest.msgpack", "rb") as f:
        return msgpack.unpackb(f.read(), raw=False)


class _Stateful(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.fc.bias.requires_grad_(False)  # a frozen parameter
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)
        self.offset = torch.ones(3)  # a plain tensor attribute: neither parameter nor buffer

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale + self.offset


def test_tensor_state_is_recorded_per_name(tmp_path):
    gm = fx.symbolic_trace(_Stateful().eval())
    # torch.fx copies get_attr tensors into the GraphModule as persistent buffers; give it back the state the
    # model had: a non-persistent buffer and a plain tensor attribute
    scale, offset = gm.scale, gm.offset
    del gm.scale, gm.offset
    gm.register_buffer("scale", scale, persistent=False)
    gm.offset = offset
    assert list(gm.state_dict()) == ["fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                      "bn.running_var", "bn.num_batches_tracked"]
    fxlower.export(gm, tmp_path / "a")
    state = {t["name"]: (t["kind"], t["requires_grad"], t["persistent"]) for t in _manifest(tmp_path / "a")["tensors"]}
    assert state == {
        "fc.weight": ("parameter", True, True),
        "fc.bias": ("parameter", False, True),
        "bn.weight": ("parameter", True, True),
        "bn.bias": ("parameter", True, True),
        "bn.running_mean": ("buffer", False, True),
        "bn.running_var": ("buffer", False, True),
        "bn.num_batches_tracked": ("buffer", False, True),
        "scale": ("buffer", False, False),
        "offset": ("constant", False, True),
    }


def test_training_flags_are_recorded_and_golden_runs_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    model[2].running_mean.fill_(0.25)
    model[2].running_var.fill_(4.0)
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = model.eval()(x)  # PyTorch's eval-mode result: the artifact's meaning
    gm = fx.symbolic_trace(model)  # shares the submodules with model
    gm.train()
    getattr(gm, "2").eval()  # mixed flags, as a user may leave them
    fxlower.export(gm, tmp_path / "a", (x,), golden=True)
    assert [m.training for m in gm.modules()] == [True, True, True, False]  # restored after the golden run
    m = _manifest(tmp_path / "a")
    assert m["graphs"][0]["training"] is True
    flags = {n["target"]: n["lowering"]["training"] for n in m["graphs"][0]["nodes"] if n["op"] == "call_module"}
    assert flags == {"0": True, "1": True, "2": False}
    art = fxlower.load(tmp_path / "a")
    assert torch.equal(art.golden_outputs(), expected)


class _Calls(nn.Module):
    def forward(self, x):
        a = x.view(2, -1)                       # Tensor.view(size: int[]) in its varargs form
        b = torch.add(a, 2)                     # the Number overload of torch.add
        c = torch.add(b, a, alpha=3)            # the Tensor overload, alpha keyword-only
        d = F.softmax(c, dim=1)                 # F.softmax passes _stacklevel when traced
        return d.size(1), torch.flatten(d)


def _overload_of(m: dict, target: str) -> list[tuple[str, str]]:
    out = []
    for n in m["graphs"][0]["nodes"]:
        if n["target"] == target and n["op"] in ("call_function", "call_method"):
            table = m["functions"] if n["op"] == "call_function" else m["methods"]
            out.append([(p["name"], p["kind"]) for p in table[target][n["overload"]]["params"]])
    return out


def test_each_call_records_the_overload_its_arguments_bind_to(tmp_path):
    gm = fx.symbolic_trace(_Calls())
    fxlower.export(gm, tmp_path / "a", (torch.randn(2, 3),))
    m = _manifest(tmp_path / "a")
    pk, kw = "positional_or_keyword", "keyword_only"
    assert _overload_of(m, "view") == [[("input", pk), ("size", pk)]]
    assert _overload_of(m, "torch.add") == [
        [("input", pk), ("other", pk), ("alpha", pk)],          # aten::add.Scalar(self, Scalar other, Scalar alpha=1)
        [("input", pk), ("other", pk), ("alpha", kw)],          # aten::add.Tensor(self, Tensor other, *, alpha=1)
    ]
    assert _overload_of(m, "torch.nn.functional.softmax") == [
        [("input", pk), ("dim", pk), ("_stacklevel", pk), ("dtype", pk)]]
    assert _overload_of(m, "size") == [[("input", pk), ("dim", pk)]]
    assert _overload_of(m, "torch.flatten") == [[("input", pk), ("start_dim", pk), ("end_dim", pk)]]
    softmax = [n for n in m["graphs"][0]["nodes"] if n["target"] == "torch.nn.functional.softmax"][0]
    assert "_stacklevel" not in softmax["kwargs"]  # private kwargs are not written
    assert sorted(softmax["kwargs"]) == ["dim", "dtype"]
    # the defaults a consumer needs to fill unbound parameters
    flatten = m["functions"]["torch.flatten"][0]["params"]
    assert [(p["default"], p["required"]) for p in flatten] == [(None, True), (0, False), (-1, False)]
    assert m["methods"]["size"] == [
        {"params": [{"name": "input", "kind": pk, "default": None, "required": True},
                    {"name": "dim", "kind": pk, "default": None, "required": True}], "returns": "int"},
        {"params": [{"name": "input", "kind": pk, "default": None, "required": True}], "returns": "List[int]"}]


def test_a_private_keyword_argument_other_than_stacklevel_is_refused(tmp_path):
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.mul, (x, 2), {"_secret": 3}))
    gm = fx.GraphModule(nn.Module(), graph)
    with pytest.raises(ExportError, match=r"node 'mul' in root graph passes the private keyword argument '_secret'"):
        fxlower.export(gm, tmp_path / "a")
    assert not (tmp_path / "a").exists()
