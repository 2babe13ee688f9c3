"""The conformance vectors (docs/format.md section 12), as the Python reader sees them.

Four sets: ``tests/conformance/v1.3`` (what ``scripts/make_conformance.py`` generates today) and the frozen sets
``tests/conformance/v1.2``, ``v1.1`` and ``v1.0`` (checked in once, never regenerated: their files stay loadable
forever).
In each,
every ``valid/<name>`` loads with hash verification and rebuilds, and where it carries golden data the rebuilt
GraphModule reproduces it bit for bit; every ``invalid/<name>`` is rejected (also with verification) with exactly
the code ``EXPECTED`` gives.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import shutil
import struct
from pathlib import Path

import msgpack
import pytest
import torch
import torch.fx as fx

import fxlower
from fxlower.format.constants import STORAGE_DTYPES
from fxlower.io.tensorfile import tensor_bytes

ROOT = Path(__file__).resolve().parent.parent
SETS = {version: Path(__file__).resolve().parent / "conformance" / version
        for version in ("v1.0", "v1.1", "v1.2", "v1.3")}
CURRENT = SETS["v1.3"]
VERSION_OF = {"v1.0": (1, 0), "v1.1": (1, 1), "v1.2": (1, 2), "v1.3": (1, 3)}


def _valid(version: str) -> list[str]:
    d = SETS[version] / "valid"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _expected(version: str) -> dict[str, str]:
    f = SETS[version] / "EXPECTED"
    return dict(line.split() for line in f.read_text().splitlines()) if f.is_file() else {}


VALID = [(v, n) for v in SETS for n in _valid(v)]
INVALID = [(v, n) for v in SETS for n in sorted(_expected(v))]
#: Codes of section 11 that no directory in git can carry (a manifest over 1 GiB).
NOT_REPRESENTABLE = {"manifest.size"}
#: SHA-256 over the frozen v1.0 tree (relative path, NUL, SHA-256 of the bytes or of "link:" + the link target,
#: per file in sorted walk order), taken when the set was frozen. The set MUST NOT change.
FROZEN = {"v1.0": "959ca37bc1c55698a6a40fb448c774bed274764b67af5989c7aa85d1ea000338",
          # frozen when 1.2 was introduced; its format_minor_future vector ([1, 2]) was removed then
          "v1.1": "0d514ecad84948d26dbaf159e7bee27c70342497d93ab14682cb25019672ac19",
          # frozen when 1.3 was introduced; its format_minor_future vector ([1, 3]) was removed then
          "v1.2": "f7b53df8955ab63b80e665e29f893e953eb7f7c115f04b6b2269a9ca224d4358"}


def _ids(case):
    return f"{case[0]}/{case[1]}"


def _generator():
    spec = importlib.util.spec_from_file_location("make_conformance", ROOT / "scripts" / "make_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same(a, b) -> bool:
    """Bit-exact structural equality (tensors by dtype, shape and bytes; floats by bits; NaN equals NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bytes(tensor_bytes(a)) == bytes(tensor_bytes(b)))
    for kind in (tuple, list, dict):  # fx's immutable_list/immutable_dict count as list/dict
        if isinstance(a, kind) or isinstance(b, kind):
            if not (isinstance(a, kind) and isinstance(b, kind)):
                return False
            if kind is dict:
                return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def _manifest(version: str, name: str) -> dict:
    return msgpack.unpackb((SETS[version] / "valid" / name / "manifest.msgpack").read_bytes(), raw=False,
                           strict_map_key=False)


# ------------------------------------------------------------------------------------------------ valid

def test_both_sets_exist():
    for version in SETS:
        assert _valid(version) and _expected(version), f"tests/conformance/{version} is missing"


@pytest.mark.parametrize("version", list(FROZEN))
def test_the_older_sets_are_frozen(version):
    h = hashlib.sha256()
    root = SETS[version]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            data = ("link:" + os.readlink(p)).encode() if p.is_symlink() else p.read_bytes()
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
    assert h.hexdigest() == FROZEN[version], f"tests/conformance/{version} changed; it is frozen (its files stay loadable)"


