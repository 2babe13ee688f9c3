"""The C++ suite's hand-crafted artifacts (cpp/tests/make_artifacts.py, written without fxlower, formats 1.0 and
1.1) get the same verdict from the Python loader: every valid one loads, verifies and dumps as the reference
rendering of make_artifacts.py (the grammar of cpp/DUMP.md), every invalid one is rejected with the code the C++
reader reports (CTest's artifacts_conformance checks the C++ side against the same EXPECTED file)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import fxlower
from fxlower.tools.dump import dump

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("crafted") / "artifacts"
    subprocess.run([sys.executable, str(ROOT / "cpp" / "tests" / "make_artifacts.py"), str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def test_valid_crafted_artifacts_load_and_dump_as_the_cpp_reference(crafted):
    names = sorted(p.name for p in (crafted / "valid").iterdir())
    assert {"conv_relu", "everything", "conv11", "format_1_1", "names_1_0"} <= set(names)
    wrong = {}
    for name in names:
        try:
            art = fxlower.load(crafted / "valid" / name, verify=True)
        except fxlower.FormatError as e:
            wrong[name] = f"rejected: {e}"
            continue
        if dump(art) != (crafted / "dumps" / f"{name}.txt").read_text(encoding="utf-8"):
            wrong[name] = "dump differs from the reference rendering"
    assert wrong == {}


def test_invalid_crafted_artifacts_get_the_same_code(crafted):
    expected = dict(line.split() for line in (crafted / "EXPECTED").read_text().splitlines())
    assert len(expected) >= 130
    assert sum(name.startswith("v11_") for name in expected) >= 40
    wrong = {}
    for name, code in expected.items():
        try:
            fxlower.load(crafted / "invalid" / name, verify=True)
            wrong[name] = (code, "accepted")
        except fxlower.FormatError as e:
            if e.code != code:
                wrong[name] = (code, e.code)
    assert wrong == {}
