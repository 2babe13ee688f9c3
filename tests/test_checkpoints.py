"""Export without materialising: a model on the meta device plus a safetensors checkpoint
(``export(..., weights_from=SRC)``) gives the same artifact, byte for byte, as the materialised model."""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import fxlower
from fxlower import CheckpointMismatchError, ExportError, FormatError
from fxlower.io import checkpoints

VOCAB, DIM, HEADS, HIDDEN, LAYERS = 96, 32, 4, 48, 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (h * self.weight).to(x.dtype)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(DIM, DIM, bias=False)
        self.k_proj = nn.Linear(DIM, DIM, bias=False)
        self.v_proj = nn.Linear(DIM, DIM, bias=False)
        self.o_proj = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, HEADS, DIM // HEADS).transpose(1, 2)
        k = self.k_proj(x).view(b, s, HEADS, DIM // HEADS).transpose(1, 2)
        v = self.v_proj(x).view(b, s, HEADS, DIM // HEADS).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, DIM))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.up_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.down_proj = nn.Linear(HIDDEN, DIM, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(DIM)
        self.self_attn = Attention()
        self.post_attention_layernorm = RMSNorm(DIM)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLlama(nn.Module):
    """Llama-shaped: embedding, RMSNorm, q/k/v/o and gate/up/down projections in bf16 (norms in f32), lm_head tied
    to the embedding; with ``scaled``, a non-persistent buffer (checkpoints never hold those)."""

    def __init__(self, scaled: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM, dtype=torch.bfloat16)
        self.layers = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.norm = RMSNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                mod.to(torch.bfloat16)
        self.lm_head.weight = self.embed_tokens.weight
        self.scaled = scaled
        if scaled:
            self.register_buffer("logit_scale", torch.full((VOCAB,), 0.5), persistent=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.lm_head(self.norm(x)).float()
        return logits * self.logit_scale if self.scaled else logits


def _real(scaled: bool = False) -> TinyLlama:
    torch.manual_seed(0)
    m = TinyLlama(scaled)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float32).to(p.dtype))
    return m


def _meta(scaled: bool = False) -> TinyLlama:
    with torch.device("meta"):
        m = TinyLlama(scaled)
    if scaled:
        m.logit_scale = torch.full((VOCAB,), 0.5)  # materialised by hand: not in any checkpoint
    return m


def _files(path) -> dict[str, bytes]:
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def _hub(tmp_path, state: dict[str, torch.Tensor], n: int = 3, name: str = "ckpt") -> str:
    """A hub-style sharded checkpoint of ``state`` (``n`` files plus model.safetensors.index.json); its dir."""
    d = tmp_path / name
    d.mkdir()
    names = sorted(state)
    weight_map = {}
    for i in range(n):
        file = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: state[k].contiguous() for k in names[i::n]}
        save_file(part, str(d / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
         "weight_map": weight_map}))
    return str(d)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the hub saves it: the tied lm_head.weight dropped."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del sd["lm_head.weight"]
    return sd


def test_meta_model_plus_hub_index_exports_the_materialised_models_bytes(tmp_path):
    real = _real()
    ckpt = _hub(tmp_path, _state(real))
    s = fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=os.path.join(ckpt, "model.safetensors.index.json"))
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")
    assert sorted(_files(tmp_path / "meta.fxl")) == ["manifest.msgpack", "weights.safetensors"]
    art = fxlower.load(tmp_path / "meta.fxl", verify=True)
    for name, t in real.state_dict().items():
        assert torch.equal(art.tensor(name), t), name
    assert s.tensors == len(real.state_dict())


@pytest.mark.parametrize("kind", ["dir-with-index", "dir-of-files", "one-file"])
def test_other_checkpoint_sources_give_the_same_bytes(tmp_path, kind):
    real = _real()
    state = _state(real)
    if kind == "dir-with-index":
        src = _hub(tmp_path, state, n=2)
    elif kind == "dir-of-files":
        src = _hub(tmp_path, state, n=2)
        os.remove(os.path.join(src, "model.safetensors.index.json"))
    else:
        src = str(tmp_path / "model.safetensors")
        save_file(state, src)
    fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=src)
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")