@pytest.mark.parametrize("version", list(SETS))
def test_each_set_has_its_format_version(version):
    assert {tuple(_manifest(version, n)["format_version"]) for n in _valid(version)} == {VERSION_OF[version]}


@pytest.mark.parametrize("case", VALID, ids=_ids)
def test_valid_vector_loads_and_verifies(case):
    version, name = case
    with fxlower.load(SETS[version] / "valid" / name, verify=True) as art:
        assert art.format_version == VERSION_OF[version]
        view = "module" if art.graphs else "core"  # a core-only artifact (1.2) rebuilds from its core view
        if art.golden_mode is None:
            art.to_graph_module(view=view)  # rebuilds; nothing stored to compare with
            return
        gm = art.to_graph_module(view=view)
        inputs = art.golden_inputs()
        interp = fx.Interpreter(gm, garbage_collect_values=False)
        with torch.no_grad():
            out = interp.run(*inputs)
        assert same(out, art.golden_outputs()), f"{name}: outputs differ from the golden outputs"
        if art.golden_mode == "nodes" and view == "module":
            # by position: a node name that is not a Python identifier (x_prefixed_names' "x-relu") is renamed
            # by torch.fx in the rebuilt graph
            names = [n.name for n in art.graphs[0].nodes]
            results = {names[i]: interp.env[n] for i, n in enumerate(gm.graph.nodes)}
            golden = art.golden_nodes()
            assert golden, f"{name}: golden mode 'nodes' without node results"
            for node_name, value in golden.items():
                assert same(results[node_name], value), f"{name}: node '{node_name}' differs"


def _walk_values(v, kinds: set, floats: set):
    if isinstance(v, dict):
        if set(v) == {"t", "v"} and isinstance(v["t"], str):
            kinds.add(v["t"])
        for x in v.values():
            _walk_values(x, kinds, floats)
    elif isinstance(v, list):
        for x in v:
            _walk_values(x, kinds, floats)
    elif isinstance(v, float):
        floats.add(struct.pack("<d", v))


@pytest.mark.parametrize("version", list(SETS))
def test_valid_set_covers_every_value_kind_and_storage_dtype(version):
    kinds: set[str] = set()
    floats: set[bytes] = set()
    dtypes = set()
    for name in _valid(version):
        m = _manifest(version, name)
        for g in m["graphs"]:
            for n in g["nodes"]:
                _walk_values([n["args"], n["kwargs"], n["lowering"]], kinds, floats)
        _walk_values(m["golden"], kinds, floats)
        dtypes |= {t["dtype"] for t in m["tensors"]}
    expected = {"node", "tensor", "list", "tuple", "dict", "slice", "ellipsis", "complex", "dtype", "device",
                "memory_format", "layout"}
    if version != "v1.0":
        expected |= {"function", "module"}
    assert kinds == expected
    assert {struct.pack("<d", x) for x in (math.inf, -math.inf, -0.0)} <= floats
    assert any(math.isnan(struct.unpack("<d", f)[0]) for f in floats)
    assert dtypes == set(STORAGE_DTYPES)


@pytest.mark.parametrize("version", ["v1.1", "v1.2", "v1.3"])
def test_1_1_fields_are_covered(version):
    metas: set[str] = set()
    states: set[tuple] = set()
    training: set[bool] = set()
    overloads: set[int] = set()
    patterns: list[str] = []
    for name in _valid(version):
        m = _manifest(version, name)
        states |= {(t["kind"], t["requires_grad"], t["persistent"]) for t in m["tensors"]}
        for g in m["graphs"]:
            training.add(g["training"])
            for n in g["nodes"]:
                if n["meta"] is not None:
                    metas.add(n["meta"]["t"])
                if n["op"] in ("call_function", "call_method"):
                    overloads.add(n["overload"])
                if n["lowering"] is not None:
                    training.add(n["lowering"]["training"])
        patterns += [a["name"] for d in m["modules"].values() for a in d["attrs"] if "*" in a["name"]]
    assert {"device", "dtype", "layout"} <= metas
    assert states == {("parameter", True, True), ("parameter", False, True), ("buffer", False, True),
                      ("buffer", False, False), ("constant", False, True), ("golden", False, True)}
    assert training == {True, False}
    assert 0 in overloads and max(overloads) >= 3
    assert "layers.*" in patterns
    odd = _manifest(version, "odd_names")
    targets = {n["target"] for n in odd["graphs"][0]["nodes"] if n["op"] in ("call_module", "get_attr")}
    assert targets == {"block1-0", "layer 1.0", "layer 1.1", "ü.β"}


