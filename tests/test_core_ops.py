"""docs/core-ops.md (format 1.2, issue 12): the Core ATen operators of the installed torch, each with a meaning.

The expected operator set is read from torch here (every ``torch.ops.aten`` OpOverload tagged ``torch.Tag.core``),
not from scripts/gen_core_ops.py; the table must list exactly those, each with its torch schema and a non-empty
one-line meaning, and be what the script renders now.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "core-ops.md"


def _torch_core_ops() -> dict[str, str]:
    """From torch's schema registry (``dir(torch.ops.aten)`` lists only the packets already touched)."""
    out = {}
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, packet_name = schema.name.partition("::")
        if namespace != "aten":
            continue
        overload = schema.overload_name or "default"
        try:
            op = getattr(getattr(torch.ops.aten, packet_name), overload)
        except (AttributeError, RuntimeError):
            continue
        if isinstance(op, torch._ops.OpOverload) and torch.Tag.core in op.tags:
            out[f"aten.{packet_name}.{overload}"] = str(op._schema)
    return out


def _rows() -> list[tuple[str, str, str]]:
    rows = re.findall(r"^\| `(aten\.[^`]+)` \| `(.+)` \| (.*) \|$", TABLE.read_text(), re.M)
    return [(t, s.replace("\\|", "|"), m) for t, s, m in rows]


def test_table_lists_exactly_the_core_aten_ops_of_this_torch_with_schema_and_meaning():
    expected = _torch_core_ops()
    rows = _rows()
    assert [t for t, _, _ in rows] == sorted(expected, key=lambda t: t[len("aten."):])
    assert len(rows) == len(expected) and len(rows) > 150
    for target, schema, meaning in rows:
        assert schema == expected[target], target
        assert meaning.strip() and "\n" not in meaning, target
    assert f"(torch {torch.__version__.split('+')[0]})" in TABLE.read_text().splitlines()[0]
    # spot checks written from PyTorch's documentation
    assert dict((t, s) for t, s, _ in rows)["aten.addmm.default"] == (
        "aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, Scalar alpha=1) -> Tensor")
    assert "aten.relu_.default" not in expected and "aten.sym_size.int" in expected


def test_table_is_what_the_script_renders():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_core_ops.py"), "--check"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_script_names_a_missing_or_stale_meaning(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_core_ops", ROOT / "scripts" / "gen_core_ops.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    meanings = dict(gen.MEANINGS)
    del meanings["relu.default"]
    meanings["relu_.default"] = "in place"
    monkeypatch.setattr(gen, "MEANINGS", meanings)
    assert gen.problems(gen.core_ops()) == [
        "no meaning for aten.relu.default (add it to MEANINGS)",
        f"a meaning for aten.relu_.default, which torch {torch.__version__} does not tag core (remove it)"]
    assert gen.main(["--check"]) == 1
