"""The C++ suite's hand-crafted artifacts (cpp/tests/make_artifacts.py, written without fxlower) get the same
verdict from the Python loader: every valid one loads and dumps as the C++ reader expects, every invalid one is
rejected with the same code. Together with tests/conformance this is the agreement RELIABILITY.md asks for."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import fxlower
from fxlower.dump import dump

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("crafted") / "artifacts"
    subprocess.run([sys.executable, str(ROOT / "cpp" / "tests" / "make_artifacts.py"), str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def test_valid_crafted_artifacts_load_and_dump_as_the_cpp_reference(crafted):
    names = sorted(p.name for p in (crafted / "valid").iterdir())
    assert len(names) >= 5
    for name in names:
        art = fxlower.load(crafted / "valid" / name, verify=True)
        assert dump(art) == (crafted / "dumps" / f"{name}.txt").read_text(encoding="utf-8"), name


def test_invalid_crafted_artifacts_get_the_same_code(crafted):
    expected = dict(line.split() for line in (crafted / "EXPECTED").read_text().splitlines())
    assert len(expected) >= 50
    wrong = {}
    for name, code in expected.items():
        try:
            fxlower.load(crafted / "invalid" / name, verify=True)
            wrong[name] = (code, "accepted")
        except fxlower.FormatError as e:
            if e.code != code:
                wrong[name] = (code, e.code)
    assert wrong == {}