# ------------------------------------------------------------------------------------------------ invalid

@pytest.mark.parametrize("version", list(SETS))
def test_expected_lists_exactly_the_invalid_vectors(version):
    dirs = sorted(p.name for p in (SETS[version] / "invalid").iterdir())
    assert sorted(_expected(version)) == dirs
    lines = (SETS[version] / "EXPECTED").read_text().splitlines()
    assert lines == sorted(lines)
    assert all(re.fullmatch(r"[a-z0-9_]+ [a-z_]+\.[a-z_]+", line) for line in lines)


def test_invalid_set_covers_every_error_code():
    spec = (ROOT / "docs" / "format.md").read_text()
    section = spec[spec.index("## 11. Error codes"):spec.index("## 12.")]
    codes = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section, re.M))
    assert "lowering.attr" in codes and len(codes) > 20
    assert set(_expected("v1.3").values()) == codes - NOT_REPRESENTABLE


@pytest.mark.parametrize("case", INVALID, ids=_ids)
def test_invalid_vector_is_rejected_with_its_code(case):
    version, name = case
    path = SETS[version] / "invalid" / name
    if name == "symlink_member" and not os.path.islink(path / "weights.safetensors"):
        pytest.skip("this checkout turned the symlink into a plain file")
    with pytest.raises(fxlower.FormatError) as info:
        fxlower.load(path, verify=True)
    assert info.value.code == _expected(version)[name], str(info.value)


@pytest.mark.parametrize("version", list(SETS))
def test_hash_vector_is_accepted_without_verification(version):
    art = fxlower.load(SETS[version] / "invalid" / "hash_mismatch")  # hashes are checked only on request
    with pytest.raises(fxlower.FormatError) as info:
        art.verify()
    assert info.value.code == "tensor.hash"


# ------------------------------------------------------------------------------------------------ staleness

@pytest.fixture(scope="module")
def generator():
    return _generator()


def test_checked_in_set_is_what_the_generator_writes(generator):
    assert generator.DEFAULT_OUT == CURRENT
    diffs = generator.check(CURRENT)
    assert not diffs, f"tests/conformance/v1.3 is stale; run scripts/make_conformance.py ({diffs[:10]})"


