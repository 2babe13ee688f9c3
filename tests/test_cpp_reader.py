"""The C++ reader sees what the Python loader sees: identical canonical dumps (cpp/DUMP.md, format 1.1 fields
included) for every model of the round-trip set and every valid conformance vector. scripts/test.sh builds cpp/build before pytest runs."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

import fxlower
from fxlower.tools.dump import dump
from models import MODELS, trace

ROOT = pathlib.Path(__file__).resolve().parent.parent
DUMP = ROOT / "cpp" / "build" / "fxlower-dump"
VALID = sorted(p for version in ("v1.0", "v1.1") for p in (ROOT / "tests" / "conformance" / version / "valid").iterdir())


def _cpp_dump(path) -> str:
    assert DUMP.exists(), f"{DUMP} is missing: build the C++ side first (scripts/test.sh does)"
    result = subprocess.run([str(DUMP), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cpp_and_python_readers_agree_on_every_zoo_model(tmp_path, name):
    case = MODELS[name]()
    fxlower.export(trace(case), tmp_path / name, case.inputs, golden="nodes")
    py = dump(fxlower.load(tmp_path / name))
    assert _cpp_dump(tmp_path / name) == py
    assert py.count("\nnode ") >= 3 and "\ntensor " in py
    # a 1.1+ writer records every 1.1 field, so the comparison covers them: declarations for every lowered module
    # type, an overload per call_function/call_method node, a kind per tensor
    lines = py.splitlines()
    assert "format 1.3" in lines
    lowered = {line.split()[3] for line in lines if line.startswith("lowering ")}
    declared = {line.split()[1] for line in lines if line.startswith("module ")}
    assert lowered <= declared
    calls = [line for line in lines if line.startswith("node ") and line.split()[4] in ("call_function", "call_method")]
    assert all(not line.endswith(" overload=None") for line in calls)
    assert not any(line.startswith("tensor ") and ' kind="" ' in line for line in lines)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cpp_and_python_readers_agree_on_every_zoo_core_view(tmp_path, name):
    """Format 1.2: the core view (graphs, inputs, outputs, op schemas, symbols, origin links, golden core nodes)
    dumps identically from both readers."""
    case = MODELS[name]()
    fxlower.export(trace(case), tmp_path / name, case.inputs, golden="nodes", core=True)
    py = dump(fxlower.load(tmp_path / name))
    assert _cpp_dump(tmp_path / name) == py
    lines = py.splitlines()
    assert any(line.startswith("core graphs=") for line in lines)
    targets = {line.split()[5] for line in lines if line.startswith("core_node 0 ") and line.split()[4] == "call_function"}
    ops = {line.split()[1] for line in lines if line.startswith("op ")}
    assert targets and {t for t in targets if t.startswith("aten.")} <= ops
    # every origin names a module-view node of the dump
    nodes = {(line.split()[1], line.split()[3]) for line in lines if line.startswith("node ")}
    origins = [line.rsplit(" origin=", 1)[1] for line in lines if line.startswith("core_node ")]
    assert all(o == "None" or tuple(o.split(":", 1)) in nodes for o in origins)
    assert any(o != "None" for o in origins)
    assert any(line.startswith("golden_core_node ") for line in lines)


@pytest.mark.parametrize("path", VALID, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_cpp_and_python_readers_agree_on_every_valid_conformance_vector(path):
    assert _cpp_dump(path) == dump(fxlower.load(path))


def test_the_worked_consumer_example_reports_strides_and_weight_sums_of_a_real_model(tmp_path):
    from fxlower.tools.examples import example

    gm, inputs = example()
    fxlower.export(gm, tmp_path / "example.fxl", inputs)
    exe = ROOT / "cpp" / "build" / "conv_strides"
    assert exe.exists(), f"{exe} is missing: build the C++ side first (scripts/test.sh does)"
    out = subprocess.run([str(exe), str(tmp_path / "example.fxl")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = []
    for node in gm.graph.find_nodes(op="call_module"):
        conv = gm.get_submodule(node.target)
        if type(conv).__name__ != "Conv2d":
            continue
        w = conv.weight.detach()
        total = sum(float(x) for x in w.reshape(-1).tolist())  # element order, in double, as the example sums
        expected.append(f"{node.name}: stride {conv.stride}, weight F32 {list(w.shape)}, sum {total!r}")
    assert out.stdout.splitlines() == expected
