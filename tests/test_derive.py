"""derive_module_view: the module view of a model symbolic_trace cannot trace, rebuilt from its Core ATen program.

Expected values come from PyTorch (ep.module(), the eager model, nn_module_stack read here) and from the hand-written
lists in hf_models.py, never from fxlower.views.derive itself.
"""

from __future__ import annotations

import operator
import os
import sys

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fxlower
from fxlower.views.derive import META_KEY, derive_module_view

sys.path.insert(0, os.path.dirname(__file__))
from hf_models import HF_MODELS, llama  # noqa: E402

# the torch.nn classes these models use that have a built-in lowering rule (written by hand, not asked of the book)
RULE_TYPES = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.Dropout, nn.GELU, nn.Tanh, nn.SiLU, nn.ReLU)


def _export(module, args=(), kwargs=None):
    return torch.export.export(module, args, kwargs or {}).run_decompositions()


@pytest.fixture(scope="module", params=sorted(HF_MODELS))
def derived(request):
    case = HF_MODELS[request.param]()
    ep = _export(case.module, (), case.kwargs)
    gm, links = derive_module_view(ep, case.module)
    return case, ep, gm, links


def _user_input_names(ep):
    user = torch.export.graph_signature.InputKind.USER_INPUT
    return [s.arg.name for s in ep.graph_signature.input_specs if s.kind == user]


def _fields(out):
    return {k: getattr(out, k) for k in vars(out) if getattr(out, k) is not None} if not isinstance(out, dict) \
        else dict(out)


# --------------------------------------------------------------------------------------------------------------
# The transformer-style models

@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_symbolic_trace_refuses_the_hf_style_models(name):
    case = HF_MODELS[name]()
    with pytest.raises(TypeError) as info:
        torch.fx.symbolic_trace(case.module)
    # gpt2/llama: torch.finfo of a traced dtype; bert: slicing a buffer with a traced size
    expected = "slice indices must be integers" if name == "bert" else "torch.finfo() requires a floating point"
    assert expected in str(info.value)


def test_call_module_targets_are_exactly_the_rule_bearing_calls(derived):
    case, ep, gm, links = derived
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert tuple(calls) == case.leaf_calls
    kept = gm.meta[META_KEY].kept_as_ops
    assert tuple(k.module for k in kept) == case.kept


def test_placeholders_are_the_user_inputs_named_as_in_the_program(derived):
    case, ep, gm, links = derived
    names = [n.name for n in gm.graph.find_nodes(op="placeholder")]
    assert names == _user_input_names(ep) == list(case.kwargs)


def test_outputs_are_bit_identical_to_the_exported_program_and_close_to_eager(derived):
    case, ep, gm, links = derived
    out = gm(*[case.kwargs[n] for n in _user_input_names(ep)])
    ref = _fields(ep.module()(**case.kwargs))
    with torch.no_grad():
        eager = _fields(case.module(**case.kwargs))
    assert isinstance(out, dict) and list(out) == list(ref) == list(eager)
    for k in out:
        assert torch.equal(out[k], ref[k]), k
        torch.testing.assert_close(out[k], eager[k], rtol=0, atol=1e-5)
    assert gm.meta[META_KEY].output_classes == {"": case.output_class}


def test_lift_records_every_call_module_with_the_models_own_tensors(derived):
    case, ep, gm, links = derived
    fxlower.lift(gm)
    for node in gm.graph.find_nodes(op="call_module"):
        module = case.module.get_submodule(node.target)
        rec = node.meta["lowering"]
        assert rec.module_type == f"torch.nn.{type(module).__name__}"
        if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm)):
            assert rec.attrs["weight"] is module.weight


def test_every_core_node_links_to_the_node_it_became(derived):
    case, ep, gm, links = derived
    new = {n.name: n for n in gm.graph.nodes}
    calls: dict[str, list[str]] = {}
    for n in gm.graph.find_nodes(op="call_module"):
        calls.setdefault(n.target, []).append(n.name)
    kept = set(case.kept)
    sig = ep.graph_signature
    owned = {s.arg.name for s in sig.input_specs if s.kind != torch.export.graph_signature.InputKind.USER_INPUT}
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in owned:
                # a tensor the model owns: linked only where an op outside the groups reads it, to its get_attr
                if node.name in links:
                    target = next(s.target for s in sig.input_specs if s.arg.name == node.name)
                    assert new[links[node.name]].op == "get_attr" and new[links[node.name]].target == target
                continue
            assert links[node.name] == node.name and new[node.name].op == "placeholder"
            continue
        if node.op == "output":
            assert links[node.name] == "output"
            continue
        # expected from nn_module_stack: the outermost torch.nn module with a rule, and which call of it this is
        leaf = None
        for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
            if path and isinstance(case.module.get_submodule(path), RULE_TYPES):
                leaf = (path, int(key.rpartition("@")[2]) if "@" in key else 0)
                break
        if leaf is None or leaf[0] in kept:
            assert links[node.name] == node.name, node.name
            assert new[node.name].op == "call_function" and new[node.name].target == node.target
        else:
            path, k = leaf
            assert links[node.name] == calls[path][k], node.name