def test_check_mode_names_a_stale_file(generator, tmp_path, capsys):
    stale = tmp_path / "conformance"
    shutil.copytree(CURRENT, stale, symlinks=True)
    target = stale / "valid" / "minimal" / "golden.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1
    target.write_bytes(bytes(raw))
    (stale / "invalid" / "extra_file" / "README.txt").unlink()
    assert generator.main(["--check", "--out", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "valid/minimal/golden.safetensors" in err
    assert "invalid/extra_file/README.txt" in err


# ------------------------------------------------------------------------------------------------ digest

# docs/format.md section 7, written out from the spec's field tables (independently of fxlower/format/schema.py):
# the fields of each object in order, with the default a 1.0 file may omit.
_FIELDS = {
    "Graph": [("name", None), ("nodes", None), ("training", False)],
    "Node": [("name", None), ("op", None), ("target", None), ("args", None), ("kwargs", None), ("inputs", None),
             ("users", None), ("meta", None), ("lowering", None), ("graph", None), ("overload", None)],
    "Lowering": [("module_type", None), ("version", None), ("module_version", None), ("attrs", None),
                 ("training", False)],
    "TensorEntry": [("name", None), ("dtype", None), ("shape", None), ("file", None), ("key", None),
                    ("sha256", None), ("kind", ""), ("requires_grad", False), ("persistent", True)],
    "Signature": [("inputs", None), ("output", None)],
}


def _value(v):
    if isinstance(v, dict):
        keys = ["t", "v"] if "v" in v else ["t", "dtype", "shape"]
        return {k: _value(v[k]) for k in keys if k in v}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _obj(kind: str, o: dict) -> dict:
    out = {}
    for field, default in _FIELDS[kind]:
        x = o.get(field, default)
        if kind == "Graph" and field == "nodes":
            x = [_obj("Node", n) for n in x]
        elif kind == "Node" and field == "lowering" and x is not None:
            x = _obj("Lowering", x)
        elif kind == "Node" and field in ("args", "meta"):
            x = _value(x)
        elif field in ("kwargs", "attrs"):
            x = {k: _value(y) for k, y in x.items()}
        elif field == "output":
            x = _value(x)
        out[field] = x
    return out


def _obj12(kind: str, o):
    """The 1.2 canonical form: Node gains origin (after overload); the CoreView objects in field order."""
    if kind == "Graph":
        return {"name": o["name"], "nodes": [_obj12("Node", n) for n in o["nodes"]], "training": o["training"]}
    if kind == "Node":
        out = _obj("Node", o)
        link = o.get("origin")
        out["origin"] = None if link is None else {"graph": link["graph"], "node": link["node"]}
        return out
    if kind == "CoreView":
        def arg(a):
            return {"name": a["name"], "type": a["type"], "kwarg_only": a["kwarg_only"],
                    "default": _value(a["default"]), "required": a["required"], "mutates": a["mutates"]}
        return {"graphs": [_obj12("Graph", g) for g in o["graphs"]],
                "inputs": [{"name": i["name"], "kind": i["kind"], "target": i["target"]} for i in o["inputs"]],
                "outputs": [{"name": i["name"], "kind": i["kind"], "target": i["target"]} for i in o["outputs"]],
                "ops": {k: {"name": v["name"], "overload": v["overload"],
                            "arguments": [arg(a) for a in v["arguments"]], "returns": [arg(a) for a in v["returns"]]}
                        for k, v in o["ops"].items()},
                "symbols": {k: {"min": v["min"], "max": v["max"], "input": v["input"], "dim": v["dim"]}
                            for k, v in o["symbols"].items()}}
    raise AssertionError(kind)


def _entry13(t: dict) -> dict:
    """The 1.3 canonical TensorEntry: placement (after persistent), a Placement map in field order or nil."""
    out = _obj("TensorEntry", t)
    p = t.get("placement")
    out["placement"] = None if p is None else {
        "mesh": p["mesh"], "dims": [{"kind": d["kind"], "dim": d["dim"]} for d in p["dims"]],
        "mesh_dim_names": p.get("mesh_dim_names", [])}
    return out


@pytest.mark.parametrize("case", [(v, n) for v in ("v1.1", "v1.2", "v1.3") for n in _valid(v)], ids=_ids)
def test_1_1_to_1_3_digest_is_the_canonical_encoding(case):
    version, name = case
    m = _manifest(version, name)
    weights = {f["path"] for f in m["files"] if f["role"] == "weights"}
    graph = (lambda g: _obj("Graph", g)) if version == "v1.1" else (lambda g: _obj12("Graph", g))
    entry = _entry13 if version == "v1.3" else (lambda t: _obj("TensorEntry", t))
    parts = [[graph(g) for g in m["graphs"]],
             [entry(t) for t in m["tensors"] if t["file"] in weights],
             _obj("Signature", m["signature"])]
    if m.get("core") is not None:
        parts.append(_obj12("CoreView", m["core"]))
    assert m["digest"] == "sha256:" + hashlib.sha256(msgpack.packb(parts, use_bin_type=True)).hexdigest()


# ------------------------------------------------------------------------------------------------ core view (1.2)

def test_1_2_set_covers_the_core_view():
    """Hand-derived from the models in scripts/make_conformance.py and torch.export's decomposition."""
    core = {n: _manifest("v1.3", n)["core"] for n in _valid("v1.3")}
    with_core = sorted(n for n, c in core.items() if c is not None)
    assert with_core == ["core_cnn", "core_control_flow", "core_dynamic", "core_only"]
    cnn = core["core_cnn"]
    links = {n["name"]: n["origin"] and (n["origin"]["graph"], n["origin"]["node"]) for n in cnn["graphs"][0]["nodes"]}
    assert {k: v for k, v in links.items() if v} == {
        "convolution": (0, "conv"), "_native_batch_norm_legit_no_training": (0, "bn"), "getitem": (0, "bn"),
        "permute": (0, "fc"), "addmm": (0, "fc")}
    assert [(i["kind"], i["target"]) for i in cnn["inputs"]] == [
        ("parameter", "conv.weight"), ("parameter", "conv.bias"), ("parameter", "bn.weight"),
        ("parameter", "bn.bias"), ("parameter", "fc.weight"), ("parameter", "fc.bias"),
        ("buffer", "bn.running_mean"), ("buffer", "bn.running_var"), ("buffer", "bn.num_batches_tracked"),
        ("user_input", "x")]
    assert cnn["outputs"] == [{"name": "addmm", "kind": "user_output", "target": ""}]
    conv = cnn["ops"]["aten.convolution.default"]
    assert (conv["name"], conv["overload"]) == ("aten::convolution", "default")
    assert [(a["name"], a["type"]) for a in conv["arguments"]] == [
        ("input", "Tensor"), ("weight", "Tensor"), ("bias", "Tensor?"), ("stride", "SymInt[]"),
        ("padding", "SymInt[]"), ("dilation", "SymInt[]"), ("transposed", "bool"), ("output_padding", "SymInt[]"),
        ("groups", "SymInt")]
    dyn = core["core_dynamic"]
    (s,) = dyn["symbols"]  # torch's name for the batch symbol (format.md: writers keep torch's names)
    assert dyn["symbols"] == {s: {"min": 2, "max": 64, "input": 2, "dim": 0}}
    shapes = {n["name"]: n["meta"]["shape"] for n in dyn["graphs"][0]["nodes"]
              if n["meta"] and n["meta"]["t"] == "tensor"}
    assert shapes["x"] == [s, 4] and shapes["addmm"] == [s, 2] and shapes["sum_1"] == [2]
    assert shapes["constant_pad_nd"] == [f"{s}+1", 2] and shapes["cat"] == [f"2*{s}+1", 2]
    flow = core["core_control_flow"]
    assert [g["name"] for g in flow["graphs"]] == ["", "true_graph_0", "false_graph_0", "while_loop_cond_graph_0",
                                                   "while_loop_body_graph_0"]
    calls = {n["target"]: n["args"] for n in flow["graphs"][0]["nodes"] if n["target"].startswith("higher_order.")}
    assert calls["higher_order.cond"][1:3] == [{"t": "graph", "v": 1}, {"t": "graph", "v": 2}]
    assert calls["higher_order.while_loop"][:2] == [{"t": "graph", "v": 3}, {"t": "graph", "v": 4}]
    for name in ("core_only", "core_control_flow"):
        m = _manifest("v1.3", name)
        assert m["graphs"] == [] and m["signature"]["inputs"] == ["x"]
        # the program's result structure over core root nodes: their user outputs, depth first
        user = [o["name"] for o in m["core"]["outputs"] if o["kind"] == "user_output"]
        out = m["signature"]["output"]
        refs = [out["v"]] if out["t"] == "node" else [v["v"] for v in out["v"] if v["t"] == "node"]
        assert refs == user


def test_core_targets_are_core_aten_or_the_listed_python_callables():
    core_aten = set()
    for packet in dir(torch.ops.aten):
        p = getattr(torch.ops.aten, packet, None)
        if isinstance(p, torch._ops.OpOverloadPacket):
            core_aten |= {f"aten.{packet}.{o}" for o in p.overloads() if torch.Tag.core in getattr(p, o).tags}
    python = {"operator.getitem", "higher_order.cond", "higher_order.while_loop"}
    for name in _valid("v1.3"):
        core = _manifest("v1.3", name)["core"]
        if core is None:
            continue
        targets = {n["target"] for g in core["graphs"] for n in g["nodes"] if n["op"] == "call_function"}
        assert targets == set(core["ops"]), name
        assert targets <= core_aten | python, (name, targets - core_aten - python)


def test_1_1_digest_ignores_extension_fields():
    assert _manifest("v1.1", "x_fields")["digest"] == _manifest("v1.1", "minimal")["digest"]


@pytest.mark.parametrize("name", _valid("v1.0"))
def test_1_0_digest_is_the_encoding_as_written(name):
    m = _manifest("v1.0", name)
    weights = {f["path"] for f in m["files"] if f["role"] == "weights"}
    blob = msgpack.packb([m["graphs"], [t for t in m["tensors"] if t["file"] in weights], m["signature"]],
                         use_bin_type=True)
    assert m["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()


def _run_core(m: dict, d: Path, user_inputs: list) -> tuple[dict, list]:
    """A second, minimal interpreter of the core view (independent of fxlower's loader): targets resolved from
    torch.ops by name, Values decoded here. Returns (root node results, the root output elements)."""
    from safetensors.torch import load_file
    files = {f["path"]: load_file(str(d / f["path"])) for f in m["files"]}
    table = {t["name"]: files[t["file"]][t["key"]] for t in m["tensors"]}
    core = m["core"]
    python = {"operator.getitem": lambda a, b: a[b]}

    def run(gi: int, args: list):
        env: dict = {}
        placeholders = iter(args)

        def val(v):
            if isinstance(v, dict):
                t = v["t"]
                if t == "node":
                    return env[v["v"]]
                if t in ("list", "tuple"):
                    items = [val(x) for x in v["v"]]
                    return items if t == "list" else tuple(items)
                if t == "graph":
                    return lambda *a, i=v["v"]: run(i, list(a))[1]
                if t == "dtype":
                    return {"F32": torch.float32, "I64": torch.int64, "BOOL": torch.bool}[v["v"]]
                if t == "device":
                    return torch.device(v["v"])
                if t == "layout":
                    return {"strided": torch.strided}[v["v"]]
                raise AssertionError(t)
            return v
        out = None
        for n in core["graphs"][gi]["nodes"]:
            if n["op"] == "placeholder":
                env[n["name"]] = next(placeholders)
            elif n["op"] == "call_function":
                target = n["target"]
                if target in python:
                    fn = python[target]
                elif target.startswith("higher_order."):
                    fn = getattr(torch.ops.higher_order, target.split(".")[1])
                else:
                    _, name, overload = target.split(".")
                    fn = getattr(getattr(torch.ops.aten, name), overload)
                env[n["name"]] = fn(*[val(a) for a in n["args"]], **{k: val(x) for k, x in n["kwargs"].items()})
            else:
                out = val(n["args"][0])
        return env, out

    users = iter(user_inputs)
    args = [next(users) if i["kind"] == "user_input" else table[i["target"]] for i in core["inputs"]]
    with torch.no_grad():
        return run(0, args)


@pytest.mark.parametrize("name", [n for n in _valid("v1.3") if _manifest("v1.3", n).get("core")])
def test_core_view_reproduces_the_golden_data(name):
    """Run by the second interpreter above: the core view's user outputs equal the golden outputs bit for bit,
    and every golden.core_nodes entry equals that core node's result."""
    from safetensors.torch import load_file
    d = SETS["v1.3"] / "valid" / name
    m = _manifest("v1.3", name)
    if m["golden"] is None:  # core-only vectors: run it on fixed inputs (hand-derived results)
        x = torch.tensor([[0.5, -1.0], [0.25, 2.0]]) if name == "core_control_flow" else torch.ones(2, 3)
        env, out = _run_core(m, d, [x])
        if name == "core_control_flow":  # sum > 0: cond takes fc(x); while_loop doubles 3 times: i = 3, 8 * fc(x)
            fc = torch.nn.functional.linear(x, env["p_fc_weight"], env["p_fc_bias"])
            assert same(out[0], torch.tensor(3)) and torch.equal(out[1], 8 * fc)
        else:
            assert torch.equal(out[0], torch.nn.functional.linear(x, env["p_fc_weight"], env["p_fc_bias"]))
        return
    golden = load_file(str(d / m["golden"]["file"]))

    def decode(v):
        if isinstance(v, dict) and v["t"] == "tensor":
            return golden[v["v"]]
        if isinstance(v, dict) and v["t"] in ("list", "tuple"):
            items = [decode(x) for x in v["v"]]
            return items if v["t"] == "list" else tuple(items)
        return v
    env, out = _run_core(m, d, [decode(v) for v in m["golden"]["inputs"]])
    user = [o for o, spec in zip(out, m["core"]["outputs"]) if spec["kind"] == "user_output"]
    expected = decode(m["golden"]["outputs"])
    assert same(user[0] if len(user) == 1 and not isinstance(expected, (list, tuple)) else tuple(user), expected)
    assert (m["golden"]["mode"] == "nodes") == bool(m["golden"]["core_nodes"])
    for node_name, value in m["golden"]["core_nodes"].items():
        assert same(env[node_name], decode(value)), node_name


# ------------------------------------------------------------------------------------------------ 1.3

def test_1_3_sharded_vectors_follow_the_split_rule():
    """Hand-derived from docs/format.md section 5.1 and the models of scripts/make_conformance.py: Mlp's F32
    tensors a.bias (32 bytes), a.weight (128), b.bias (8), b.weight (64) under max_shard_bytes=100; Tied's dec.bias
    (16) and dec.weight (64, aliased by enc.weight) under 16."""
    from safetensors import safe_open
    shard = "weights-{:05d}-of-{:05d}.safetensors".format
    for name, n, layout in [
            ("sharded_weights", 3, {"a.bias": 1, "a.weight": 2, "b.bias": 3, "b.weight": 3}),
            ("sharded_tied", 2, {"dec.bias": 1, "dec.weight": 2, "enc.weight": 2})]:
        d = CURRENT / "valid" / name
        m = _manifest("v1.3", name)
        assert m["files"] == [{"path": "golden.safetensors", "role": "golden"}] + [
            {"path": shard(i, n), "role": "weights"} for i in range(1, n + 1)]
        assert {t["name"]: t["file"] for t in m["tensors"] if t["kind"] != "golden"} == {
            k: shard(i, n) for k, i in layout.items()}
        keys = {}
        for i in range(1, n + 1):
            with safe_open(str(d / shard(i, n)), framework="pt") as f:
                keys[i] = list(f.keys())
        assert keys == ({1: ["a.bias"], 2: ["a.weight"], 3: ["b.bias", "b.weight"]} if n == 3
                        else {1: ["dec.bias"], 2: ["dec.weight"]})
    tied = {t["name"]: t for t in _manifest("v1.3", "sharded_tied")["tensors"]}
    assert tied["enc.weight"]["key"] == "dec.weight" and tied["enc.weight"]["sha256"] == tied["dec.weight"]["sha256"]


def test_1_3_placement_vector_slices():
    """The placements vector's recorded placements, and each rank's slice from Artifact.tensor(shard=), against
    torch.chunk of the whole tensor (docs/format.md section 5.2)."""
    m = _manifest("v1.3", "placements")
    placed = {t["name"]: t["placement"] for t in m["tensors"] if t["placement"] is not None}
    assert placed == {
        "a.weight": {"mesh": [4], "dims": [{"kind": "shard", "dim": 0}], "mesh_dim_names": []},
        "a.bias": {"mesh": [2, 2], "dims": [{"kind": "replicate", "dim": -1}, {"kind": "shard", "dim": 0}],
                   "mesh_dim_names": []},
        "b.weight": {"mesh": [2, 3], "dims": [{"kind": "shard", "dim": 1}, {"kind": "shard", "dim": 0}],
                     "mesh_dim_names": ["dp", "tp"]}}
    with fxlower.load(CURRENT / "valid" / "placements", verify=True) as art:
        aw, ab, bw = (art.tensor(n).clone() for n in ("a.weight", "a.bias", "b.weight"))
        for r in range(4):
            assert torch.equal(art.tensor("a.weight", shard=(r, 4)), torch.chunk(aw, 4, 0)[r])
            assert torch.equal(art.tensor("a.bias", shard=(r, 4)), torch.chunk(ab, 2, 0)[r % 2])
        for r in range(6):
            dp, tp = divmod(r, 3)
            cols = torch.chunk(bw, 2, 1)[dp]
            rows = torch.chunk(cols, 3, 0)  # 2 rows over 3: torch.chunk gives 2 chunks; the third is empty
            expected = rows[tp] if tp < len(rows) else cols[2:2]
            got = art.tensor("b.weight", shard=(r, 6))
            assert got.shape == expected.shape and torch.equal(got, expected)
        assert torch.equal(art.tensor("b.bias", shard=(5, 6)), art.tensor("b.bias"))
