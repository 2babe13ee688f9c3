"""``fxlower export`` and ``fxlower diff`` on the command line.

Expected inputs are built here by hand (the documented seeding: the k-th --input from
``torch.Generator().manual_seed(k)``), expected hashes with hashlib over the tensors' bytes, expected records
from the models' own attributes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxlower
from fxlower.tools.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_PY = textwrap.dedent('''
    import torch, torch.nn as nn

    class Net(nn.Module):
        def __init__(self, stride=1, extra_relu=False):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=stride)
            self.fc = nn.Linear(4, 2)
            self.extra_relu = extra_relu

        def forward(self, x, scale):
            y = self.fc(self.conv(x).mean((2, 3))) * scale.float().sum()
            return torch.relu(y) if self.extra_relu else y

    class Custom(nn.Module):
        def forward(self, x):
            return x * 2

    class WithCustom(nn.Module):
        def __init__(self):
            super().__init__()
            self.custom = Custom()

        def forward(self, x, scale):
            return self.custom(x)

    class Branchy(nn.Module):
        def forward(self, x, scale):
            if x.sum() > 0:
                return x
            return -x

    def make_model(stride=1, extra_relu=False, w00=0.5):
        torch.manual_seed(0)
        m = Net(stride, extra_relu).eval()
        with torch.no_grad():
            m.conv.weight[0, 0, 0, 0] = w00
        return m

    def make_strided():
        return make_model(stride=2)

    def make_relu():
        return make_model(extra_relu=True)

    def make_changed_weight():
        return make_model(w00=0.75)

    net = make_model()
    not_a_model = 3
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "mymodels.py"
    path.write_text(MODEL_PY)
    return str(path)


def _inputs():
    """The inputs ``--input 1x3x8x8 --input 2:int64`` make, by the documented seeding."""
    x = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    s = torch.randint(0, 10, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.int64)
    return x, s


def _files(path):
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def _load_module(model_file):
    import importlib.util
    spec = importlib.util.spec_from_file_location("mymodels_direct", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_is_byte_identical_to_the_api(model_file, tmp_path, capsys):
    out = str(tmp_path / "cli.fxl")
    rc = main(["export", f"{model_file}:make_model", "--input", "1x3x8x8", "--input", "2:int64", "-o", out,
               "--golden"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"artifact   {out}\n")
    assert "modules    torch.nn.Conv2d v1 x1, torch.nn.Linear v1 x1" in printed
    api = str(tmp_path / "api.fxl")
    model = _load_module(model_file).make_model()
    fxlower.export(torch.fx.symbolic_trace(model), api, _inputs(), golden=True)
    assert _files(out) == _files(api)
    with fxlower.load(out) as art:
        x, s = art.golden_inputs()
        assert torch.equal(x, _inputs()[0]) and torch.equal(s, _inputs()[1])


def test_export_from_a_safetensors_inputs_file(model_file, tmp_path, capsys):
    from safetensors.torch import save_file
    x, s = _inputs()
    save_file({"0": x, "1": s}, str(tmp_path / "in.safetensors"))
    out = str(tmp_path / "f.fxl")
    assert main(["export", f"{model_file}:net", "--inputs", str(tmp_path / "in.safetensors"), "-o", out,
                 "--golden", "nodes"]) == 0
    api = str(tmp_path / "api.fxl")
    fxlower.export(torch.fx.symbolic_trace(_load_module(model_file).make_model()), api, (x, s), golden="nodes")
    assert _files(out) == _files(api)


def _fails(capsys, argv, code, *needles):
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == code, cap.err
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_export_failures_are_one_line_each(model_file, tmp_path, capsys):
    out = str(tmp_path / "x.fxl")
    inp = ["--input", "1x3x8x8", "--input", "2:int64", "-o", out]
    bad = tmp_path / "broken.py"
    bad.write_text("import fxlower_no_such_package\n")
    _fails(capsys, ["export", f"{bad}:m"] + inp, 1,
           f"cannot import {bad}: ModuleNotFoundError: No module named 'fxlower_no_such_package'")
    _fails(capsys, ["export", f"{tmp_path}/missing.py:m"] + inp, 1, "missing.py: no such file")
    _fails(capsys, ["export", "fxlower_no_such_package.models:m"] + inp, 1,
           "cannot import fxlower_no_such_package.models: ModuleNotFoundError")
    _fails(capsys, ["export", f"{model_file}:nope"] + inp, 1,
           f"{model_file} has no attribute 'nope' (it defines: ", "make_model")
    _fails(capsys, ["export", f"{model_file}:not_a_model"] + inp, 1,
           "is of type int, expected an nn.Module instance or a zero-argument factory")
    _fails(capsys, ["export", model_file] + inp, 2, "is not MODULE:ATTR or FILE.py:ATTR")
    _fails(capsys, ["export", f"{model_file}:Branchy"] + inp, 1,
           f"tracing fxlower_target_mymodels.Branchy failed: TraceError", "--leaf CLASS", "--core")
    _fails(capsys, ["export", f"{model_file}:WithCustom", "--leaf", "Custom"] + inp, 1,
           "no lowering rule for fxlower_target_mymodels.Custom (node 'custom')", "fxlower.register_module")
    _fails(capsys, ["export", f"{model_file}:WithCustom", "--leaf", "Nope"] + inp, 1,
           "has no attribute 'Nope'")
    _fails(capsys, ["export", f"{model_file}:make_model", "--input", "1x3xAx8", "-o", out], 2,
           "--input '1x3xAx8': the shape is not dimensions joined by 'x'")
    _fails(capsys, ["export", f"{model_file}:make_model", "--input", "1x3:float128", "-o", out], 2,
           "--input '1x3:float128': unknown dtype 'float128'; expected one of float32,")
    _fails(capsys, ["export", f"{model_file}:make_model", "-o", out, "--golden"], 2, "--golden needs inputs")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 3)
    _fails(capsys, ["export", f"{model_file}:make_model", "--inputs", str(tmp_path / "bad.safetensors"), "-o", out],
           2, "cannot read it as safetensors")
    # running the wrong inputs is an export error (one line, the library's message)
    _fails(capsys, ["export", f"{model_file}:make_model", "--input", "1x3x8x8", "-o", out], 1)
    assert not os.path.exists(out)
    assert main(["export", f"{model_file}:make_model"] + inp) == 0
    capsys.readouterr()
    _fails(capsys, ["export", f"{model_file}:make_model"] + inp, 1, out, "pass --overwrite to replace it")


def test_core_flag_is_passed_through_only_when_the_library_has_it(model_file, tmp_path, capsys):
    out = str(tmp_path / "c.fxl")
    argv = ["export", f"{model_file}:make_model", "--input", "1x3x8x8", "--input", "2:int64", "-o", out, "--core"]
    if "core" not in inspect.signature(fxlower.export).parameters:
        _fails(capsys, argv, 2, "--core needs the core view (format 1.2)")
    else:  # after the 1.2 merge
        assert main(argv) == 0
        with fxlower.load(out) as art:
            assert art.manifest.core is not None


def test_export_as_a_subprocess_prints_one_error_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "fxlower", "export", "no_colon", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("error: TARGET 'no_colon' is not MODULE:ATTR or FILE.py:ATTR (e.g. mypkg.models:make_model "
                        "or models.py:net)\n")


# ------------------------------------------------------------------------------------------------------ diff


@pytest.fixture
def exports(model_file, tmp_path, capsys):
    paths = {}
    for name in ("make_model", "make_strided", "make_relu", "make_changed_weight"):
        paths[name] = str(tmp_path / f"{name}.fxl")
        assert main(["export", f"{model_file}:{name}", "-o", paths[name]]) == 0
    paths["again"] = str(tmp_path / "again.fxl")
    assert main(["export", f"{model_file}:make_model", "-o", paths["again"]]) == 0
    capsys.readouterr()
    return paths


def _diff(capsys, *argv):
    rc = main(["diff", *argv])
    return rc, capsys.readouterr().out


def test_two_exports_of_one_model_are_equal(exports, capsys):
    a, b = exports["make_model"], exports["again"]
    assert _diff(capsys, a, b) == (0, f"{a} and {b} are equal\n")
    rc, out = _diff(capsys, a, b, "--json")
    assert rc == 0
    assert json.loads(out) == {"equal": True, "header": [], "graphs": [],
                               "tensors": {"added": [], "removed": [], "changed": []}}


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_diff_reports_a_changed_weight(exports, model_file, capsys):
    a, b = exports["make_model"], exports["make_changed_weight"]
    mod = _load_module(model_file)
    wa, wb = mod.make_model().conv.weight.detach(), mod.make_changed_weight().conv.weight.detach()
    ha, hb = _sha(wa), _sha(wb)
    assert ha != hb
    rc, out = _diff(capsys, a, b, "--values")
    assert rc == 1
    assert out == f"--- {a}\n+++ {b}\ntensors:\n  ~ conv.weight: sha256 \"{ha}\" -> \"{hb}\"; max |diff| 0.25, max rel 0.5\n"
    rc, out = _diff(capsys, a, b, "--json", "--values")
    assert rc == 1
    assert json.loads(out) == {"equal": False, "header": [], "graphs": [], "tensors": {
        "added": [], "removed": [],
        "changed": [{"name": "conv.weight", "fields": {"sha256": [ha, hb]}, "max_abs_diff": 0.25,
                     "max_rel_diff": 0.5}]}}
    rc, out = _diff(capsys, a, b, "--json")
    assert "max_abs_diff" not in out


def test_diff_reports_a_changed_stride(exports, capsys):
    a, b = exports["make_model"], exports["make_strided"]
    rc, out = _diff(capsys, a, b)
    assert rc == 1
    assert out == f"--- {a}\n+++ {b}\ngraph 0 '':\n  ~ node conv lowering.attrs.stride: (1, 1) -> (2, 2)\n"
    rc, out = _diff(capsys, a, b, "--json")
    assert json.loads(out) == {"equal": False, "header": [], "tensors": {"added": [], "removed": [], "changed": []},
                               "graphs": [{"index": 0, "name": "", "added": [], "removed": [], "changed": [
                                   {"node": "conv", "field": "lowering.attrs.stride",
                                    "a": {"t": "tuple", "v": [1, 1]}, "b": {"t": "tuple", "v": [2, 2]}}]}]}


def test_diff_reports_an_added_node(exports, capsys):
    a, b = exports["make_model"], exports["make_relu"]
    rc, out = _diff(capsys, a, b, "--json")
    assert rc == 1
    d = json.loads(out)
    assert d["graphs"] == [{"index": 0, "name": "", "removed": [],
                            "added": [{"node": "relu", "op": "call_function", "target": "torch.relu"}],
                            "changed": [{"node": "output", "field": "args", "a": [{"t": "node", "v": "mul"}],
                                         "b": [{"t": "node", "v": "relu"}]}]}]
    assert [h["field"] for h in d["header"]] == ["signature.output", "functions.torch.relu"]
    assert d["header"][0] == {"field": "signature.output", "a": {"t": "node", "v": "mul"},
                              "b": {"t": "node", "v": "relu"}}
    assert d["header"][1]["a"] is None and d["header"][1]["b"] is not None
    rc, out = _diff(capsys, a, b)
    assert "  + node relu = call_function[torch.relu]\n" in out
    assert "  ~ node output args: [%mul] -> [%relu]\n" in out
    assert "~ header signature.output: %mul -> %relu\n" in out


def test_diff_of_a_missing_artifact_exits_2(tmp_path, exports, capsys):
    rc = main(["diff", exports["make_model"], str(tmp_path / "none.fxl")])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == ""
    assert len(cap.err.splitlines()) == 1 and cap.err.startswith("error: ") and "none.fxl" in cap.err


LEAF_PY = textwrap.dedent('''
    import torch, torch.nn as nn
    import fxlower

    @fxlower.register_module(attrs={"factor": "float"}, version=1)
    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = Scale(2.5)

        def forward(self, x):
            return torch.relu(self.scale(x))
''')


def test_leaf_keeps_a_user_class_as_a_call_module_node(tmp_path, capsys):
    from fxlower.lowering.book import unregister_module

    path = tmp_path / "leafmod.py"
    path.write_text(LEAF_PY)
    leaf, plain = str(tmp_path / "leaf.fxl"), str(tmp_path / "plain.fxl")
    try:
        assert main(["export", f"{path}:Net", "--leaf", "Scale", "--input", "2x3", "-o", leaf]) == 0
        assert main(["export", f"{path}:Net", "--input", "2x3", "-o", plain]) == 0
        # the class named by file: the same module as TARGET's, imported once
        assert main(["export", f"{path}:Net", "--leaf", f"{path}:Scale", "--input", "2x3", "-o",
                     str(tmp_path / "leaf2.fxl")]) == 0
    finally:
        unregister_module(sys.modules["fxlower_target_leafmod"].Scale)
    capsys.readouterr()
    with fxlower.load(leaf) as art:
        node = art.manifest.graphs[0].nodes[1]
        assert (node.name, node.op, node.target) == ("scale", "call_module", "scale")
        assert node.lowering.module_type == "fxlower_target_leafmod.Scale"
        assert node.lowering.attrs == {"factor": 2.5}
    assert _files(leaf) == _files(str(tmp_path / "leaf2.fxl"))
    with fxlower.load(plain) as art:  # traced through: the multiplication itself
        assert [(n.op, n.target) for n in art.manifest.graphs[0].nodes] == [
            ("placeholder", "x"), ("call_function", "operator.mul"), ("call_function", "torch.relu"),
            ("output", "output")]


# ------------------------------------------------------------------------------------------------ scale and core flags

def test_export_max_shard_bytes_is_byte_identical_to_the_api(model_file, tmp_path, capsys):
    out = str(tmp_path / "cli.fxl")
    # 488 bytes of weights: conv.weight (432) alone, then the rest
    assert main(["export", f"{model_file}:make_model", "-o", out, "--max-shard-bytes", "200"]) == 0
    api = str(tmp_path / "api.fxl")
    fxlower.export(torch.fx.symbolic_trace(_load_module(model_file).make_model()), api, max_shard_bytes=200)
    got = _files(out)
    assert got == _files(api)
    assert "weights-00001-of-" in " ".join(got)


def test_export_max_shard_bytes_rejects_a_bad_count(model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", f"{model_file}:make_model", "-o", str(tmp_path / "x"), "--max-shard-bytes", "12Q"])
    assert e.value.code == 2
    assert "'12Q' is not a positive byte count" in capsys.readouterr().err
    from fxlower.tools.cli import _byte_count
    assert (_byte_count("4G"), _byte_count("512m"), _byte_count("1000")) == (4 << 30, 512 << 20, 1000)


def test_export_dynamic_core_is_byte_identical_to_the_api(model_file, tmp_path, capsys):
    out = str(tmp_path / "cli.fxl")
    rc = main(["export", f"{model_file}:make_model", "--input", "2x3x8x8", "--input", "2:int64", "--core",
               "--dynamic", "0:0:1:16", "-o", out])
    assert rc == 0, capsys.readouterr()
    api = str(tmp_path / "api.fxl")
    batch = torch.export.Dim("in0_d0", min=1, max=16)
    model = _load_module(model_file).make_model()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    s = torch.randint(0, 10, (2,), generator=torch.Generator().manual_seed(1))
    fxlower.export(model, api, (x, s), core=True, dynamic_shapes=({0: batch}, None))
    assert _files(out) == _files(api)
    with fxlower.load(out) as art:
        (sym,) = art.manifest.core.symbols.values()
        assert (sym.min, sym.max) == (1, 16)


def test_export_dynamic_needs_core_and_a_real_dimension(model_file, tmp_path, capsys):
    out = str(tmp_path / "x.fxl")
    assert main(["export", f"{model_file}:make_model", "--input", "2x3x8x8", "--input", "2:int64",
                 "--dynamic", "0:0", "-o", out]) == 2
    assert "--dynamic needs --core" in capsys.readouterr().err
    assert main(["export", f"{model_file}:make_model", "--input", "2x3x8x8", "--input", "2:int64", "--core",
                 "--dynamic", "0:7", "-o", out]) == 2
    assert "input 0 has no dimension 7" in capsys.readouterr().err
    assert not os.path.exists(out)