def test_non_persistent_buffers_stay_non_persistent_and_shared(derived):
    case, ep, gm, links = derived
    expected = {"bert": {"embeddings.position_ids"},  # token_type_ids is given, so its buffer is unused
                "llama": {"rotary_emb.cos_cached", "rotary_emb.sin_cached"}, "gpt2": set()}[case.name]
    used = {n.target for n in gm.graph.find_nodes(op="get_attr")} & {k for k, _ in case.module.named_buffers()}
    assert used == expected
    for name in expected:
        assert gm.get_buffer(name) is case.module.get_buffer(name)
        assert name not in gm.state_dict()


def test_tied_lm_head_is_a_call_module_reading_the_embedding_weight():
    case = llama()
    ep = _export(case.module, (), case.kwargs)
    gm, _ = derive_module_view(ep, case.module)
    head = [n for n in gm.graph.find_nodes(op="call_module") if n.target == "lm_head"]
    assert len(head) == 1
    assert gm.get_submodule("lm_head").weight is gm.get_submodule("embed_tokens").weight \
        is case.module.embed_tokens.weight
    names = [k for k, _ in gm.named_parameters(remove_duplicate=False)]
    assert "lm_head.weight" in names and "embed_tokens.weight" in names


def test_silu_bits_differ_from_its_decomposition_which_is_why_it_is_kept():
    # the independent reason behind HFCase.kept for llama
    case = llama()
    ep = _export(case.module, (), case.kwargs)
    gm, _ = derive_module_view(ep, case.module)
    kept = gm.meta[META_KEY].kept_as_ops
    assert [k.module for k in kept] == ["layers.0.mlp.act_fn", "layers.1.mlp.act_fn"]
    assert all("equals 0 leaves of torch.nn.SiLU.forward's result" in k.reason for k in kept)
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(F.silu(x), x * torch.sigmoid(x))
    assert [gm.graph.find_nodes(op="call_function", target=torch.ops.aten.sigmoid.default)[i].name
            for i in range(2)] == [kept[0].nodes[0], kept[1].nodes[0]]


def test_a_kv_cache_updated_in_place_is_refused_naming_the_buffers():
    case = llama(cache=8)
    ep = _export(case.module, (), case.kwargs)
    with pytest.raises(fxlower.ExportError) as info:
        derive_module_view(ep, case.module)
    msg = str(info.value)
    assert "mutates the buffer(s) 'layers.0.self_attn.k_cache', 'layers.1.self_attn.k_cache'" in msg


# --------------------------------------------------------------------------------------------------------------
# Grouping decisions on small models

class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


def test_a_module_called_twice_is_two_call_module_nodes_with_one_target():
    torch.manual_seed(0)
    m = _Twice().eval()
    x = torch.randn(3, 4)
    ep = _export(m, (x,))
    gm, links = derive_module_view(ep, m)
    calls = [(n.name, n.target) for n in gm.graph.find_nodes(op="call_module")]
    assert calls == [("lin", "lin"), ("lin_1", "lin")]
    # torch.export's decomposition of each Linear call: permute of the weight, then addmm
    assert {k: v for k, v in links.items() if v.startswith("lin")} == {
        "permute": "lin", "addmm": "lin", "permute_1": "lin_1", "addmm_1": "lin_1"}
    assert torch.equal(gm(x), ep.module()(x))
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_module", "call_function", "call_module",
                                            "output"]


class _InplaceRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.lin(x))


