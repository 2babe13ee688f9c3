"""Examples in the docs are tested code: the README's Python blocks run as written, in order."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _python_blocks(path: pathlib.Path) -> list[str]:
    """The ```python blocks of a Markdown page, dedented (blocks inside list items are indented)."""
    return [textwrap.dedent(body) for _, body in
            re.findall(r"^( *)```python\n(.*?)^\1```", path.read_text(), flags=re.S | re.M)]


def test_readme_python_blocks_run(tmp_path):
    blocks = _python_blocks(ROOT / "README.md")
    assert len(blocks) >= 3
    script = "\n".join(blocks)
    for _ in range(2):  # the quick start runs twice in a row in one directory (it exports with overwrite=True)
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert "torch.nn.Conv2d 1 (1, 1) torch.Size([8, 3, 3, 3])" in result.stdout
    assert sorted(p.name for p in (tmp_path / "model.fxl").iterdir()) == [
        "golden.safetensors", "manifest.msgpack", "weights.safetensors"]


def test_writing_rules_page_examples_run(tmp_path):
    """Its ```python blocks form one runnable example; ```py blocks are fragments (e.g. another library's class)."""
    blocks = _python_blocks(ROOT / "docs" / "writing-rules.md")
    assert blocks
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
