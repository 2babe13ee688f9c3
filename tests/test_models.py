"""Sanity checks for the test-model zoo in ``tests/models.py``."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch.utils._pytree import tree_flatten

try:
    from models import MODELS, ModelCase, trace
except ImportError:  # pragma: no cover - depends on how pytest sets sys.path
    from tests.models import MODELS, ModelCase, trace


NAMES = sorted(MODELS)


@pytest.fixture(scope="module")
def cases():
    cache: dict[str, ModelCase] = {}

    def get(name: str) -> ModelCase:
        if name not in cache:
            cache[name] = MODELS[name]()
        return cache[name]

    return get


def _assert_same(expected, actual):
    exp_leaves, exp_spec = tree_flatten(expected)
    act_leaves, act_spec = tree_flatten(actual)
    assert exp_spec == act_spec
    assert len(exp_leaves) > 0
    for e, a in zip(exp_leaves, act_leaves):
        assert isinstance(a, torch.Tensor)
        assert e.dtype == a.dtype and e.shape == a.shape
        assert torch.equal(e, a)


@pytest.mark.parametrize("name", NAMES)
def test_case_is_well_formed(name, cases):
    case = cases(name)
    assert case.name == name
    assert isinstance(case.module, torch.nn.Module)
    assert not any(m.training for m in case.module.modules())
    assert isinstance(case.inputs, tuple) and len(case.inputs) > 0
    assert isinstance(case.kwargs, dict)
    fresh = case.make_inputs(1)
    assert isinstance(fresh, tuple) and len(fresh) == len(case.inputs)
    for f, i in zip(fresh, case.inputs):
        assert f.shape == i.shape and f.dtype == i.dtype
    assert any(not torch.equal(f, i) for f, i in zip(fresh, case.inputs))
    # The factory is deterministic.
    again = MODELS[name]()
    for f, i in zip(again.inputs, case.inputs):
        assert torch.equal(f, i)
    sd1, sd2 = case.module.state_dict(), again.module.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_trace_matches_eager(name, cases):
    case = cases(name)
    gm = trace(case)
    assert isinstance(gm, torch.fx.GraphModule)
    assert any(n.op == "call_module" for n in gm.graph.nodes)
    with torch.no_grad():
        expected = case.module(*case.inputs, **case.kwargs)
        actual = gm(*case.inputs, **case.kwargs)
        _assert_same(expected, actual)
        fresh = case.make_inputs(7)
        _assert_same(case.module(*fresh, **case.kwargs), gm(*fresh, **case.kwargs))


def test_nested_graphmodule_is_call_module(cases):
    case = cases("nested_graphmodule")
    assert case.tracer_cls is not None
    gm = trace(case)
    targets = [
        gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"
    ]
    assert any(isinstance(m, torch.fx.GraphModule) for m in targets)
    # The default tracer inlines the nested GraphModule instead.
    default = torch.fx.symbolic_trace(case.module)
    assert not any(
        isinstance(default.get_submodule(n.target), torch.fx.GraphModule)
        for n in default.graph.nodes
        if n.op == "call_module"
    )


@pytest.mark.parametrize("name", ["gpt_masked", "gpt_sdpa"])
def test_gpt_weights_tied(name, cases):
    module = cases(name).module
    assert module.lm_head.weight is module.wte.weight
    gm = trace(cases(name))
    assert gm.lm_head.weight is gm.wte.weight


def test_bf16_mlp_dtypes(cases):
    case = cases("bf16_mlp")
    assert all(p.dtype == torch.bfloat16 for p in case.module.parameters())
    assert all(x.dtype == torch.bfloat16 for x in case.inputs)


def test_dict_tuple_outputs_structure(cases):
    case = cases("dict_tuple_outputs")
    out = trace(case)(*case.inputs)
    assert isinstance(out, dict) and set(out) == {"logits", "aux"}
    assert isinstance(out["aux"], tuple) and isinstance(out["aux"][1], list)
