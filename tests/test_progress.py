"""Progress bars (fxlower/io/progress.py): export, verify, to_graph_module and the command line draw a tqdm bar in
bytes and tensors on a terminal when the work takes over a second, nothing on a pipe, nothing for short work; with
``progress=True`` at once on any stream, with ``progress=False`` never; and the C++ ``fxlower-inspect --verify
--progress``.

The model is five ``nn.Linear(256, 256)``: ten F32 tensors, 5 x (256 x 256 + 256) x 4 = 1,315,840 bytes, which
tqdm writes as "1.32MB" (1.31584 to three digits). Work over a second comes from a slow disk: the child process
makes each ``os.write`` / ``os.pwrite`` / ``os.preadv`` (the calls the writer and the readers use) take 0.12 s.
Export writes the tensor file in 11 calls (header, ten tensors, with pwrite) and the manifest in one; verify and to_graph_module read one tensor
per call: 1.2 s or more each, while the same work without the slow disk takes milliseconds.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pathlib
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import pytest
import torch
import torch.nn as nn

import fxlower
from fxlower.tools import cli
from fxlower.io import progress

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSPECT = ROOT / "cpp" / "build" / "fxlower-inspect"

TOTAL = 1_315_840
TOTAL_TQDM = "1.32MB"
TENSORS = 10

MODEL = """\
import torch
import torch.nn as nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(5)])
"""

# Runs the steps given as JSON [[name, seconds per write/read, "tty" or "pipe", statement], ...], writing "== name"
# on stderr first. A "pipe" step runs with a pipe as file descriptor 2 (stderr) instead of the terminal; what it wrote
# there is printed last, as "PIPED {name: text}".
CHILD = r"""
import json, os, sys, time
real_write, real_pwrite, real_preadv = os.write, os.pwrite, os.preadv
slow = 0.0
def slow_write(fd, data):
    time.sleep(slow)
    return real_write(fd, data)
def slow_pwrite(fd, data, offset):
    time.sleep(slow)
    return real_pwrite(fd, data, offset)
def slow_preadv(fd, buffers, offset):
    time.sleep(slow)
    return real_preadv(fd, buffers, offset)
os.write, os.pwrite, os.preadv = slow_write, slow_pwrite, slow_preadv
import fxlower
from fxlower.tools.cli import main
piped = {}
for name, slow, where, statement in json.loads(sys.argv[1]):
    if where == "pipe":
        r, w = os.pipe()
        terminal = os.dup(2)
        os.dup2(w, 2)
        os.close(w)
    sys.stderr.write(f"== {name}\n")
    sys.stderr.flush()
    start = time.monotonic()
    exec(statement)
    print(f"{name} took {time.monotonic() - start:.2f} s", flush=True)
    sys.stderr.flush()
    if where == "pipe":
        os.dup2(terminal, 2)
        os.close(terminal)
        os.set_blocking(r, False)
        data = b""
        try:
            while chunk := os.read(r, 65536):
                data += chunk
        except BlockingIOError:
            pass
        os.close(r)
        piped[name] = data.decode()
print("PIPED " + json.dumps(piped))
"""

SLOW = 0.12


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(5)])


def _run_child(steps: list, cwd: pathlib.Path) -> tuple[str, dict[str, str], dict[str, str]]:
    """Run the steps in a child whose stderr is an unsized pseudo-terminal (0 columns, as a fresh pty is).

    Returns its stdout, what each "tty" step drew on the terminal (after its "== name" line), and what each "pipe"
    step wrote to its stderr (the pipe, the "== name" line included)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", CHILD, json.dumps(steps)]
    master, slave = os.openpty()
    chunks = []
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=slave)
        os.close(slave)
        deadline = time.monotonic() + 300
        try:
            while True:
                ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    p.kill()
                    pytest.fail("the child did not finish in 300 s")
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal (the child exited)
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        code = p.wait(timeout=60)
        out.seek(0)
        stdout = out.read().decode()
    err = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")  # the terminal's \n -> \r\n
    assert code == 0, err
    stdout, _, piped = stdout.rpartition("PIPED ")
    return stdout, _split(err), json.loads(piped)