def test_a_module_that_writes_its_input_in_place_is_kept_as_ops():
    torch.manual_seed(0)
    m = _InplaceRelu().eval()
    x = torch.randn(3, 4)
    ep = _export(m, (x,))
    gm, links = derive_module_view(ep, m)
    assert [n.target for n in gm.graph.find_nodes(op="call_module")] == ["lin"]
    kept = gm.meta[META_KEY].kept_as_ops
    assert [(k.module, k.reason) for k in kept] == [("act", "torch.nn.ReLU.forward mutates its input in place")]
    assert torch.equal(gm(x), ep.module()(x))
    assert x.equal(x.clone())


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def test_a_module_whose_forward_needs_more_arguments_than_the_group_reads_is_kept_as_ops():
    torch.manual_seed(0)
    m = _Pair().eval()
    x = torch.randn(2, 5, 8)
    ep = _export(m, (x,))
    gm, links = derive_module_view(ep, m)
    assert gm.graph.find_nodes(op="call_module") == []
    (kept,) = gm.meta[META_KEY].kept_as_ops
    assert kept.module == "mha"
    assert "torch.nn.MultiheadAttention.forward does not run on the group's 1 input(s)" in kept.reason
    assert torch.equal(gm(x), ep.module()(x))


class _Const(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        y[:, 0] = torch.tensor(2.0)  # lifted tensor constant, item assignment
        return y, {"twice": y * 2}


def test_lifted_constants_are_get_attr_nodes_and_nested_outputs_keep_their_structure():
    torch.manual_seed(0)
    m = _Const().eval()
    x = torch.randn(3, 4)
    ep = _export(m, (x,))
    gm, links = derive_module_view(ep, m)
    consts = [s.target for s in ep.graph_signature.input_specs
              if s.kind == torch.export.graph_signature.InputKind.CONSTANT_TENSOR]
    assert len(consts) == 1
    (g,) = gm.graph.find_nodes(op="get_attr")
    assert g.target == consts[0] and torch.equal(getattr(gm, consts[0]), torch.tensor(2.0))
    out, ref = gm(x), ep.module()(x)
    assert isinstance(out, tuple) and isinstance(out[1], dict) and list(out[1]) == ["twice"]
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1]["twice"], ref[1]["twice"])
    assert gm.meta[META_KEY].output_classes == {}


def test_refuses_a_model_that_is_not_the_one_exported():
    torch.manual_seed(0)
    m = _Twice().eval()
    ep = _export(m, (torch.randn(3, 4),))
    other = _Twice().eval()  # other weights
    with pytest.raises(fxlower.ExportError) as info:
        derive_module_view(ep, other)
    assert "parameter 'lin.weight' differs from the model's" in str(info.value)


def test_rejects_arguments_of_the_wrong_kind():
    m = _Twice().eval()
    with pytest.raises(TypeError, match="expects a torch.export.ExportedProgram, got GraphModule"):
        derive_module_view(fx.symbolic_trace(m), m)


def test_a_group_with_two_outputs_used_outside_is_read_with_getitem():
    # nn.MaxPool2d(return_indices=True) returns (values, indices); both are used outside its group
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            values, indices = self.pool(x)
            return values * 2, indices + 1

    torch.manual_seed(0)
    m = M().eval()
    x = torch.randn(1, 2, 4, 4)
    ep = _export(m, (x,))
    gm, _ = derive_module_view(ep, m)
    assert gm.meta[META_KEY].kept_as_ops == ()
    (call,) = gm.graph.find_nodes(op="call_module")
    assert call.target == "pool"
    reads = sorted((u.target, u.args[1]) for u in call.users)
    assert reads == [(operator.getitem, 0), (operator.getitem, 1)]
    out, ref = gm(x), ep.module()(x)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_dynamic_shapes_keep_sizes_as_glue_and_the_same_call_modules():
    from hf_models import bert
    case = bert()
    seq = torch.export.Dim("seq", min=2, max=16)
    ep = torch.export.export(case.module, (), case.kwargs,
                             dynamic_shapes={k: {1: seq} for k in case.kwargs}).run_decompositions()
    gm, links = derive_module_view(ep, case.module)
    assert tuple(n.target for n in gm.graph.find_nodes(op="call_module")) == case.leaf_calls
    assert gm.meta[META_KEY].kept_as_ops == ()
    sizes = gm.graph.find_nodes(op="call_function", target=torch.ops.aten.sym_size.int)
    assert sizes and all(links[n.name] == n.name and n.users for n in sizes)
    # a core size computation only grouped nodes read (here the batch*seq product the Linear views use) is gone,
    # without a link; every other one is kept under its name
    modules = {n.name for n in gm.graph.find_nodes(op="call_module")}
    core_calls = [n for n in ep.graph.nodes if n.op == "call_function"]
    for n in core_calls:
        if isinstance(n.meta.get("val"), torch.SymInt):
            only_groups = all(links.get(u.name) in modules for u in n.users)
            assert (n.name not in links) == only_groups, n.name
    assert any(isinstance(n.meta.get("val"), torch.SymInt) and n.name not in links
               for n in core_calls)
    for n in gm.graph.find_nodes(op="call_module"):
        assert all(isinstance(a.meta.get("val"), torch.Tensor) for a in n.args)
    # bit-identical on the example inputs (checked per group); at another length the module kernels and their
    # decompositions may round differently, so there only closeness holds
    out = gm(*case.kwargs.values())
    ref = ep.module()(**case.kwargs)
    assert all(torch.equal(out[k], ref[k]) for k in out)
    short = {k: v[:, :5].contiguous() for k, v in case.kwargs.items()}
    out, ref = gm(*short.values()), ep.module()(**short)
    for k in out:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=1e-5)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.enc(x)