@pytest.mark.parametrize("keep", [["embed_tokens.weight", "lm_head.weight"], ["lm_head.weight"]])
def test_tied_weights_stay_tied_whichever_names_the_checkpoint_holds(tmp_path, keep):
    real = _real()
    state = _state(real)
    tied = state.pop("embed_tokens.weight")
    for k in keep:
        state[k] = tied.clone()
    save_file(state, str(tmp_path / "m.safetensors"))
    fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=tmp_path / "m.safetensors")
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")
    entries = {t.name: t for t in fxlower.load(tmp_path / "meta.fxl").manifest.tensors}
    assert entries["lm_head.weight"].key == entries["embed_tokens.weight"].key == "embed_tokens.weight"


def test_materialised_tensors_of_a_meta_model_are_written_from_memory(tmp_path):
    real = _real(scaled=True)
    ckpt = _hub(tmp_path, _state(real), n=2)
    fxlower.export(_meta(scaled=True), tmp_path / "meta.fxl", weights_from=ckpt)
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")
    assert torch.equal(fxlower.load(tmp_path / "meta.fxl").tensor("logit_scale"), torch.full((VOCAB,), 0.5))


def test_example_inputs_record_shapes_by_meta_propagation(tmp_path):
    real = _real()
    ckpt = _hub(tmp_path, _state(real))
    ids = torch.tensor([[1, 5, 7, 2]])
    fxlower.export(_meta(), tmp_path / "meta.fxl", (ids,), weights_from=ckpt)
    fxlower.export(real, tmp_path / "real.fxl", (ids,))
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")
    graph = fxlower.load(tmp_path / "meta.fxl").manifest.graphs[0]
    out = [n for n in graph.nodes if n.name == "lm_head"][0]
    assert out.meta == {"t": "tensor", "dtype": "BF16", "shape": [1, 4, VOCAB]}


def test_example_inputs_that_do_not_run_on_meta_record_nothing_and_warn(tmp_path):
    real = _real(scaled=True)  # its CPU buffer meets meta activations: the meta run fails
    ckpt = _hub(tmp_path, _state(real))
    with pytest.warns(UserWarning, match="no output shapes were recorded"):
        fxlower.export(_meta(scaled=True), tmp_path / "meta.fxl", (torch.tensor([[1, 2]]),), weights_from=ckpt)
    fxlower.export(real, tmp_path / "real.fxl")  # without example inputs
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")


def test_an_artifacts_weights_file_serves_as_checkpoint_even_when_overwriting_that_artifact(tmp_path):
    real = _real()
    fxlower.export(real, tmp_path / "real.fxl")
    fxlower.export(real, tmp_path / "a.fxl")
    before = _files(tmp_path / "a.fxl")
    fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=tmp_path / "a.fxl" / "weights.safetensors",
                   overwrite=True)
    assert _files(tmp_path / "a.fxl") == before == _files(tmp_path / "real.fxl")


def test_weights_from_must_be_a_path(tmp_path):
    with pytest.raises(TypeError, match=r"weights_from must be a path \(str or os.PathLike\), got dict"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from={"a": 1})


# ------------------------------------------------------------------------------------------------ the copy

def test_copy_file_range_refused_falls_back_to_pread_pwrite(tmp_path, monkeypatch):
    real = _real()
    ckpt = _hub(tmp_path, _state(real))
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(checkpoints, "_CHUNK", 1000)  # several chunks per tensor: the loops' seams
    fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=ckpt)
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")
    assert len(calls) == 1  # refused once, then pread/pwrite for the rest of the export


