"""Models whose submodule names are not Python identifiers (docs/format.md section 3.1): torchvision's RegNet
names its blocks "block1-0"; others use spaces or non-ASCII. They export with golden data, load, and rebuild into a
module that computes bit-identical results with autograd enabled.

The C++ side (fxlower-run on these artifacts) is checked by tests/test_cpp_reader.py over the model zoo, which
includes both models."""

from __future__ import annotations

import pytest
import torch

import fxlower

try:
    from models import MODELS, trace
except ImportError:  # pragma: no cover - depends on how pytest sets sys.path
    from tests.models import MODELS, trace

#: Every call_module target of the traced RegNet (written out by hand from RegNetSmall's structure).
REGNET_BLOCK_TARGETS = {
    f"trunk_output.{stage}.{block}.{path}"
    for stage, block in (("block1", "block1-0"), ("block1", "block1-1"), ("block2", "block2-0"))
    for path in ("f.a.0", "f.a.1", "f.a.2", "f.b.0", "f.b.1", "f.b.2", "f.se.avgpool", "f.se.fc1",
                 "f.se.activation", "f.se.fc2", "f.se.scale_activation", "f.c.0", "f.c.1", "activation")
} | {"trunk_output.block1.block1-0.proj.0", "trunk_output.block1.block1-0.proj.1",
     "trunk_output.block2.block2-0.proj.0", "trunk_output.block2.block2-0.proj.1"}
REGNET_TARGETS = REGNET_BLOCK_TARGETS | {"stem.0", "stem.1", "stem.2", "avgpool", "fc"}
ODD_TARGETS = {"layer 1.0", "layer 1.1", "2nd-head"}


def _roundtrip(name, tmp_path):
    case = MODELS[name]()
    gm = trace(case)
    summary = fxlower.export(gm, tmp_path / name, case.inputs, golden=True)
    assert summary.tensors > 0
    art = fxlower.load(tmp_path / name, verify=True)
    return case, gm, art


def test_regnet_targets_are_torchvision_style(tmp_path):
    case, gm, art = _roundtrip("regnet", tmp_path)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert targets == REGNET_TARGETS
    loaded = {n.target for n in art.graphs[0].nodes if n.op == "call_module"}
    assert loaded == REGNET_TARGETS
    # grouped 3x3 convolutions: 16 channels in groups of 8, 32 in groups of 8
    rec = next(n for n in art.graphs[0].nodes if n.target == "trunk_output.block1.block1-0.f.b.0").lowering
    assert rec.module_type == "torch.nn.Conv2d" and rec.attrs["groups"] == 2
    rec = next(n for n in art.graphs[0].nodes if n.target == "trunk_output.block2.block2-0.f.b.0").lowering
    assert rec.attrs["groups"] == 4
    names = {t.name for t in art.manifest.tensors}
    assert {"trunk_output.block1.block1-1.f.se.fc1.weight",
            "trunk_output.block2.block2-0.proj.1.running_var"} <= names


def test_odd_names_targets_and_tensor_names(tmp_path):
    case, gm, art = _roundtrip("odd_names", tmp_path)
    assert {n.target for n in art.graphs[0].nodes if n.op == "call_module"} == ODD_TARGETS
    assert {n.target for n in art.graphs[0].nodes if n.op == "get_attr"} == {"ü.γ", "ü.β"}
    names = {t.name for t in art.manifest.tensors if not t.name.startswith("golden/")}
    assert names == {"layer 1.0.weight", "layer 1.0.bias", "layer 1.1.weight", "layer 1.1.bias", "ü.γ", "ü.β",
                     "2nd-head.weight", "2nd-head.bias"}


@pytest.mark.parametrize("name", ["regnet", "odd_names"])
def test_rebuild_is_bit_exact_with_grad_enabled(name, tmp_path):
    case, gm, art = _roundtrip(name, tmp_path)
    rebuilt = art.to_graph_module()
    # golden outputs reproduce
    with torch.no_grad():
        out = rebuilt(*art.golden_inputs())
    expected = art.golden_outputs()
    assert out.dtype == expected.dtype and torch.equal(out, expected)
    # fresh inputs, autograd enabled (the default mode of a user's forward)
    for seed in (3, 11):
        fresh = case.make_inputs(seed)
        with torch.enable_grad():
            want = gm(*fresh)
            got = rebuilt(*fresh)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got.detach(), want.detach()), f"{name}: rebuilt output differs for inputs {seed}"


@pytest.mark.parametrize("name", ["regnet", "odd_names"])
def test_rebuild_keeps_parameter_and_buffer_names(name, tmp_path):
    """Format 1.1 tensor state (docs/format.md 2.1): same parameters (with requires_grad), buffers, state_dict."""
    case, gm, art = _roundtrip(name, tmp_path)
    rebuilt = art.to_graph_module()
    assert ({k: p.requires_grad for k, p in rebuilt.named_parameters()}
            == {k: p.requires_grad for k, p in gm.named_parameters()})
    assert sorted(k for k, _ in rebuilt.named_buffers()) == sorted(k for k, _ in gm.named_buffers())
    assert sorted(rebuilt.state_dict()) == sorted(gm.state_dict())