def test_a_kept_call_is_regrouped_by_the_rule_bearing_modules_inside_it():
    torch.manual_seed(0)
    m = _Encoder().eval()
    x = torch.randn(2, 5, 8)
    ep = _export(m, (x,))
    gm, links = derive_module_view(ep, m)
    # in eval under no_grad the layer runs torch's fused encoder kernel, whose bits differ from the decomposition;
    # its self-attention needs (query, key, value) but reads one value; the feed-forward children are grouped
    kept = gm.meta[META_KEY].kept_as_ops
    assert [k.module for k in kept] == ["enc", "enc.self_attn"]
    assert "equals 0 leaves of torch.nn.TransformerEncoderLayer.forward's result" in kept[0].reason
    assert [n.target for n in gm.graph.find_nodes(op="call_module")] == [
        "enc.dropout1", "enc.norm1", "enc.linear1", "enc.dropout", "enc.linear2", "enc.dropout2", "enc.norm2"]
    assert torch.equal(gm(x), ep.module()(x))


def test_a_namedtuple_output_becomes_a_dict_of_its_fields_and_its_class_is_reported():
    import collections
    Pair = collections.namedtuple("Pair", ["first", "second"])

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            y = self.lin(x)
            return Pair(y, y.relu())

    torch.manual_seed(0)
    m = M().eval()
    x = torch.randn(3, 4)
    ep = _export(m, (x,))
    gm, _ = derive_module_view(ep, m)
    out, ref = gm(x), ep.module()(x)
    assert list(out) == ["first", "second"]
    assert torch.equal(out["first"], ref.first) and torch.equal(out["second"], ref.second)
    assert gm.meta[META_KEY].output_classes == {"": f"{__name__}.Pair"}


class _Opaque:
    def __init__(self, a):
        self.a = a


torch.utils._pytree.register_pytree_node(_Opaque, lambda o: ([o.a], None), lambda v, c: _Opaque(v[0]),
                                         serialized_type_name="test_derive._Opaque")


def test_an_output_class_whose_context_does_not_name_its_fields_is_refused():
    class M(nn.Module):
        def forward(self, x):
            return _Opaque(x + 1)

    m = M().eval()
    ep = _export(m, (torch.randn(2),))
    with pytest.raises(fxlower.ExportError) as info:
        derive_module_view(ep, m)
    msg = str(info.value)
    assert "the output at the top is a _Opaque, whose pytree context None does not name its fields" in msg
    assert "register_dataclass" in msg


def test_control_flow_is_refused_naming_the_node():
    class M(nn.Module):
        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,))

    m = M().eval()
    ep = _export(m, (torch.randn(3),))
    with pytest.raises(fxlower.ExportError) as info:
        derive_module_view(ep, m)
    assert "node 'true_graph_0' is control flow or a submodule (true_graph_0)" in str(info.value)


def test_a_call_whose_nodes_surround_a_node_that_depends_on_it_is_kept_as_ops():
    torch.manual_seed(0)
    m = _Twice().eval()
    x = torch.randn(3, 4)
    ep = _export(m, (x,))
    # give the second call's nodes the first call's stack key: one "call" around the relu between them
    first = None
    for n in ep.graph.nodes:
        stack = n.meta.get("nn_module_stack") or {}
        if "L__self__lin" in stack:
            first = stack
        if "L__self__lin@1" in stack:
            n.meta["nn_module_stack"] = dict(first)
    gm, links = derive_module_view(ep, m)
    (kept,) = gm.meta[META_KEY].kept_as_ops
    assert kept.module == "lin" and kept.nodes == ("permute", "addmm", "permute_1", "addmm_1")
    assert kept.reason == "node 'relu' outside it both depends on it and feeds it, so it cannot be one " \
                          "call_module node"
    assert gm.graph.find_nodes(op="call_module") == []
    assert torch.equal(gm(x), ep.module()(x))