def test_copy_file_range_refused_mid_tensor_continues_where_it_stopped(tmp_path, monkeypatch):
    real = _real()
    ckpt = _hub(tmp_path, _state(real))
    real_copy = os.copy_file_range
    count = [0]

    def flaky(src, dst, n, off_src, off_dst):
        count[0] += 1
        if count[0] == 3:
            raise OSError(errno.ENOSYS, "Function not implemented")
        return real_copy(src, dst, min(n, 300), off_src, off_dst)  # short copies, as the kernel may do
    monkeypatch.setattr(os, "copy_file_range", flaky)
    monkeypatch.setattr(checkpoints, "_CHUNK", 1000)
    fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=ckpt)
    fxlower.export(real, tmp_path / "real.fxl")
    assert _files(tmp_path / "meta.fxl") == _files(tmp_path / "real.fxl")


def test_other_copy_errors_abort_the_export_and_leave_nothing(tmp_path, monkeypatch):
    ckpt = _hub(tmp_path, _state(_real()))

    def broken(*args):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "copy_file_range", broken)
    with pytest.raises(ExportError, match=r"Input/output error \(errno 5"):
        fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=ckpt)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_checkpoint_file_truncated_after_indexing_is_an_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(64, dtype=torch.float32)}, str(path))
    with checkpoints.open_checkpoint(path) as ckpt:
        os.truncate(path, os.path.getsize(path) - 8)
        fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
        try:
            with pytest.raises(ExportError, match=r"changed after its header was read"):
                ckpt.source_of("a").write_into(fd, 0)
        finally:
            os.close(fd)


def test_a_source_hashes_exactly_the_bytes_it_writes_at_its_offset(tmp_path):
    import hashlib
    t = torch.arange(1000, dtype=torch.int32)
    save_file({"a": t}, str(tmp_path / "m.safetensors"))
    with checkpoints.open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        src = ckpt.source_of("a")
        fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
        try:
            os.write(fd, b"x" * 24)
            digest = src.write_into(fd, 24)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 24  # the file position is not moved
        finally:
            os.close(fd)
    data = (tmp_path / "out").read_bytes()
    assert src.nbytes == 4000 and data[:24] == b"x" * 24 and data[24:] == t.numpy().tobytes()
    assert digest == hashlib.sha256(t.numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ mismatches

def _mismatch(tmp_path, state) -> CheckpointMismatchError:
    ckpt = _hub(tmp_path, state, n=2)
    with pytest.raises(CheckpointMismatchError) as info:
        fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=ckpt)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # nothing written, no temporary left
    return info.value


def test_missing_tensors_are_listed(tmp_path):
    state = _state(_real())
    del state["layers.1.mlp.up_proj.weight"], state["embed_tokens.weight"]
    e = _mismatch(tmp_path, state)
    assert e.missing == ["embed_tokens.weight", "layers.1.mlp.up_proj.weight"]
    assert (e.unexpected, e.wrong_shape, e.wrong_dtype) == ([], [], [])
    assert "missing (2), in no checkpoint file:" in str(e)
    assert "'embed_tokens.weight' (tied: also named 'lm_head.weight')" in str(e)
    assert "'layers.1.mlp.up_proj.weight'" in str(e)


def test_unexpected_tensors_are_listed_with_their_file(tmp_path):
    state = _state(_real())
    state["layers.0.self_attn.rotary.inv_freq"] = torch.ones(4)
    e = _mismatch(tmp_path, state)
    assert e.missing == [] and [n for n, _ in e.unexpected] == ["layers.0.self_attn.rotary.inv_freq"]
    # _hub deals the sorted names out over 2 files; this one is at index 9 (after embed_tokens and 8 names of
    # layers.0 that sort before it), so in the second file
    assert os.path.basename(e.unexpected[0][1]) == "model-00002-of-00002.safetensors"
    assert ("unexpected (1), used by no tensor of the model:\n    'layers.0.self_attn.rotary.inv_freq' in "
            "model-00002-of-00002.safetensors") in str(e)