def _split(err: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    assert err.startswith("== "), err
    for block in err[3:].split("\n== "):
        name, _, text = block.partition("\n")
        parts[name] = text
    return parts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    """model.py, and slow.fxl exported from it."""
    d = tmp_path_factory.mktemp("progress")
    (d / "model.py").write_text(MODEL)
    fxlower.export(_model(), d / "slow.fxl", progress=False)
    return d


def _final(text: str) -> str:
    """The last state the bar drew (tqdm rewrites its line after a carriage return)."""
    return text.rstrip("\n").rsplit("\r", 1)[-1]


# ------------------------------------------------------------------------------------------------ terminal

@pytest.fixture(scope="module")
def cli_run(workdir) -> tuple[str, dict[str, str], dict[str, str]]:
    """One child: the slow commands on a terminal, the same on a pipe, and short work on the terminal."""
    steps = [["export", SLOW, "tty", "main(['export', 'model.py:make', '-o', 'written.fxl', '--overwrite'])"],
             ["verify", SLOW, "tty", "main(['validate', 'slow.fxl', '--verify'])"],
             ["short", 0.0, "tty", "main(['validate', 'slow.fxl', '--verify']); "
                                   "main(['export', 'model.py:make', '-o', 'quick.fxl', '--overwrite'])"],
             ["piped export", SLOW, "pipe", "main(['export', 'model.py:make', '-o', 'piped.fxl', '--overwrite'])"],
             ["piped verify", SLOW, "pipe", "main(['validate', 'piped.fxl', '--verify'])"]]
    return _run_child(steps, workdir)


def test_cli_draws_bars_on_a_terminal_when_the_work_takes_over_a_second(cli_run):
    stdout, err, _ = cli_run
    assert "slow.fxl: valid" in stdout and "written    7 nodes, 10 tensors, " in stdout
    for step in ("export", "verify"):
        text = err[step]
        final = _final(text)
        assert final.startswith(f"{step}: 100%|"), text
        assert f"| {TOTAL_TQDM}/{TOTAL_TQDM}, {TENSORS}/{TENSORS} tensors [" in final, text
        # the bar appears only after a second of work: never at 0 %
        assert f"{step}:   0%|" not in text and f" 0.00B/{TOTAL_TQDM}" not in text, text
        # an unsized terminal (0 columns) still gets a bar of 80 columns, not an empty line
        assert len(final) == 80, final
    # the same commands without the slow disk take milliseconds: nothing on the terminal
    assert err["short"] == ""


def test_cli_draws_nothing_when_stderr_is_a_pipe(cli_run):
    stdout, err, piped = cli_run
    assert piped == {"piped export": "== piped export\n", "piped verify": "== piped verify\n"}
    assert set(err) == {"export", "verify", "short"}  # nothing of the piped steps reached the terminal
    # the work did take over a second (so a terminal would have shown a bar)
    took = dict(line.split(" took ") for line in stdout.splitlines() if " took " in line)
    assert float(took["piped export"].split()[0]) > 1.0 and float(took["piped verify"].split()[0]) > 1.0, stdout
    assert "piped.fxl: valid" in stdout


class _Pty:
    """A pseudo-terminal of ``columns`` columns as this process's ``sys.stderr``; :meth:`text` is what was drawn."""

    def __init__(self, monkeypatch, columns: int):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.stream = open(slave, "w", encoding="utf-8", buffering=1)
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()
        monkeypatch.setattr(sys, "stderr", self.stream)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the terminal's other end was closed
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        self.stream.close()
        self.thread.join(30)
        os.close(self.master)
        return b"".join(self.chunks).decode().replace("\r\n", "\n")


def _slow_reads(monkeypatch) -> None:
    real = os.preadv

    def slow_preadv(fd, buffers, offset):
        time.sleep(SLOW)
        return real(fd, buffers, offset)
    monkeypatch.setattr(os, "preadv", slow_preadv)


def test_to_graph_module_draws_on_a_terminal_when_reading_takes_over_a_second(workdir, monkeypatch):
    with fxlower.load(workdir / "slow.fxl") as art:
        _slow_reads(monkeypatch)
        term = _Pty(monkeypatch, 100)
        art.to_graph_module()
        text = term.text()
    final = _final(text)
    assert final.startswith("load: 100%|") and 95 <= len(final) <= 100, text  # the width (tqdm spares a column)
    assert f"| {TOTAL_TQDM}/{TOTAL_TQDM}, {TENSORS}/{TENSORS} tensors [" in final
    assert "load:   0%|" not in text


def test_progress_false_draws_nothing_on_a_terminal(workdir, monkeypatch):
    with fxlower.load(workdir / "slow.fxl") as art:
        _slow_reads(monkeypatch)
        term = _Pty(monkeypatch, 100)
        start = time.monotonic()
        art.verify(progress=False)
        took = time.monotonic() - start
        assert term.text() == ""
    assert took > 1.0


# ------------------------------------------------------------------------------------------------ in process

class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture()
def artifact(tmp_path):
    path = tmp_path / "m.fxl"
    fxlower.export(_model(), path, (torch.randn(64, 256),), golden=True, progress=False)
    return path


# with the 64 x 256 golden input and output: 1,315,840 + 2 x 65,536 bytes in 12 tensors
GOLDEN_TOTAL_TQDM = "1.45MB"


def test_progress_true_draws_at_once_on_any_stream(tmp_path, capsys):
    fxlower.export(_model(), tmp_path / "m.fxl", (torch.randn(64, 256),), golden=True, progress=True)
    err = capsys.readouterr().err
    assert err.startswith(f"\rexport:   0%|          | 0.00B/{GOLDEN_TOTAL_TQDM}, 0/12 tensors ["), err
    assert _final(err).startswith("export: 100%|")
    assert f"| {GOLDEN_TOTAL_TQDM}/{GOLDEN_TOTAL_TQDM}, 12/12 tensors [" in err

    art = fxlower.load(tmp_path / "m.fxl", verify=True, progress=True)
    err = capsys.readouterr().err
    assert err.startswith(f"\rverify:   0%|          | 0.00B/{GOLDEN_TOTAL_TQDM}, 0/12 tensors [")
    assert f"| {GOLDEN_TOTAL_TQDM}/{GOLDEN_TOTAL_TQDM}, 12/12 tensors [" in _final(err)

    # to_graph_module reads the weights only (not the golden file), each stored tensor once
    for copy in (True, False):
        art.to_graph_module(copy=copy, progress=True)
        err = capsys.readouterr().err
        assert err.startswith(f"\rload:   0%|          | 0.00B/{TOTAL_TQDM}, 0/{TENSORS} tensors [")
        assert f"| {TOTAL_TQDM}/{TOTAL_TQDM}, {TENSORS}/{TENSORS} tensors [" in _final(err)
    art.to_graph_module(view="module", progress=None)
    art.verify()
    assert capsys.readouterr().err == ""  # not a terminal
    art.close()


def test_a_shared_tensor_is_read_once_and_verified_per_entry(tmp_path, capsys):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(1000, 64)  # 256,000 bytes
            self.head = nn.Linear(64, 1000, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(self.emb(x))

    fxlower.export(Tied(), tmp_path / "t.fxl", progress=True)
    assert "| 256kB/256kB, 1/1 tensors [" in capsys.readouterr().err  # one stored tensor
    with fxlower.load(tmp_path / "t.fxl", verify=True, progress=True) as art:
        assert "| 512kB/512kB, 2/2 tensors [" in capsys.readouterr().err  # two table entries, both hashed
        art.to_graph_module(progress=True)
        assert "| 256kB/256kB, 1/1 tensors [" in capsys.readouterr().err


def test_auto_mode_on_a_terminal_after_the_delay(artifact, monkeypatch):
    """On a terminal (a stream saying so) with the delay at 0, auto draws; False never draws."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    art = fxlower.load(artifact, verify=True)
    assert f"| {GOLDEN_TOTAL_TQDM}/{GOLDEN_TOTAL_TQDM}, 12/12 tensors [" in term.getvalue()
    term.seek(0)
    term.truncate()
    art.verify(progress=False)
    art.to_graph_module(progress=False)
    fxlower.load(artifact, verify=True, progress=False).close()
    assert cli.main(["validate", str(artifact), "--verify", "--no-progress"]) == 0
    assert term.getvalue() == ""
    art.to_graph_module()
    assert f"| {TOTAL_TQDM}/{TOTAL_TQDM}, {TENSORS}/{TENSORS} tensors [" in term.getvalue()
    art.close()


def test_auto_mode_on_a_terminal_hides_short_work(artifact, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with fxlower.load(artifact, verify=True) as art:
        art.to_graph_module()
    assert term.getvalue() == ""


def test_cli_progress_flag_forces_the_bar_on_a_pipe(artifact, capsys):
    assert cli.main(["validate", str(artifact), "--verify", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{artifact}: valid\n"
    assert f"| {GOLDEN_TOTAL_TQDM}/{GOLDEN_TOTAL_TQDM}, 12/12 tensors [" in _final(err)
    assert cli.main(["inspect", str(artifact), "--verify", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "verify     12 tensors: all SHA-256 match" in out
    assert f"| {GOLDEN_TOTAL_TQDM}/{GOLDEN_TOTAL_TQDM}, 12/12 tensors [" in _final(err)


def test_cli_export_progress_flag(tmp_path, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main(["export", "model.py:make", "-o", str(tmp_path / "e.fxl"), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert f"| {TOTAL_TQDM}/{TOTAL_TQDM}, {TENSORS}/{TENSORS} tensors [" in _final(err)
    assert "\nwritten    7 nodes, 10 tensors, " in out


def test_the_bar_never_changes_the_artifact(tmp_path, capsys):
    a, b = tmp_path / "a.fxl", tmp_path / "b.fxl"
    x = torch.randn(64, 256)
    fxlower.export(_model(), a, (x,), golden=True, progress=True)
    fxlower.export(_model(), b, (x,), golden=True, progress=False)
    assert "export: 100%" in capsys.readouterr().err
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) == ["golden.safetensors", "manifest.msgpack", "weights.safetensors"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("value", ["yes", 1, 0])
def test_progress_must_be_none_true_or_false(artifact, tmp_path, value):
    with pytest.raises(TypeError, match=re.escape("progress must be None (a bar when stderr is a terminal), True "
                                                  f"or False, got {value!r}")):
        fxlower.export(_model(), tmp_path / "x.fxl", progress=value)
    assert not (tmp_path / "x.fxl").exists()
    with pytest.raises(TypeError, match="progress must be"):
        fxlower.load(artifact, verify=True, progress=value)
    with fxlower.load(artifact) as art:
        with pytest.raises(TypeError, match="progress must be"):
            art.verify(progress=value)
        with pytest.raises(TypeError, match="progress must be"):
            art.to_graph_module(progress=value)


# ------------------------------------------------------------------------------------------------ C++

def _cpp_artifact(tmp_path) -> pathlib.Path:
    path = tmp_path / "c.fxl"
    fxlower.export(_model(), path, progress=False)
    return path


def test_cpp_inspect_verify_progress_on_a_pipe(tmp_path):
    assert INSPECT.exists(), f"{INSPECT} is missing: build the C++ side first (scripts/test.sh does)"
    path = _cpp_artifact(tmp_path)
    p = subprocess.run([str(INSPECT), "--verify", "--progress", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "verify      10 tensors: all SHA-256 match" in p.stdout
    # table order: 0.bias (1,024 bytes), 0.weight (262,144 bytes), 1.bias, ...; a line at each 10 % passed
    # a line at each 10 % passed; a machine that stalls over 1 s between two tensors may add a time-driven line,
    # which must then be another well-formed state between its neighbours
    expected = ["verify: 0/10 tensors, 0/1315840 bytes (0%)",
                "verify: 2/10 tensors, 263168/1315840 bytes (20%)",
                "verify: 4/10 tensors, 526336/1315840 bytes (40%)",
                "verify: 6/10 tensors, 789504/1315840 bytes (60%)",
                "verify: 8/10 tensors, 1052672/1315840 bytes (80%)",
                "verify: 10/10 tensors, 1315840/1315840 bytes (100%)"]
    lines = p.stderr.splitlines()
    assert p.stderr.endswith("\n") and lines[0] == expected[0] and lines[-1] == expected[-1]
    assert [line for line in lines if line in expected] == expected
    done = [int(re.fullmatch(r"verify: (\d+)/10 tensors, \d+/1315840 bytes \(\d+%\)", line).group(1)) for line in lines]
    assert done == sorted(done)
    # without --progress, nothing on stderr
    p = subprocess.run([str(INSPECT), "--verify", str(path)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""


def test_cpp_inspect_verify_progress_on_a_terminal_rewrites_one_line(tmp_path):
    assert INSPECT.exists(), f"{INSPECT} is missing: build the C++ side first (scripts/test.sh does)"
    path = _cpp_artifact(tmp_path)
    master, slave = os.openpty()
    p = subprocess.Popen([str(INSPECT), "--verify", "--progress", str(path)], stdout=subprocess.DEVNULL,
                         stderr=slave)
    os.close(slave)
    chunks = []
    while select.select([master], [], [], 60)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    err = b"".join(chunks).decode()
    assert err.startswith("\rverify: 0/10 tensors, 0/1315840 bytes (0%)")
    assert err.endswith("\rverify: 10/10 tensors, 1315840/1315840 bytes (100%)\r\n")  # the terminal's \n
    assert "\n" not in err[:-1]


def test_cpp_inspect_help_names_progress():
    assert INSPECT.exists(), f"{INSPECT} is missing: build the C++ side first (scripts/test.sh does)"
    p = subprocess.run([str(INSPECT), "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    assert "usage: fxlower-inspect [--nodes] [--verify [--progress]] [--json] [--non-strict] DIR\n" in p.stdout
    assert "  --progress    with --verify, print progress on stderr" in p.stdout
