"""The ``fxlower`` command line: every command, its output and every error path with its exit code.

Exit codes (fxlower/tools/cli.py): 0 success, 1 invalid artifact / failed check / file-system error, 2 usage error.
Expected texts are written out by hand from the model's definition; the digest and versions come from the
manifest read with msgpack directly.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import subprocess
import sys

import msgpack
import pytest
import torch
import torch.nn as nn

import fxlower
from fxlower.tools import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Tied(nn.Module):
    """An embedding whose output head shares its weight (tied weights): one stored tensor, two table entries."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.emb(x))


@pytest.fixture()
def tied(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tied.fxl"
    fxlower.export(Tied().eval(), path, (torch.tensor([[1, 4]]),), golden=True)
    return path


def _raw_manifest(path) -> dict:
    return msgpack.unpackb((pathlib.Path(path) / "manifest.msgpack").read_bytes(), raw=False)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ inspect

def test_inspect_summarises_and_counts_every_table_entry(tied, capsys):
    raw = _raw_manifest(tied)
    major, minor = raw["format_version"]
    code, out, err = _run(capsys, "inspect", tied)
    assert (code, err) == (0, "")
    # Table entries: emb.weight and head.weight (the same stored tensor: 1 alias), golden/inputs/0/0 (I64[1,2],
    # 16 B) and golden/outputs/0 (F32[1,2,5], 40 B): 4 entries. F32: 5x3x4 = 60 B twice + 40 B = 160 B.
    assert out.splitlines() == [
        f"artifact   {tied}",
        f"format     fxlower {major}.{minor} (written by fxlower {fxlower.__version__}, torch {torch.__version__})",
        f"digest     {raw['digest']}",
        "inputs     x",
        "graphs     1 (4 nodes: call_module 2, output 1, placeholder 1)",
        "modules    torch.nn.Embedding v1 x1, torch.nn.Linear v1 x1",
        "tensors    4 (1 alias, 2 golden), 176 B (aliases counted each time); F32: 3 (160 B); I64: 1 (16 B)",
        "golden     mode outputs, 1 input(s), tolerances F32 rtol=0.001 atol=0.0001",
    ]


def test_inspect_tensor_count_is_the_summary_count(tied, capsys):
    """ExportSummary.tensors, fxlower-inspect and fxlower inspect all count table entries, aliases included."""
    torch.manual_seed(0)
    s = fxlower.export(Tied().eval(), tied.parent / "again.fxl", (torch.tensor([[1, 4]]),), golden=True)
    assert s.tensors == 4
    _, out, _ = _run(capsys, "inspect", tied.parent / "again.fxl")
    assert "tensors    4 (" in out


def test_inspect_nodes_and_verify(tmp_path, capsys):
    class Shapes(nn.Module):
        def forward(self, x):
            y = torch.cat([x, x], 1)
            return y.permute((1, 0)).reshape(-1), torch.sum(x, (0,), keepdim=True)

    path = tmp_path / "s.fxl"
    fxlower.export(Shapes(), path, (torch.ones(2, 3),))
    code, out, err = _run(capsys, "inspect", path, "--nodes", "--verify")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    start = lines.index("graph 0 ''")
    assert lines[start + 1:] == [
        "  x = placeholder[x]() -> F32[2, 3]",
        "  cat = call_function[torch.cat]([%x, %x], 1) -> F32[2, 6]",
        "  permute = call_method[permute](%cat, (1, 0)) -> F32[6, 2]",
        "  reshape = call_method[reshape](%permute, -1) -> F32[12]",
        "  sum_1 = call_function[torch.sum](%x, (0,)) -> F32[1, 3]",
        "  output = output[output]((%reshape, %sum_1))",
        "verify     0 tensors: all SHA-256 match",
    ]
    assert "tensors    0 (0 aliases, 0 golden), 0 B (aliases counted each time)" in lines


def test_inspect_shortens_long_argument_lists_and_shows_sizes(tmp_path, capsys):
    class Many(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(512, 1024)  # 2 MiB + 4 KiB of F32

        def forward(self, x):
            return torch.cat([x] * 40, 1), self.lin(x[:, :1].expand(-1, 512))

    path = tmp_path / "many.fxl"
    fxlower.export(Many(), path, (torch.ones(1, 512),))
    _, out, _ = _run(capsys, "inspect", path, "--nodes")
    cat = next(line for line in out.splitlines() if line.startswith("  cat = "))
    # the argument text "[%x, %x, ..., %x], 1" is cut to 117 characters ("[" and 29 "%x, ") plus "..."
    assert cat == "  cat = call_function[torch.cat]([" + "%x, " * 29 + "...) -> F32[1, 20480]"
    assert "tensors    2 (0 aliases, 0 golden), 2.0 MiB (aliases counted each time); F32: 2 (2.0 MiB)" in out


def test_inspect_verify_reports_a_corrupted_tensor(tied, capsys):
    weights = tied / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, err = _run(capsys, "inspect", tied, "--verify")
    assert (code, out) == (1, "")
    assert err.startswith("error: [tensor.hash] weights.safetensors: tensor 'emb.weight': stored bytes hash to ")


def test_inspect_rejects_an_unlisted_file_unless_non_strict(tied, capsys):
    (tied / "notes.txt").write_text("mine")
    code, out, err = _run(capsys, "inspect", tied)
    assert (code, out) == (1, "")
    assert err == ("error: [artifact.extra_file] notes.txt: the directory holds a file the manifest does not "
                   "list; remove it (or load with strict=False)\n")
    code, out, err = _run(capsys, "inspect", tied, "--non-strict")
    assert (code, err) == (0, "") and "tensors    4 (1 alias, 2 golden)" in out


def test_inspect_missing_artifact(tmp_path, capsys):
    code, out, err = _run(capsys, "inspect", tmp_path / "nope")
    assert (code, out) == (1, "")
    assert err == f"error: [artifact.missing] {tmp_path / 'nope'}: the artifact directory does not exist\n"


# ------------------------------------------------------------------------------------------------ validate

def test_validate_valid(tied, capsys):
    assert _run(capsys, "validate", tied, "--verify") == (0, f"{tied}: valid\n", "")


def test_validate_invalid_exits_1_with_the_code(tied, capsys):
    (tied / "manifest.msgpack").write_bytes(b"\xc1")
    code, out, err = _run(capsys, "validate", tied)
    assert (code, out) == (1, "")
    assert err.startswith("error: [manifest.decode] ")


def test_validate_non_strict_ignores_unlisted_files(tied, capsys):
    (tied / "extra.bin").write_bytes(b"x")
    assert _run(capsys, "validate", tied)[0] == 1
    assert _run(capsys, "validate", tied, "--non-strict") == (0, f"{tied}: valid\n", "")


def test_lenient_is_now_non_strict(tied, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["validate", str(tied), "--lenient"])
    assert info.value.code == 2
    assert "unrecognized arguments: --lenient" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ dump

def test_dump_prints_the_canonical_dump(tied, capsys):
    from fxlower.tools.dump import dump
    code, out, err = _run(capsys, "dump", tied)
    assert (code, err) == (0, "")
    assert out == dump(fxlower.load(tied))
    raw = _raw_manifest(tied)
    lines = out.splitlines()
    assert f"format {raw['format_version'][0]}.{raw['format_version'][1]}" in lines
    assert "file weights.safetensors weights" in lines and "file golden.safetensors golden" in lines
    assert lines == sorted(lines)


def test_dump_non_strict_and_errors(tied, capsys):
    (tied / "extra.bin").write_bytes(b"x")
    code, out, err = _run(capsys, "dump", tied)
    assert (code, out) == (1, "") and err.startswith("error: [artifact.extra_file] extra.bin: ")
    code, out, err = _run(capsys, "dump", tied, "--non-strict")
    assert code == 0 and err == "" and out.startswith("digest sha256:")


# ------------------------------------------------------------------------------------------------ clean

def test_clean_removes_orphans_and_spares_a_live_export(tmp_path, capsys):
    target = tmp_path / "m.fxl"
    orphan = tmp_path / "m.fxl.fxlower-tmp-0123456789abcdef"
    live = tmp_path / "m.fxl.fxlower-tmp-fedcba9876543210"
    other = tmp_path / "n.fxl.fxlower-tmp-0123456789abcdef"  # another target's: not ours to judge
    for d in (orphan, live, other):
        d.mkdir()
        (d / "weights.safetensors").write_bytes(b"partial")
    (tmp_path / "m.fxl.fxlower-tmp-0123").mkdir()  # not the pattern (16 hex digits): left alone
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running export holds
        code, out, err = _run(capsys, "clean", target)
        assert (code, err) == (0, "")
        assert out == f"removed {orphan}\n1 orphaned temporary of {target} removed\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "m.fxl.fxlower-tmp-0123", live.name, other.name]
    finally:
        os.close(fd)
    code, out, err = _run(capsys, "clean", target)  # the lock is gone: now it is an orphan
    assert out == f"removed {live}\n1 orphaned temporary of {target} removed\n"
    assert _run(capsys, "clean", target) == (0, f"no orphaned temporaries of {target}\n", "")


def test_clean_counts_several(tmp_path, capsys):
    names = [f"m.fxlower-tmp-{i:016x}" for i in (1, 2)]
    for n in names:
        (tmp_path / n).mkdir()
    code, out, _ = _run(capsys, "clean", tmp_path / "m")
    assert code == 0
    assert out == "".join(f"removed {tmp_path / n}\n" for n in names) + \
        f"2 orphaned temporaries of {tmp_path / 'm'} removed\n"


def test_clean_leaves_files_and_symlinks_of_that_name(tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "m.fxlower-tmp-0000000000000001").write_text("a file")
    (tmp_path / "m.fxlower-tmp-0000000000000002").symlink_to(tmp_path / "elsewhere")
    assert _run(capsys, "clean", tmp_path / "m") == (0, f"no orphaned temporaries of {tmp_path / 'm'}\n", "")
    assert len(list(tmp_path.iterdir())) == 3


def test_clean_unlistable_parent(tmp_path, capsys):
    code, out, err = _run(capsys, "clean", tmp_path / "missing" / "m")
    assert (code, out) == (1, "")
    assert err == (f"error: cannot list {tmp_path / 'missing'} to look for temporaries of "
                   f"{tmp_path / 'missing' / 'm'}: No such file or directory (errno 2)\n")


def test_clean_unremovable_orphan(tmp_path, capsys, monkeypatch):
    import errno

    from fxlower.io import writing
    orphan = tmp_path / "m.fxlower-tmp-0000000000000001"
    orphan.mkdir()

    def refuse(path, **kwargs):  # what rmtree meets in a directory the user may not write
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(path, "f"))
    monkeypatch.setattr(writing.shutil, "rmtree", refuse)
    code, out, err = _run(capsys, "clean", tmp_path / "m")
    assert (code, out) == (1, "")
    assert err == (f"error: cannot remove the orphaned temporary {orphan}: Permission denied (errno 13, "
                   f"{orphan / 'f'}); remove it by hand\n")


# ------------------------------------------------------------------------------------------------ demo

def test_demo_without_the_cpp_runner(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_runner", lambda: str(tmp_path / "no-runner"))
    path = tmp_path / "sub" / "example.fxl"
    code, out, err = _run(capsys, "demo", path)
    assert (code, err) == (0, "")
    assert out.startswith("== 1. lift: lowering attributes on every leaf call_module node\n")
    assert f"\n== 2. export -> {path}\n" in out
    assert "\n== 3. load back (validated, hashes verified) and rebuild a GraphModule\n" in out
    assert ("  rebuilt module reproduces the golden output bit-exactly: True; on fresh inputs: True\n") in out
    assert out.endswith(f"\n(fxlower-run not built at {tmp_path / 'no-runner'}: build cpp/ to run the C++ check)\n")
    assert sorted(p.name for p in path.iterdir()) == ["golden.safetensors", "manifest.msgpack",
                                                      "weights.safetensors"]
    # the files' sizes are listed as written
    for p in path.iterdir():
        assert f"  {p.name:<22} {p.stat().st_size:>8} bytes\n" in out
    # and it reruns over its own output
    assert _run(capsys, "demo", path)[0] == 0


def test_demo_looks_for_the_runner_in_the_source_tree_build():
    assert cli._runner() == str(ROOT / "cpp" / "build" / "fxlower-run")


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
                                     (1024 ** 2, "1.0 MiB"), (5 * 1024 ** 3 // 2, "2.5 GiB"),
                                     (3 * 1024 ** 4, "3072.0 GiB")])
def test_sizes_are_shown_in_binary_units(n, text):
    assert cli._fmt_bytes(n) == text


def test_demo_runs_the_cpp_runner_and_returns_its_exit_code(tmp_path, capsys, monkeypatch):
    runner = tmp_path / "fake-run"
    runner.write_text("#!/bin/sh\necho \"ran $1 $2\"\nexit 3\n")
    runner.chmod(0o755)
    monkeypatch.setattr(cli, "_runner", lambda: str(runner))
    path = tmp_path / "example.fxl"
    code = cli.main(["demo", str(path)])
    out = capsys.readouterr().out
    assert code == 3
    assert out.endswith("\n== 4. execute in C++, without Python: fxlower-run --check\n")


def test_demo_reports_a_mismatch_with_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_runner", lambda: str(tmp_path / "no-runner"))
    monkeypatch.setattr(cli.torch, "equal", lambda a, b: False)
    code, out, _ = _run(capsys, "demo", tmp_path / "example.fxl")
    assert code == 1
    assert out.endswith("  rebuilt module reproduces the golden output bit-exactly: False; on fresh inputs: False\n")


def test_demo_cannot_create_its_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, out, err = _run(capsys, "demo", tmp_path / "file" / "sub" / "example.fxl")
    assert (code, out) == (1, "")
    assert err == f"error: {tmp_path / 'file'}: File exists (errno 17)\n" or \
        err == f"error: {tmp_path / 'file' / 'sub'}: Not a directory (errno 20)\n"


def test_demo_export_error_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_runner", lambda: str(tmp_path / "no-runner"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    code, _, err = _run(capsys, "demo", tmp_path / "taken")
    assert code == 1
    assert err == (f"error: [Errno 17] {tmp_path / 'taken'} exists and is not an fxlower artifact directory (it is a "
                   f"directory without manifest.msgpack that holds mine.txt); overwrite=True replaces only artifact "
                   f"directories, never other data. Choose another path, or move or remove what is there yourself: "
                   f"'{tmp_path / 'taken'}'\n")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"


# ------------------------------------------------------------------------------------------------ usage

@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["inspect"], ["clean"], ["validate", "x", "--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: fxlower ")


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "inspect", "validate", "dump", "clean"):
        assert cmd in out


def test_python_dash_m_runs_the_cli(tied):
    res = subprocess.run([sys.executable, "-m", "fxlower", "validate", str(tied)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{tied}: valid\n", "")
    res = subprocess.run([sys.executable, "-m", "fxlower", "validate"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 2 and "usage: fxlower" in res.stderr