def test_wrong_shapes_and_dtypes_are_listed_expected_vs_found(tmp_path):
    state = _state(_real())
    state["layers.0.mlp.gate_proj.weight"] = torch.zeros(HIDDEN, DIM + 1, dtype=torch.bfloat16)
    state["norm.weight"] = torch.ones(DIM, dtype=torch.bfloat16)
    e = _mismatch(tmp_path, state)
    assert [(n, a, b) for n, _, a, b in e.wrong_shape] == [
        ("layers.0.mlp.gate_proj.weight", (HIDDEN, DIM), (HIDDEN, DIM + 1))]
    assert [(n, a, b) for n, _, a, b in e.wrong_dtype] == [("norm.weight", "F32", "BF16")]
    assert f"'layers.0.mlp.gate_proj.weight' in model-0000" in str(e)
    assert f": model [{HIDDEN}, {DIM}], checkpoint [{HIDDEN}, {DIM + 1}]" in str(e)
    assert "'norm.weight' in model-0000" in str(e) and ": model F32, checkpoint BF16" in str(e)


def test_every_kind_of_mismatch_in_one_error(tmp_path):
    state = _state(_real())
    del state["layers.0.self_attn.k_proj.weight"]
    state["extra.weight"] = torch.ones(3)
    state["layers.1.self_attn.q_proj.weight"] = torch.zeros(DIM, 2 * DIM, dtype=torch.bfloat16)
    state["layers.1.input_layernorm.weight"] = torch.ones(DIM, dtype=torch.float16)
    e = _mismatch(tmp_path, state)
    assert e.missing == ["layers.0.self_attn.k_proj.weight"]
    assert [n for n, _ in e.unexpected] == ["extra.weight"]
    assert [n for n, *_ in e.wrong_shape] == ["layers.1.self_attn.q_proj.weight"]
    assert [n for n, *_ in e.wrong_dtype] == ["layers.1.input_layernorm.weight"]
    msg = str(e)
    assert "(4 problem(s); nothing was written)" in msg
    for part in ("missing (1)", "unexpected (1)", "wrong shape (1)", "wrong dtype (1)", "'extra.weight'",
                 "'layers.0.self_attn.k_proj.weight'", "'layers.1.self_attn.q_proj.weight'",
                 "'layers.1.input_layernorm.weight'", ": model F32, checkpoint F16"):
        assert part in msg, part


def test_a_prefix_on_the_checkpoints_names_is_pointed_out(tmp_path):
    state = {f"model.{k}": v for k, v in _state(_real()).items()}
    e = _mismatch(tmp_path, state)
    assert len(e.missing) == len(e.unexpected) == len(state)
    assert "hint: the checkpoint's names carry the prefix 'model.'" in str(e)


def test_a_missing_non_persistent_buffer_says_checkpoints_do_not_save_it(tmp_path):
    ckpt = _hub(tmp_path, _state(_real()), n=1)
    with torch.device("meta"):
        m = TinyLlama(scaled=True)  # logit_scale left on meta
    with pytest.raises(CheckpointMismatchError) as info:
        fxlower.export(m, tmp_path / "meta.fxl", weights_from=ckpt)
    assert info.value.missing == ["logit_scale"]
    assert "'logit_scale' (a buffer: checkpoints do not hold non-persistent buffers" in str(info.value)


# ------------------------------------------------------------------------------------------------ refusals

def test_golden_on_a_meta_model_is_refused_before_anything_is_written(tmp_path):
    ckpt = _hub(tmp_path, _state(_real()))
    for golden in (True, "nodes"):
        with pytest.raises(ValueError, match=r"golden=.* has tensors on the meta device \(nothing to run\)"):
            fxlower.export(_meta(), tmp_path / "meta.fxl", (torch.tensor([[1]]),), golden=golden, weights_from=ckpt)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_core_view_of_a_meta_model_is_refused_before_anything_is_written(tmp_path):
    ckpt = _hub(tmp_path, _state(_real()))
    with pytest.raises(ValueError, match=r"core=True on a model with tensors on the meta device is not supported"):
        fxlower.export(_meta(), tmp_path / "meta.fxl", (torch.tensor([[1, 2]]),), core=True, weights_from=ckpt)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_meta_model_without_weights_from_names_its_meta_tensors(tmp_path):
    # stored tensors: embed_tokens (lm_head tied to it), 9 per layer (2 norms, q/k/v/o, gate/up/down) x 2, norm
    with pytest.raises(ExportError, match=r"tensor 'embed_tokens.weight' is a meta tensor \(it has no data\), and "
                                          r"so are 19 more .*pass weights_from="):
        fxlower.export(_meta(), tmp_path / "meta.fxl")
    assert os.listdir(tmp_path) == []


def _raw_file(path, header: bytes, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize("header, code", [
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
     "safetensors.header"),
    (b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', "safetensors.layout"),
    (b'{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', "tensor.dtype"),
])
def test_hostile_checkpoint_headers_give_format_errors_naming_the_file(tmp_path, header, code):
    header += b" " * ((-(8 + len(header))) % 8)
    _raw_file(tmp_path / "bad.safetensors", header, bytes(8))
    with pytest.raises(FormatError) as info:
        fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=tmp_path / "bad.safetensors")
    assert info.value.code == code and info.value.where == str(tmp_path / "bad.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors"]


@pytest.mark.parametrize("weight_map, message", [
    ({"a": "../outside.safetensors"}, r"maps to '\.\./outside\.safetensors', not a relative path inside"),
    ({"a": "/abs.safetensors"}, r"not a relative path inside"),
    ({"a": "absent.safetensors"}, r"names the file absent\.safetensors, which does not exist"),
    ({"a": "m.safetensors", "b": "m.safetensors"}, r"maps 1 tensor\(s\) to files that do not hold them: 'b'"),
    ({"a": "m2.safetensors"}, r"m2\.safetensors holds the tensor 'b' but the index .* names no file for it"),
])
def test_bad_indexes_are_refused_naming_the_entry(tmp_path, weight_map, message):
    save_file({"a": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    save_file({"a": torch.ones(2), "b": torch.ones(2)}, str(tmp_path / "m2.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ExportError, match=message):
        fxlower.export(_meta(), tmp_path / "meta.fxl", weights_from=tmp_path / "model.safetensors.index.json")


def test_an_index_that_is_not_json_or_has_no_weight_map_is_refused(tmp_path):
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_bytes(b"{not json")
    with pytest.raises(ExportError, match=r"model\.safetensors\.index\.json: it is not valid UTF-8 JSON"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=idx)
    idx.write_text('{"metadata": {}}')
    with pytest.raises(ExportError, match=r"it has no \"weight_map\" object"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=idx)
    idx.write_text('{"weight_map": {"a": "m.safetensors", "a": "m.safetensors"}}')
    with pytest.raises(ExportError, match=r"the key 'a' appears twice"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=idx)


def test_a_directory_tensor_in_two_files_and_absent_sources_are_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    save_file({"a": torch.ones(2)}, str(d / "x.safetensors"))
    save_file({"a": torch.ones(2)}, str(d / "y.safetensors"))
    with pytest.raises(ExportError, match=r"the tensor 'a' is in two checkpoint files, .*x\.safetensors and "
                                          r".*y\.safetensors"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=d)
    with pytest.raises(ExportError, match=r"does not exist"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"is a directory without \*\.safetensors files"):
        fxlower.export(_meta(), tmp_path / "a.fxl", weights_from=tmp_path / "empty")


def test_the_scale_page_examples_run_and_print_what_it_shows(tmp_path):
    """docs/scale.md: its ```python blocks run in order as one script, and print what its "prints" blocks show."""
    import pathlib
    import re
    import subprocess
    import sys
    import textwrap
    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "scale.md").read_text()
    # the collective workflow's torchrun script (section 3) runs in tests/test_collective.py
    blocks = [textwrap.dedent(b) for b in re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M)
              if not b.startswith("# tp_export.py")]
    shown = "".join(re.findall(r"^prints\n\n```\n(.*?)^```", page, flags=re.S | re.M))
    assert len(blocks) == 2 and shown
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == shown
