"""Malformed artifacts: every rejection path of ``fxlower.load`` (docs/format.md sections 1, 2, 5, 10, 11).

Each test starts from one small valid export (copied into ``tmp_path``), corrupts exactly one thing — a decoded
manifest re-packed with ``msgpack.packb``, raw byte surgery for MessagePack-level faults, or a rewritten
safetensors header — and checks the exact error class, the exact ``.code`` and that the message names the file,
field or tensor at fault.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import msgpack
import pytest
import torch
import torch.fx
import torch.nn as nn

import fxlower
from fxlower import FormatError, UnsupportedTargetError, VersionError
from fxlower.format.values import FunctionRef

from downgrade import to_1_0, to_1_1, to_1_2

MANIFEST = "manifest.msgpack"
WEIGHTS = "weights.safetensors"
GOLDEN = "golden.safetensors"
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ the base model

@torch.fx.wrap
def fxl_test_double(x):
    """A user function the tracer keeps as a leaf (not on the allow-list)."""
    return x * 2


# The base model and the manifest-surgery helpers (read_m, write_m, edit, node, tensor) are the conformance
# generator's own.
_spec = importlib.util.spec_from_file_location("make_conformance", REPO / "scripts" / "make_conformance.py")
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)
Small = _gen.Small
read_m, write_m, edit, node, tensor = _gen.read_m, _gen.write_m, _gen.edit, _gen.node, _gen.tensor


class UsesWrapped(nn.Module):
    def forward(self, x):
        return fxl_test_double(x) + 1


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "small.fxl"
    gm = torch.fx.symbolic_trace(Small().eval())
    fxlower.export(gm, path, (torch.randn(2, 4),), golden=True)
    return path


@pytest.fixture
def art(base, tmp_path) -> Path:
    """A fresh copy of the valid base artifact."""
    dst = tmp_path / "a.fxl"
    shutil.copytree(base, dst)
    return dst


@pytest.fixture(scope="module")
def wrapped_base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wrapped") / "wrapped.fxl"
    gm = torch.fx.symbolic_trace(UsesWrapped())
    fxlower.export(gm, path, (torch.arange(4.0),), golden=True)
    return path


# ------------------------------------------------------------------------------------------------ helpers

class Pairs(list):
    """A map given as (key, value) pairs, so keys may repeat or have any type."""


def pack(obj) -> bytes:
    """msgpack.packb, but a :class:`Pairs` is written as a map of exactly those pairs."""
    if isinstance(obj, dict):
        obj = Pairs(obj.items())
    if isinstance(obj, Pairs):
        return msgpack.Packer().pack_map_header(len(obj)) + b"".join(pack(k) + pack(v) for k, v in obj)
    if isinstance(obj, list):
        return msgpack.Packer().pack_array_header(len(obj)) + b"".join(pack(v) for v in obj)
    return msgpack.packb(obj, use_bin_type=True)


def add_top_level(p: Path, key: bytes, value: bytes) -> None:
    """Raw surgery: append one packed key/value pair to the top-level fixmap of the manifest."""
    raw = (p / MANIFEST).read_bytes()
    assert 0x80 <= raw[0] < 0x8F
    (p / MANIFEST).write_bytes(bytes([raw[0] + 1]) + raw[1:] + key + value)


def replace_once(p: Path, old: bytes, new: bytes, name: str = MANIFEST) -> None:
    raw = (p / name).read_bytes()
    assert raw.count(old) >= 1, old
    (p / name).write_bytes(raw.replace(old, new, 1))


def read_st(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_bytes(header, data: bytes, *, align: bool = True) -> bytes:
    """A safetensors file from a header (dict, or raw JSON bytes) and a data section; padded with spaces."""
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if align:
        raw += b" " * ((-(8 + len(raw))) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def rejects(p, code: str, *needles: str, cls: type = FormatError, **load_kwargs) -> FormatError:
    """Assert that loading ``p`` raises exactly ``cls`` with ``code``, and the message holds every needle."""
    with pytest.raises(FormatError) as info:
        fxlower.load(p, **load_kwargs)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__} instead of {cls.__name__}: {err}"
    assert err.code == code, f"code {err.code} instead of {code}: {err}"
    for needle in needles:
        assert needle in str(err), f"{needle!r} not named in: {err}"
    return err


def nested_graph(name: str, callee: int | None) -> dict:
    """A nested graph (a, call_module inner [graph=callee], output) written by hand."""
    def n(name, op, target, args, inputs, users, graph=None):
        return {"name": name, "op": op, "target": target, "args": args, "kwargs": {}, "inputs": inputs,
                "users": users, "meta": None, "lowering": None, "graph": graph}
    if callee is None:
        return {"name": name, "nodes": [n("a", "placeholder", "a", [], [], ["output"]),
                                        n("output", "output", "output", [{"t": "node", "v": "a"}], ["a"], [])]}
    return {"name": name, "nodes": [
        n("a", "placeholder", "a", [], [], ["c"]),
        n("c", "call_module", "inner", [{"t": "node", "v": "a"}], ["a"], ["output"], graph=callee),
        n("output", "output", "output", [{"t": "node", "v": "c"}], ["c"], [])]}


def test_base_artifact_is_valid(art):
    works_as_exported(fxlower.load(art, verify=True))


def works_as_exported(a) -> None:
    """The artifact verifies and its rebuilt module reproduces the stored outputs of the exported model bit for
    bit (what an accepted artifact must still do, not merely load)."""
    a.verify()
    gm = a.to_graph_module()
    out = gm(*a.golden_inputs())
    want = a.golden_outputs()
    assert out.dtype == want.dtype and torch.equal(out, want)


def f64_bits(x: float) -> bytes:
    return struct.pack("<d", x)


# ------------------------------------------------------------------------------------------------ directory

def test_rejects_missing_directory(tmp_path):
    rejects(tmp_path / "nowhere.fxl", "artifact.missing", "nowhere.fxl")


def test_rejects_missing_manifest(art):
    (art / MANIFEST).unlink()
    rejects(art, "artifact.missing", MANIFEST)


def test_rejects_missing_listed_file(art):
    (art / WEIGHTS).unlink()
    rejects(art, "artifact.missing", WEIGHTS)


def test_rejects_unlisted_extra_file_in_strict_mode(art):
    (art / "notes.txt").write_text("hello")
    rejects(art, "artifact.extra_file", "notes.txt")


def test_rejects_unlisted_extra_directory_in_strict_mode(art):
    (art / "sub").mkdir()
    rejects(art, "artifact.extra_file", "sub")


def test_accepts_unlisted_extra_file_when_not_strict(art):
    (art / "notes.txt").write_text("hello")
    a = fxlower.load(art, strict=False, verify=True)
    assert {t.file for t in a.tensors.values()} == {WEIGHTS, GOLDEN}
    works_as_exported(a)


def test_non_strict_never_opens_an_unlisted_fifo(art):
    os.mkfifo(art / "pipe")
    with _alarm(10):
        works_as_exported(fxlower.load(art, strict=False))


def test_rejects_symlinked_member(art, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.move(art / WEIGHTS, outside)
    os.symlink(outside, art / WEIGHTS)
    rejects(art, "artifact.not_regular", WEIGHTS)


def test_rejects_dangling_symlink_member(art):
    (art / WEIGHTS).unlink()
    os.symlink("/nonexistent/file", art / WEIGHTS)
    rejects(art, "artifact.not_regular", WEIGHTS)


def test_rejects_symlinked_manifest(art, tmp_path):
    outside = tmp_path / "outside.msgpack"
    shutil.move(art / MANIFEST, outside)
    os.symlink(outside, art / MANIFEST)
    rejects(art, "artifact.not_regular", MANIFEST)


def test_rejects_symlinked_artifact_directory(art, tmp_path):
    link = tmp_path / "link.fxl"
    os.symlink(art, link)
    rejects(link, "artifact.not_regular", "link.fxl")


def test_rejects_artifact_path_that_is_a_regular_file(tmp_path):
    f = tmp_path / "file.fxl"
    f.write_bytes(b"")
    rejects(f, "artifact.not_regular", "file.fxl")


class _Timeout(Exception):
    pass


class _alarm:
    """Fail instead of hanging forever (a FIFO opened for reading blocks until a writer comes)."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def fire(signum, frame):
            raise _Timeout(f"load did not return within {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def test_rejects_fifo_member_without_hanging(art):
    (art / WEIGHTS).unlink()
    os.mkfifo(art / WEIGHTS)
    with _alarm(10):
        rejects(art, "artifact.not_regular", WEIGHTS)


def test_rejects_fifo_manifest_without_hanging(art):
    (art / MANIFEST).unlink()
    os.mkfifo(art / MANIFEST)
    with _alarm(10):
        rejects(art, "artifact.not_regular", MANIFEST)


def test_rejects_directory_as_member(art):
    (art / WEIGHTS).unlink()
    (art / WEIGHTS).mkdir()
    rejects(art, "artifact.not_regular", WEIGHTS)


def test_accepts_hard_linked_member(art, tmp_path):
    os.link(art / WEIGHTS, tmp_path / "other-name")
    works_as_exported(fxlower.load(art, verify=True))


@pytest.mark.parametrize("bad", ["../x", "a/b", ".", "..", "/etc/passwd", "", MANIFEST, "a\\b", "x" * 256,
                                 "we ights", "caf\u00e9", "a\x00b"])
def test_rejects_bad_listed_file_path(art, bad):
    edit(art, lambda m: m["files"][1].__setitem__("path", bad))
    rejects(art, "path.invalid", "files[1].path")


def test_accepts_dots_inside_a_path_component(art):
    os.rename(art / WEIGHTS, art / "a..b.bin")

    def fix(m):
        m["files"][1]["path"] = "a..b.bin"
        for t in m["tensors"]:
            if t["file"] == WEIGHTS:
                t["file"] = "a..b.bin"
    edit(art, fix)
    a = fxlower.load(art, verify=True)
    assert a.tensors["lin.weight"].file == "a..b.bin"
    works_as_exported(a)


def test_rejects_case_insensitive_duplicate_path(art):
    edit(art, lambda m: m["files"][1].__setitem__("path", GOLDEN.upper()))
    rejects(art, "path.invalid", "GOLDEN.SAFETENSORS", "files[1]")


# ------------------------------------------------------------------------------------------------ manifest bytes

def test_rejects_manifest_over_size_cap_before_reading(art):
    os.truncate(art / MANIFEST, (1 << 30) + 1)  # sparse: the cap is checked from fstat, nothing is read
    start = time.monotonic()
    rejects(art, "manifest.size", MANIFEST)
    assert time.monotonic() - start < 2


def test_rejects_empty_manifest(art):
    (art / MANIFEST).write_bytes(b"")
    rejects(art, "manifest.decode", MANIFEST)


def test_rejects_truncated_manifest(art):
    raw = (art / MANIFEST).read_bytes()
    (art / MANIFEST).write_bytes(raw[:-1])
    rejects(art, "manifest.decode", MANIFEST, "incomplete")


def test_rejects_trailing_bytes_after_manifest(art):
    with open(art / MANIFEST, "ab") as f:
        f.write(b"\xc0")
    rejects(art, "manifest.decode", MANIFEST)


def test_rejects_reserved_byte_0xc1(art):
    replace_once(art, b"\xa5graph\xc0", b"\xa5graph\xc1")
    rejects(art, "manifest.decode", MANIFEST)


@pytest.mark.parametrize("ext", [b"\xd4\x05\x00", b"\xc7\x01\x07\x00", b"\xd6\xff\x00\x00\x00\x00",
                                 b"\xd7\xff" + b"\x00" * 8, b"\xc7\x0c\xff" + b"\x00" * 12,
                                 b"\xd5\xff\x00\x00"],
                         ids=["fixext1", "ext8", "timestamp32", "timestamp64", "timestamp96", "bad-timestamp"])
def test_rejects_extension_types(art, ext):
    replace_once(art, b"\xa5graph\xc0", b"\xa5graph" + ext)
    rejects(art, "manifest.decode", MANIFEST)


def test_rejects_timestamp_as_whole_manifest(art):
    (art / MANIFEST).write_bytes(b"\xd6\xff\x00\x00\x00\x00")
    rejects(art, "manifest.decode", "timestamp")


def test_rejects_invalid_utf8_string(art):
    replace_once(art, b"\xa4relu", b"\xa4r\xffl\xfe")
    rejects(art, "manifest.decode", MANIFEST)


@pytest.mark.parametrize("key", [1, -1, None, 1.5, True, b"bin"], ids=["int", "negint", "nil", "float", "bool", "bin"])
def test_rejects_non_string_map_key(art, key):
    m = read_m(art)
    node(m, "relu")["kwargs"] = Pairs([(key, None)])
    (art / MANIFEST).write_bytes(pack(m))
    rejects(art, "manifest.key_type", MANIFEST)


def test_rejects_int_key_at_top_level(art):
    add_top_level(art, msgpack.packb(7), msgpack.packb(None))
    rejects(art, "manifest.key_type", "an int")


def test_rejects_duplicate_map_key_at_top_level(art):
    add_top_level(art, msgpack.packb("digest"), msgpack.packb("sha256:" + "0" * 64))
    rejects(art, "manifest.duplicate_key", "digest")


def test_rejects_duplicate_map_key_in_nested_map(art):
    m = read_m(art)
    nodes = m["graphs"][0]["nodes"]
    i = nodes.index(node(m, "relu"))
    nodes[i] = Pairs(list(nodes[i].items()) + [("op", "call_function")])
    (art / MANIFEST).write_bytes(pack(m))
    rejects(art, "manifest.duplicate_key", "'op'")


def test_rejects_duplicate_key_even_inside_extension_field(art):
    add_top_level(art, msgpack.packb("x-ext"), pack(Pairs([("a", 1), ("a", 1)])))
    rejects(art, "manifest.duplicate_key", "'a'")


def test_rejects_msgpack_nesting_1025_deep(art):
    # The top-level map is level 1; 1024 arrays inside it make 1025.
    add_top_level(art, msgpack.packb("x-deep"), b"\x91" * 1024 + b"\xc0")
    rejects(art, "manifest.decode", MANIFEST)


def test_accepts_msgpack_nesting_1024_deep_in_extension_field(art):
    add_top_level(art, msgpack.packb("x-deep"), b"\x91" * 1023 + b"\xc0")
    works_as_exported(fxlower.load(art))


def test_rejects_much_deeper_nesting(art):
    add_top_level(art, msgpack.packb("x-deep"), b"\x91" * 1_000_000 + b"\xc0")
    rejects(art, "manifest.decode", MANIFEST)


@pytest.mark.parametrize("head", [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                                  b"\xc6\xff\xff\xff\xff"], ids=["array32", "map32", "str32", "bin32"])
def test_rejects_huge_declared_length_fast(art, head):
    (art / MANIFEST).write_bytes(head)
    start = time.monotonic()
    rejects(art, "manifest.decode", MANIFEST)
    assert time.monotonic() - start < 1


_UNDER_RLIMIT = textwrap.dedent("""
    import os, sys
    import fxlower
    cases = {
        "array32": b"\\xdd\\xff\\xff\\xff\\xff",
        "map32": b"\\xdf\\xff\\xff\\xff\\xff",
        "nested-array32": b"\\xdd\\x00\\x0f\\x42\\x40" * 200_000,
        "nested-map32": b"\\xdf\\x00\\x0f\\x42\\x40" * 200_000,
    }
    for name, data in cases.items():
        with open(os.path.join(sys.argv[1], "manifest.msgpack"), "wb") as f:
            f.write(data)
        try:
            fxlower.load(sys.argv[1])
        except fxlower.FormatError as e:
            print(name, e.code)
""")


def test_huge_declared_lengths_stay_under_a_2gib_address_space_limit(art):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _UNDER_RLIMIT, str(art)], preexec_fn=limit, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MemoryError" not in proc.stderr
    assert proc.stdout.split("\n")[:4] == ["array32 manifest.decode", "map32 manifest.decode",
                                           "nested-array32 manifest.decode", "nested-map32 manifest.decode"]


# ------------------------------------------------------------------------------------------------ format and version

def test_rejects_wrong_format_identifier(art):
    edit(art, lambda m: m.__setitem__("format", "pytorch"))
    rejects(art, "format.identifier", "pytorch", "fxlower", "1.3", cls=VersionError)


def test_rejects_missing_format_identifier(art):
    edit(art, lambda m: m.pop("format"))
    rejects(art, "format.identifier", "fxlower", cls=VersionError)


def test_rejects_manifest_that_is_not_a_map(art):
    (art / MANIFEST).write_bytes(msgpack.packb(["fxlower", [1, 0]]))
    rejects(art, "format.identifier", "an array", cls=VersionError)


def test_rejects_major_version_2(art):
    edit(art, lambda m: m.__setitem__("format_version", [2, 0]))
    rejects(art, "format.version", "2.0", "1.3", cls=VersionError)


@pytest.mark.parametrize("minor", [4, 99])
def test_rejects_future_minor_version(art, minor):
    edit(art, lambda m: m.__setitem__("format_version", [1, minor]))
    rejects(art, "format.version", f"1.{minor}", "1.3", cls=VersionError)


@pytest.mark.parametrize("version", [["1", "0"], [1], [1, 0, 0], [True, 0], [1, -1], [1.0, 0], "1.0", None,
                                     [1, 2**64 - 1]])
def test_rejects_malformed_format_version(art, version):
    edit(art, lambda m: m.__setitem__("format_version", version))
    rejects(art, "format.version", "1.3", cls=VersionError)


def test_checks_version_before_schema(art):
    def bad(m):
        m["format_version"] = [2, 0]
        m["unknown"] = 1
        del m["digest"]
    edit(art, bad)
    rejects(art, "format.version", cls=VersionError)


def test_accepts_every_minor_of_major_1(art):
    assert fxlower.load(art).format_version == (1, 3)
    edit(art, to_1_2)
    assert fxlower.load(art).format_version == (1, 2)
    edit(art, to_1_1)
    assert fxlower.load(art).format_version == (1, 1)
    edit(art, to_1_0)
    assert fxlower.load(art).format_version == (1, 0)


# ------------------------------------------------------------------------------------------------ schema

@pytest.mark.parametrize("path,field", [((), "digest"), (("tensors", 0), "sha256"), (("graphs", 0, "nodes", 2), "users"),
                                        (("producer",), "torch"), (("golden",), "tolerances"),
                                        (("signature",), "output"), (("graphs", 0, "nodes", 1, "lowering"), "attrs")])
def test_rejects_missing_required_field(art, path, field):
    def drop(m):
        obj = m
        for p in path:
            obj = obj[p]
        del obj[field]
    edit(art, drop)
    rejects(art, "schema.missing_field", f"'{field}'")


def test_rejects_unknown_top_level_field(art):
    edit(art, lambda m: m.__setitem__("comment", "hi"))
    rejects(art, "schema.unknown_field", "'comment'")


def test_rejects_unknown_node_field(art):
    edit(art, lambda m: node(m, "relu").__setitem__("device", "cpu"))
    rejects(art, "schema.unknown_field", "'device'", "nodes[2]")


def test_accepts_x_extension_fields_everywhere(art):
    def add(m):
        m["x-vendor"] = {"anything": [1, 2, {"deep": None}]}
        node(m, "relu")["x-note"] = "fused"
        m["tensors"][0]["x-quant"] = 1
        m["producer"]["x-host"] = 7
    before = read_m(art)
    edit(art, add)
    a = fxlower.load(art, verify=True)
    assert a.manifest.producer.torch == before["producer"]["torch"]
    assert a.graphs[0].node("relu").target == "torch.relu"
    works_as_exported(a)


def test_rejects_str_where_int_expected(art):
    edit(art, lambda m: node(m, "lin")["lowering"].__setitem__("version", "1"))
    rejects(art, "schema.type", "lowering.version", "a str")


@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
def test_rejects_uint64_above_int64_max_where_int_expected(art, value):
    edit(art, lambda m: node(m, "lin")["lowering"].__setitem__("module_version", value))
    rejects(art, "schema.type", "lowering.module_version", str(value))


def test_accepts_int64_extremes(art):
    edit(art, lambda m: node(m, "lin")["lowering"].__setitem__("module_version", -(2**63)))
    a = fxlower.load(art)
    assert a.graphs[0].node("lin").lowering.module_version == -(2**63)
    edit(art, lambda m: node(m, "lin")["lowering"].__setitem__("module_version", 2**63 - 1))
    assert fxlower.load(art).graphs[0].node("lin").lowering.module_version == 9223372036854775807


def test_rejects_bool_where_int_expected(art):
    edit(art, lambda m: node(m, "lin")["lowering"].__setitem__("version", True))
    rejects(art, "schema.type", "lowering.version", "a bool")


def test_rejects_float_where_int_expected(art):
    edit(art, lambda m: node(m, "lin").__setitem__("graph", 1.0))
    rejects(art, "schema.type", "nodes[1].graph")


def test_rejects_map_where_array_expected(art):
    edit(art, lambda m: m.__setitem__("tensors", {}))
    rejects(art, "schema.type", "tensors")


def test_accepts_float32_where_float_expected(art):
    raw = (art / MANIFEST).read_bytes()
    f64 = b"\xcb" + struct.pack(">d", 0.001)
    assert raw.count(f64) == 1
    (art / MANIFEST).write_bytes(raw.replace(f64, b"\xca" + struct.pack(">f", 0.001)))
    rtol = fxlower.load(art).tolerances()["F32"][0]
    assert type(rtol) is float
    assert f64_bits(rtol) == bytes.fromhex("000000e04d62503f")  # float32 0.001 widened: 0x3F50624DE0000000


def test_rejects_unknown_file_role(art):
    edit(art, lambda m: m["files"][1].__setitem__("role", "code"))
    rejects(art, "schema.type", "'code'", "files[1]")


def test_rejects_two_weights_files_before_1_3(art):
    os.rename(art / GOLDEN, art / "g2.safetensors")

    def fix(m):
        to_1_2(m)
        m["files"][0] = {"path": "g2.safetensors", "role": "weights"}
    edit(art, fix)
    rejects(art, "schema.type", "role 'weights'", "format 1.3", "this file is 1.2", "files[1]")


def test_rejects_two_golden_files(art):
    def fix(m):
        m["files"][1]["role"] = "golden"
    edit(art, fix)
    rejects(art, "schema.type", "a second file of role 'golden'", "files[1]")


def test_rejects_bad_digest(art):
    edit(art, lambda m: m.__setitem__("digest", "md5:abc"))
    rejects(art, "schema.type", "digest")


def test_rejects_bad_sha256_field(art):
    edit(art, lambda m: m["tensors"][2].__setitem__("sha256", "A" * 64))
    rejects(art, "schema.type", "tensors[2].sha256")


def test_rejects_unsorted_tensor_table(art):
    def swap(m):
        m["tensors"][2], m["tensors"][3] = m["tensors"][3], m["tensors"][2]
    edit(art, swap)
    rejects(art, "schema.type", "not sorted", "lin.bias")


# ------------------------------------------------------------------------------------------------ values and metadata

@pytest.mark.parametrize("value,needle", [
    ({"t": "tensorish", "v": "x"}, "tensorish"),
    ({"t": ["list"], "v": 1}, "unknown Value kind"),
    ({"t": "list", "v": [], "x": 1}, "exactly the keys"),
    ({"t": "list"}, "exactly the keys"),
    ({"t": "complex", "v": [1, 2]}, "complex"),
    ({"t": "slice", "v": [None, None]}, "slice"),
    ({"t": "ellipsis", "v": 0}, "ellipsis"),
    ({"t": "device", "v": "cuda:0; rm"}, "device"),
    ({"t": "memory_format", "v": "fancy"}, "memory format"),
    ({"t": "layout", "v": "tiled"}, "layout"),
    ({"t": "dict", "v": [[1.5, 1]]}, "dict key"),
    ({"t": "dict", "v": [[2**64 - 1, 1]]}, "outside int64"),  # found at the schema step (design L)
    (2**64 - 1, "int64"),
    (b"bytes", "bin"),
], ids=["unknown-tag", "unhashable-tag", "extra-key", "missing-v", "complex-ints", "short-slice", "ellipsis-payload",
        "bad-device", "bad-memory-format", "bad-layout", "float-dict-key", "uint64-dict-key", "uint64", "bin"])
def test_rejects_malformed_value(art, value, needle):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("extra", value))
    rejects(art, "schema.type", needle, "nodes[2].kwargs.extra")


def test_rejects_value_with_unknown_dtype_code(art):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("dtype", {"t": "dtype", "v": "F31"}))
    rejects(art, "tensor.dtype", "F31", "kwargs.dtype")


def test_rejects_value_nested_70_deep(art):
    value = None
    for _ in range(70):
        value = {"t": "list", "v": [value]}
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("deep", value))
    rejects(art, "schema.depth", "64", "kwargs.deep")


def test_accepts_value_nested_64_deep(art):
    value = None
    for _ in range(64):
        value = {"t": "tuple", "v": [value]}
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("deep", value))
    decoded = fxlower.load(art).graphs[0].node("relu").kwargs["deep"]
    for _ in range(64):
        assert type(decoded) is tuple and len(decoded) == 1
        decoded = decoded[0]
    assert decoded is None


def test_rejects_metadata_nested_70_deep(art):
    meta = {"t": "int"}
    for _ in range(70):
        meta = {"t": "tuple", "v": [meta]}
    edit(art, lambda m: node(m, "relu").__setitem__("meta", meta))
    rejects(art, "schema.depth", "nodes[2].meta")


def test_rejects_duplicate_key_in_dict_value(art):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("d", {"t": "dict", "v": [["a", 1], ["a", 2]]}))
    rejects(art, "manifest.duplicate_key", "'a'", "kwargs.d")


def test_rejects_duplicate_int_key_in_dict_value(art):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("d", {"t": "dict", "v": [[3, 1], [3, 2]]}))
    rejects(art, "manifest.duplicate_key", "3", "kwargs.d")


@pytest.mark.parametrize("meta,code", [
    ({"t": "tensor", "dtype": "F31", "shape": [1]}, "tensor.dtype"),
    ({"t": "tensor", "dtype": ["F32"], "shape": [1]}, "schema.type"),
    ({"t": "tensor", "dtype": "F32", "shape": [-1]}, "tensor.shape"),
    ({"t": "tensor", "dtype": "F32"}, "schema.type"),
    ({"t": "widget"}, "schema.type"),
    ({"t": "int", "v": 1}, "schema.type"),
    ({"t": "dict", "v": [[True, {"t": "int"}]]}, "schema.type"),
], ids=["unknown-dtype", "unhashable-dtype", "negative-dim", "no-shape", "unknown-kind", "leaf-with-v", "bool-key"])
def test_rejects_malformed_metadata(art, meta, code):
    edit(art, lambda m: node(m, "relu").__setitem__("meta", meta))
    rejects(art, code, "nodes[2].meta")


def test_metadata_overflow_uses_the_dtype_item_size(art):
    # 2**61 bytes of U8 fits int64; the same count of F64 does not.
    edit(art, lambda m: node(m, "relu").__setitem__("meta", {"t": "tensor", "dtype": "U8", "shape": [2**61]}))
    fxlower.load(art)
    edit(art, lambda m: node(m, "relu").__setitem__("meta", {"t": "tensor", "dtype": "F64", "shape": [2**61]}))
    rejects(art, "tensor.shape", "nodes[2].meta")


# ------------------------------------------------------------------------------------------------ names

def test_rejects_empty_node_name(art):
    edit(art, lambda m: node(m, "relu").__setitem__("name", ""))
    rejects(art, "schema.name", "0 bytes", "nodes[2].name")


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\n", "\x7f"])
def test_rejects_control_character_in_node_name(art, char):
    edit(art, lambda m: node(m, "relu").__setitem__("name", f"re{char}lu"))
    rejects(art, "schema.name", "control character", "nodes[2].name")


def test_rejects_node_name_over_1024_bytes(art):
    edit(art, lambda m: node(m, "relu").__setitem__("name", "\u00e9" * 513))  # 513 chars, 1026 bytes
    rejects(art, "schema.name", "1026 bytes", "nodes[2].name")


def test_rejects_tensor_name_over_1024_bytes(art):
    edit(art, lambda m: m["tensors"][4].__setitem__("name", "s" + "x" * 1024))
    rejects(art, "schema.name", "1025 bytes", "tensors[4].name")


def _rename_node(m: dict, old: str, new: str) -> None:
    """Rename a root node everywhere it is named, so that only the name itself can be at fault."""
    ref = {"t": "node", "v": old}
    for n in m["graphs"][0]["nodes"]:
        if n["name"] == old:
            n["name"] = new
        n["args"] = [{"t": "node", "v": new} if a == ref else a for a in n["args"]]
        n["inputs"] = [new if i == old else i for i in n["inputs"]]
        n["users"] = [new if u == old else u for u in n["users"]]


def test_accepts_node_name_of_exactly_1024_bytes(art):
    edit(art, lambda m: _rename_node(m, "relu", "\u00e9" * 512))
    a = fxlower.load(art)
    gm = a.to_graph_module()
    assert torch.equal(gm(*a.golden_inputs()), a.golden_outputs())


def test_rejects_node_name_of_1025_bytes_even_when_renamed_everywhere(art):
    edit(art, lambda m: _rename_node(m, "relu", "r" + "\u00e9" * 512))
    rejects(art, "schema.name", "1025 bytes")


def test_rejects_duplicate_node_name(art):
    edit(art, lambda m: node(m, "relu").__setitem__("name", "lin"))
    rejects(art, "schema.name", "'lin'", "appears twice")


def test_rejects_duplicate_tensor_name(art):
    def dup(m):
        m["tensors"].insert(3, dict(m["tensors"][2]))
    edit(art, dup)
    rejects(art, "schema.name", "lin.bias", "tensors[3]")


def test_rejects_named_root_graph(art):
    edit(art, lambda m: m["graphs"][0].__setitem__("name", "root"))
    rejects(art, "schema.name", "graphs[0].name")


def test_rejects_empty_nested_graph_name(art):
    edit(art, lambda m: m["graphs"].append(nested_graph("", None)))
    rejects(art, "schema.name", "graphs[1].name")


def test_rejects_keyword_that_is_not_an_identifier(art):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("a-b", 1))
    rejects(art, "schema.name", "'a-b'", "nodes[2].kwargs")


def test_rejects_bad_lowering_attribute_name(art):
    edit(art, lambda m: node(m, "lin")["lowering"]["attrs"].__setitem__("", 1))
    rejects(art, "schema.name", "lowering.attrs")


# ------------------------------------------------------------------------------------------------ graphs

def test_rejects_unknown_op(art):
    edit(art, lambda m: node(m, "relu").__setitem__("op", "call_python"))
    rejects(art, "graph.op", "call_python", "nodes[2].op")


@pytest.mark.parametrize("target", ["relu", "torch..relu", "torch.relu()", "torch.re lu", ".relu", "torch.2x"])
def test_rejects_call_function_target_not_dotted_identifiers(art, target):
    edit(art, lambda m: node(m, "relu").__setitem__("target", target))
    rejects(art, "graph.target", "nodes[2].target")


@pytest.mark.parametrize("target", ["__class__", "_private", "sum()", "1sum", ""])
def test_rejects_call_method_target_not_public(art, target):
    edit(art, lambda m: node(m, "sum_1").__setitem__("target", target))
    rejects(art, "graph.target", "nodes[5].target")


def test_rejects_getattr_with_private_attribute(art):
    def bad(m):
        n = node(m, "relu")
        n["target"] = "builtins.getattr"
        n["args"] = [{"t": "node", "v": "lin"}, "_private"]
    edit(art, bad)
    rejects(art, "graph.target", "builtins.getattr", "nodes[2]")


def test_rejects_getattr_with_non_string_attribute(art):
    def bad(m):
        n = node(m, "relu")
        n["target"] = "builtins.getattr"
        n["args"] = [{"t": "node", "v": "lin"}, 3]
    edit(art, bad)
    rejects(art, "graph.target", "builtins.getattr")


@pytest.mark.parametrize("target", ["__dict__", "a.__class__", "a..b", 'a"b', "a\\b", "a\tb", "", "a.class",
                                    "None"])
def test_rejects_get_attr_target_that_is_not_an_attribute_path(art, target):
    edit(art, lambda m: node(m, "scale").__setitem__("target", target))
    rejects(art, "graph.target", "nodes[3].target")


def test_rejects_get_attr_to_missing_tensor(art):
    edit(art, lambda m: node(m, "scale").__setitem__("target", "shift"))
    rejects(art, "tensor.reference", "'shift'", "nodes[3].target")


def test_rejects_get_attr_to_golden_tensor(art):
    edit(art, lambda m: node(m, "scale").__setitem__("target", "golden"))  # 'golden' itself is not a tensor
    rejects(art, "tensor.reference", "'golden'")


def test_rejects_placeholder_target_that_is_not_an_identifier(art):
    edit(art, lambda m: node(m, "x").__setitem__("target", "x; import os"))
    rejects(art, "graph.target", "nodes[0].target")


def test_rejects_output_target_other_than_output(art):
    edit(art, lambda m: node(m, "output").__setitem__("target", "result"))
    rejects(art, "graph.target", "nodes[6].target")


def test_rejects_node_reference_to_a_later_node(art):
    def bad(m):
        node(m, "relu")["args"] = [{"t": "node", "v": "mul"}]
    edit(art, bad)
    rejects(art, "graph.reference", "'mul'", "nodes[2].args[0]")


def test_rejects_node_reference_to_itself(art):
    edit(art, lambda m: node(m, "relu").__setitem__("args", [{"t": "node", "v": "relu"}]))
    rejects(art, "graph.reference", "'relu'")


def test_rejects_node_reference_to_unknown_node(art):
    edit(art, lambda m: node(m, "relu").__setitem__("args", [{"t": "node", "v": "ghost"}]))
    rejects(art, "graph.reference", "'ghost'")


def test_rejects_tensor_value_in_node_args(art):
    edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("w", {"t": "tensor", "v": "lin.weight"}))
    rejects(art, "tensor.reference", "kwargs.w")


def test_rejects_inputs_inconsistent_with_args(art):
    edit(art, lambda m: node(m, "mul").__setitem__("inputs", ["scale", "relu"]))
    rejects(art, "graph.structure", "nodes[4].inputs")


def test_rejects_users_inconsistent_with_inputs(art):
    edit(art, lambda m: node(m, "lin").__setitem__("users", ["relu", "mul"]))
    rejects(art, "graph.structure", "'lin'", "nodes[1].users")


def test_rejects_graph_without_output_node(art):
    edit(art, lambda m: m["graphs"][0]["nodes"].pop())
    rejects(art, "graph.output", "no output node", "graphs[0]")


def test_rejects_two_output_nodes(art):
    def two(m):
        out = dict(node(m, "output"))
        out["name"] = "output2"
        m["graphs"][0]["nodes"].append(out)
    edit(art, two)
    rejects(art, "graph.output", "follows the output node", "nodes[7]")


def test_rejects_output_node_with_two_args(art):
    edit(art, lambda m: node(m, "output")["args"].append(None))
    rejects(art, "graph.output", "2 args")


def test_rejects_placeholder_with_two_args(art):
    edit(art, lambda m: node(m, "x").__setitem__("args", [1, 2]))
    rejects(art, "graph.structure", "placeholder", "nodes[0]")


def test_rejects_call_method_without_self(art):
    def bad(m):
        n = node(m, "sum_1")
        n["args"], n["inputs"] = [], []
        node(m, "mul")["users"] = []
    edit(art, bad)
    rejects(art, "graph.structure", "args[0]", "nodes[5]")


@pytest.mark.parametrize("index", [1, 5, 0, -1])
def test_rejects_nested_graph_index_out_of_range(art, index):
    def bad(m):
        n = node(m, "lin")
        n["lowering"], n["graph"] = None, index
    edit(art, bad)
    rejects(art, "graph.structure", f"'graph' {index}", "nodes[1].graph")


def test_rejects_graph_index_on_non_call_module_node(art):
    def bad(m):
        m["graphs"].append(nested_graph("sub", None))
        node(m, "relu")["graph"] = 1
    edit(art, bad)
    rejects(art, "graph.structure", "nodes[2].graph")


def test_accepts_nested_graphs_without_cycle(art):
    edit(art, lambda m: m["graphs"].extend([nested_graph("s1", 2), nested_graph("s2", None)]))
    a = fxlower.load(art)
    assert [g.name for g in a.graphs] == ["", "s1", "s2"]
    assert a.graphs[1].node("c").graph == 2 and a.graphs[2].node("output").inputs == ("a",)


def test_rejects_graph_cycle(art):
    edit(art, lambda m: m["graphs"].extend([nested_graph("s1", 2), nested_graph("s2", 1)]))
    rejects(art, "graph.structure", "cycle")


def test_rejects_graph_calling_itself(art):
    edit(art, lambda m: m["graphs"].append(nested_graph("s1", 1)))
    rejects(art, "graph.structure", "cycle")


def test_rejects_call_module_without_lowering(art):
    edit(art, lambda m: node(m, "lin").__setitem__("lowering", None))
    rejects(art, "graph.structure", "lowering", "nodes[1]")


def test_rejects_lowering_on_call_function_node(art):
    edit(art, lambda m: node(m, "relu").__setitem__("lowering", dict(node(m, "lin")["lowering"])))
    rejects(art, "graph.structure", "lowering", "nodes[2]")


def test_rejects_lowering_attribute_naming_missing_tensor(art):
    edit(art, lambda m: node(m, "lin")["lowering"]["attrs"].__setitem__("weight", {"t": "tensor", "v": "lin.w"}))
    rejects(art, "tensor.reference", "'lin.w'", "lowering.attrs.weight")


def test_rejects_lowering_attribute_naming_golden_tensor(art):
    edit(art, lambda m: node(m, "lin")["lowering"]["attrs"].__setitem__(
        "weight", {"t": "tensor", "v": "golden/outputs/0"}))
    rejects(art, "tensor.reference", "golden/outputs/0", "weights")


def test_rejects_empty_graph_list(art):
    edit(art, lambda m: m.__setitem__("graphs", []))
    rejects(art, "graph.structure", "graphs is empty")


def test_rejects_signature_inputs_differing_from_placeholders(art):
    edit(art, lambda m: m["signature"].__setitem__("inputs", ["y"]))
    rejects(art, "graph.structure", "signature.inputs")


def test_rejects_signature_output_differing_from_output_node(art):
    edit(art, lambda m: m["signature"].__setitem__("output", {"t": "node", "v": "mul"}))
    rejects(art, "graph.output", "signature.output")


def test_rejects_signature_output_of_other_type(art):
    # 1 == True and 1 == 1.0 in Python; as MessagePack values they differ.
    def bad(m):
        node(m, "output")["args"] = [{"t": "tuple", "v": [{"t": "node", "v": "sum_1"}, 1]}]
        m["signature"]["output"] = {"t": "tuple", "v": [{"t": "node", "v": "sum_1"}, True]}
    edit(art, bad)
    rejects(art, "graph.output", "signature.output")


def test_accepts_nan_in_signature_output(art):
    def nan(m):
        value = {"t": "tuple", "v": [{"t": "node", "v": "sum_1"}, float("nan"), -0.0]}
        node(m, "output")["args"] = [value]
        m["signature"]["output"] = {"v": value["v"], "t": "tuple"}  # key order does not matter
    edit(art, nan)
    a = fxlower.load(art)
    ref, nan_value, zero = a.graphs[0].node("output").args[0]
    assert ref.name == "sum_1"
    assert f64_bits(nan_value) == bytes.fromhex("000000000000f87f")  # the quiet NaN msgpack-python writes
    assert f64_bits(zero) == bytes.fromhex("0000000000000080")  # -0.0, not 0.0
    out = a.manifest.signature.output["v"]
    assert (f64_bits(out[1]), f64_bits(out[2])) == (f64_bits(nan_value), f64_bits(zero))


def test_rejects_signature_output_with_zero_of_other_sign(art):
    def bad(m):
        node(m, "output")["args"] = [{"t": "tuple", "v": [{"t": "node", "v": "sum_1"}, 0.0]}]
        m["signature"]["output"] = {"t": "tuple", "v": [{"t": "node", "v": "sum_1"}, -0.0]}
    edit(art, bad)
    rejects(art, "graph.output", "signature.output")


def test_rejects_signature_output_naming_unknown_node(art):
    edit(art, lambda m: m["signature"].__setitem__("output", {"t": "node", "v": "ghost"}))
    rejects(art, "graph.reference", "'ghost'", "signature.output")


# ------------------------------------------------------------------------------------------------ tensor table

def test_rejects_unknown_dtype_code(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("dtype", "F31"))
    rejects(art, "tensor.dtype", "F31", "tensors[4].dtype")


def test_rejects_value_only_dtype_as_storage(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("dtype", "C64"))
    rejects(art, "tensor.dtype", "C64")


def test_rejects_negative_dimension(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("shape", [-3]))
    rejects(art, "tensor.shape", "-3", "tensors[4].shape")


def test_rejects_rank_65(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("shape", [1] * 65))
    rejects(art, "tensor.shape", "rank 65", "tensors[4].shape")


def test_accepts_rank_64_up_to_the_file_check(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("shape", [1] * 63 + [3]))
    rejects(art, "tensor.mismatch", "'scale'")  # the shape itself passed; the file says [3]


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**31, 2**31, 2**31], [2**60, 8]])
def test_rejects_shape_whose_byte_size_overflows(art, shape):
    edit(art, lambda m: tensor(m, "scale").__setitem__("shape", shape))
    rejects(art, "tensor.shape", "tensors[4].shape")


def test_rejects_tensor_in_unlisted_file(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("file", "other.safetensors"))
    rejects(art, "tensor.reference", "other.safetensors", "tensors[4].file")


def test_rejects_tensor_key_missing_from_file(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("key", "scale2"))
    rejects(art, "tensor.missing", "'scale'", "'scale2'", WEIGHTS)


def test_rejects_manifest_dtype_differing_from_header(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("dtype", "I32"))
    rejects(art, "tensor.mismatch", "'scale'", "I32", "F32", WEIGHTS)


def test_rejects_manifest_shape_differing_from_header(art):
    edit(art, lambda m: tensor(m, "scale").__setitem__("shape", [1, 3]))
    rejects(art, "tensor.mismatch", "'scale'", WEIGHTS)


def _alias(m, **changes):
    alias = dict(tensor(m, "scale"), name="scale_tied", **changes)
    m["tensors"].append(alias)
    m["tensors"].sort(key=lambda t: t["name"])


def test_accepts_alias_entries(art):
    edit(art, _alias)
    a = fxlower.load(art, verify=True)
    assert torch.equal(a.tensor("scale_tied"), torch.full((3,), 0.5))
    assert bytes(a.stored_bytes("scale_tied")) == bytes(a.stored_bytes("scale")) == struct.pack("<3f", 0.5, 0.5, 0.5)


def test_rejects_alias_entries_that_disagree(art):
    edit(art, lambda m: _alias(m, sha256="0" * 64))
    rejects(art, "tensor.mismatch", "'scale'", "'scale_tied'")


def test_rejects_alias_entries_of_other_shape(art):
    edit(art, lambda m: _alias(m, shape=[1, 3]))
    rejects(art, "tensor.mismatch", "'scale_tied'")


def test_hash_mismatch_is_found_only_on_verify(art):
    header, data = read_st(art / WEIGHTS)
    last = max(header, key=lambda k: header[k]["data_offsets"][1])
    raw = bytearray((art / WEIGHTS).read_bytes())
    raw[-1] ^= 0x01
    (art / WEIGHTS).write_bytes(bytes(raw))
    fxlower.load(art)  # hashes are not checked unless asked
    rejects(art, "tensor.hash", f"'{last}'", WEIGHTS, verify=True)


def test_rejects_golden_referencing_a_weights_tensor(art):
    edit(art, lambda m: m["golden"].__setitem__("outputs", {"t": "tensor", "v": "lin.weight"}))
    rejects(art, "tensor.reference", "lin.weight", "golden.outputs")


def test_rejects_golden_file_of_weights_role(art):
    edit(art, lambda m: m["golden"].__setitem__("file", WEIGHTS))
    rejects(art, "tensor.reference", WEIGHTS, "golden.file")


def test_rejects_unknown_golden_mode(art):
    edit(art, lambda m: m["golden"].__setitem__("mode", "everything"))
    rejects(art, "schema.type", "everything", "golden.mode")


def test_rejects_golden_node_that_is_not_a_root_node(art):
    edit(art, lambda m: m["golden"]["nodes"].__setitem__("ghost", None))
    rejects(art, "graph.reference", "'ghost'", "golden.nodes")


def test_rejects_node_reference_in_golden_inputs(art):
    edit(art, lambda m: m["golden"]["inputs"].append({"t": "node", "v": "x"}))
    rejects(art, "graph.reference", "golden.inputs[1]")


@pytest.mark.parametrize("tol", [{"rtol": -1.0, "atol": 0.0}, {"rtol": float("nan"), "atol": 0.0},
                                 {"rtol": 0.0, "atol": float("inf")}])
def test_rejects_bad_tolerance(art, tol):
    edit(art, lambda m: m["golden"]["tolerances"].__setitem__("F32", tol))
    rejects(art, "schema.type", "F32", "golden.tolerances")


def test_rejects_tolerance_for_unknown_dtype(art):
    edit(art, lambda m: m["golden"]["tolerances"].__setitem__("F31", {"rtol": 0.0, "atol": 0.0}))
    rejects(art, "tensor.dtype", "F31", "golden.tolerances")


# ------------------------------------------------------------------------------------------------ safetensors

def test_rejects_tensor_file_shorter_than_8_bytes(art):
    (art / WEIGHTS).write_bytes(b"\x00" * 7)
    rejects(art, "safetensors.header", "7 bytes", WEIGHTS)


def test_rejects_header_length_past_end_of_file(art):
    raw = (art / WEIGHTS).read_bytes()
    (art / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    rejects(art, "safetensors.header", "header length", WEIGHTS)


def test_rejects_header_length_over_100mb_before_allocating(art):
    with open(art / WEIGHTS, "wb") as f:
        f.write(struct.pack("<Q", 100_000_001))
    os.truncate(art / WEIGHTS, 100_000_001 + 8 + 64)  # sparse: large enough for the length, nothing allocated
    rejects(art, "safetensors.header", "100000000", WEIGHTS)


def test_rejects_leading_whitespace_in_header(art):
    header, data = read_st(art / WEIGHTS)
    (art / WEIGHTS).write_bytes(st_bytes(b" " + json.dumps(header).encode(), data))
    rejects(art, "safetensors.header", "'{'", WEIGHTS)


def test_rejects_non_object_header(art):
    _, data = read_st(art / WEIGHTS)
    (art / WEIGHTS).write_bytes(st_bytes(b"[]", data))
    rejects(art, "safetensors.header", WEIGHTS)


def test_rejects_header_that_is_two_json_objects(art):
    header, data = read_st(art / WEIGHTS)
    (art / WEIGHTS).write_bytes(st_bytes(json.dumps(header).encode() + b"{}", data))
    rejects(art, "safetensors.header", WEIGHTS)


def test_rejects_nul_padded_header(art):
    header, data = read_st(art / WEIGHTS)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b"\x00" * ((-(8 + len(raw))) % 8 or 8)
    (art / WEIGHTS).write_bytes(st_bytes(raw, data, align=False))
    rejects(art, "safetensors.header", WEIGHTS)


def test_rejects_duplicate_json_key(art):
    header, data = read_st(art / WEIGHTS)
    body = json.dumps(header, separators=(",", ":"))
    entry = json.dumps(header["scale"], separators=(",", ":"))
    (art / WEIGHTS).write_bytes(st_bytes(f'{body[:-1]},"scale":{entry}}}'.encode(), data))  # identical duplicate
    rejects(art, "safetensors.header", "'scale'", "twice", WEIGHTS)


def test_rejects_nan_constant_in_header(art):
    header, data = read_st(art / WEIGHTS)
    body = json.dumps(header, separators=(",", ":"))
    (art / WEIGHTS).write_bytes(st_bytes(('{"__metadata__":{"a":NaN},' + body[1:]).encode(), data))
    rejects(art, "safetensors.header", "NaN", WEIGHTS)


def test_rejects_invalid_utf8_in_header(art):
    header, data = read_st(art / WEIGHTS)
    body = json.dumps(header, separators=(",", ":")).encode()
    (art / WEIGHTS).write_bytes(st_bytes(b'{"__metadata__":{"a":"\xff"},' + body[1:], data))
    rejects(art, "safetensors.header", "UTF-8", WEIGHTS)


def test_rejects_header_nested_deeper_than_128(art):
    header, data = read_st(art / WEIGHTS)
    body = json.dumps(header, separators=(",", ":")).encode()
    deep = b"[" * 130 + b"]" * 130
    (art / WEIGHTS).write_bytes(st_bytes(b'{"__metadata__":' + deep + b"," + body[1:], data))
    rejects(art, "safetensors.header", "128", WEIGHTS)


def test_rejects_metadata_that_is_not_str_to_str(art):
    header, data = read_st(art / WEIGHTS)
    (art / WEIGHTS).write_bytes(st_bytes({"__metadata__": {"a": 1}, **header}, data))
    rejects(art, "safetensors.header", "__metadata__", WEIGHTS)


def test_accepts_string_metadata(art):
    header, data = read_st(art / WEIGHTS)
    (art / WEIGHTS).write_bytes(st_bytes({"__metadata__": {"format": "pt"}, **header}, data))
    works_as_exported(fxlower.load(art, verify=True))


def test_rejects_extra_field_in_tensor_info(art):
    header, data = read_st(art / WEIGHTS)
    header["scale"]["note"] = "x"
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    rejects(art, "safetensors.header", "'scale'", WEIGHTS)


def test_rejects_unknown_dtype_in_header(art):
    header, data = read_st(art / WEIGHTS)
    header["scale"]["dtype"] = "F31"
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    # docs/format.md section 4: any other code is tensor.dtype (section 5 would say safetensors.header).
    rejects(art, "tensor.dtype", "F31", "'scale'", WEIGHTS)


def test_rejects_bad_key_in_header(art):
    header, data = read_st(art / WEIGHTS)
    header["bad\x01key"] = header.pop("scale")
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    rejects(art, "schema.name", "control character", WEIGHTS)


def test_rejects_reversed_data_offsets(art):
    header, data = read_st(art / WEIGHTS)
    b, e = header["scale"]["data_offsets"]
    header["scale"]["data_offsets"] = [e, b]
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    rejects(art, "safetensors.header", "'scale'", "data_offsets", WEIGHTS)


def test_rejects_gap_between_tensors(art):
    header, data = read_st(art / WEIGHTS)
    b, e = header["scale"]["data_offsets"]  # the last tensor: move it 4 bytes further
    header["scale"]["data_offsets"] = [b + 4, e + 4]
    (art / WEIGHTS).write_bytes(st_bytes(header, data[:b] + b"\x00" * 4 + data[b:]))
    rejects(art, "safetensors.layout", "'scale'", "gap or overlap", WEIGHTS)


def test_rejects_overlapping_tensors(art):
    header, data = read_st(art / WEIGHTS)
    b, e = header["scale"]["data_offsets"]
    header["scale"]["data_offsets"] = [b - 4, e - 4]
    (art / WEIGHTS).write_bytes(st_bytes(header, data[:-4]))
    rejects(art, "safetensors.layout", "'scale'", "gap or overlap", WEIGHTS)


def test_rejects_tensors_not_starting_at_zero(art):
    header, data = read_st(art / WEIGHTS)
    for info in header.values():
        info["data_offsets"] = [x + 8 for x in info["data_offsets"]]
    (art / WEIGHTS).write_bytes(st_bytes(header, b"\x00" * 8 + data))
    rejects(art, "safetensors.layout", "gap or overlap", WEIGHTS)


def test_rejects_trailing_bytes_after_tensor_data(art):
    with open(art / WEIGHTS, "ab") as f:
        f.write(b"\x00" * 8)
    rejects(art, "safetensors.layout", "trailing", WEIGHTS)


def test_rejects_truncated_tensor_data(art):
    raw = (art / WEIGHTS).read_bytes()
    (art / WEIGHTS).write_bytes(raw[:-4])
    rejects(art, "safetensors.layout", "truncated", WEIGHTS)


def test_rejects_offset_past_end_of_file(art):
    header, data = read_st(art / WEIGHTS)
    b, _ = header["scale"]["data_offsets"]
    header["scale"]["shape"] = [5]
    header["scale"]["data_offsets"] = [b, b + 20]  # consistent with the shape, 8 bytes past the end
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    rejects(art, "safetensors.layout", "truncated", WEIGHTS)


def test_rejects_byte_size_differing_from_shape(art):
    header, data = read_st(art / WEIGHTS)
    header["scale"]["shape"] = [2]
    (art / WEIGHTS).write_bytes(st_bytes(header, data))
    rejects(art, "safetensors.layout", "'scale'", WEIGHTS)


def test_rejects_misaligned_data_section_start(art):
    header, data = read_st(art / WEIGHTS)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-(8 + len(raw))) % 8 + 4)  # 8 + N is 4 modulo 8
    (art / WEIGHTS).write_bytes(st_bytes(raw, data, align=False))
    rejects(art, "safetensors.layout", "multiple of 8", WEIGHTS)


def test_rejects_tensor_misaligned_to_its_item_size(art):
    header, data = read_st(art / WEIGHTS)
    for info in header.values():
        info["data_offsets"] = [x + 2 for x in info["data_offsets"]]
    header["pad"] = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}
    (art / WEIGHTS).write_bytes(st_bytes(header, b"\x00\x00" + data))
    rejects(art, "safetensors.layout", "not aligned", WEIGHTS)


def test_rejects_unreferenced_key_in_file(art):
    header, data = read_st(art / WEIGHTS)
    header["extra"] = {"dtype": "U8", "shape": [8], "data_offsets": [len(data), len(data) + 8]}
    (art / WEIGHTS).write_bytes(st_bytes(header, data + bytes(range(8))))
    rejects(art, "safetensors.unreferenced", "'extra'", WEIGHTS)


# ------------------------------------------------------------------------------------------------ targets

def retarget_function(m: dict, n: dict, target: str) -> None:
    """Point call_function node ``n`` at ``target``, moving its entry of the manifest's ``functions`` along."""
    m["functions"][target] = m["functions"].pop(n["target"])
    n["target"] = target


def _retarget_wrapped(dst: Path, name: str) -> None:
    def fix(m):
        for n in m["graphs"][0]["nodes"]:
            if n["op"] == "call_function" and n["target"].endswith("fxl_test_double"):
                retarget_function(m, n, name)
                return
        raise AssertionError("no call of fxl_test_double in the export")
    edit(dst, fix)


def test_unlisted_call_function_target_fails_in_to_graph_module(wrapped_base, tmp_path):
    dst = tmp_path / "w.fxl"
    shutil.copytree(wrapped_base, dst)
    name = f"fxlower_tests.double_{uuid.uuid4().hex}"
    _retarget_wrapped(dst, name)
    a = fxlower.load(dst, verify=True)  # validation does not resolve targets
    with pytest.raises(UnsupportedTargetError) as info:
        a.to_graph_module()
    assert name in str(info.value)
    assert "register_function" in str(info.value)


def test_registered_call_function_target_loads(wrapped_base, tmp_path):
    dst = tmp_path / "w.fxl"
    shutil.copytree(wrapped_base, dst)
    name = f"fxlower_tests.double_{uuid.uuid4().hex}"
    _retarget_wrapped(dst, name)
    fxlower.register_function(fxl_test_double, name=name)
    a = fxlower.load(dst, verify=True)
    gm = a.to_graph_module()
    assert torch.equal(gm(*a.golden_inputs()), a.golden_outputs())


def test_unknown_module_type_fails_in_to_graph_module(art):
    def evil(m):
        node(m, "lin")["lowering"]["module_type"] = "evil.Module"
        m["modules"]["evil.Module"] = m["modules"]["torch.nn.Linear"]
    edit(art, evil)
    a = fxlower.load(art)
    with pytest.raises(UnsupportedTargetError, match="evil.Module"):
        a.to_graph_module()


@pytest.mark.parametrize("target", ["os.system", "smtplib.SMTP", "fxlower_no_such_module.run", "builtins.eval",
                                    "builtins.__import__", "torch.load"])
def test_load_never_imports_or_resolves_a_module_named_in_the_file(art, base, target):
    fxlower.load(base).to_graph_module()  # warm up whatever torch.fx imports lazily
    if target.split(".")[0] not in ("os", "builtins", "torch"):
        assert target.split(".")[0] not in sys.modules
    edit(art, lambda m: retarget_function(m, node(m, "relu"), target))
    before = set(sys.modules)
    a = fxlower.load(art, verify=True)  # validation passes: the name is well-formed
    with pytest.raises(UnsupportedTargetError) as info:
        a.to_graph_module()
    assert target in str(info.value)
    assert set(sys.modules) == before


# ------------------------------------------------------------------------------------------------ names torch.fx cannot generate code for

@pytest.mark.parametrize("kw", ["lambda", "None", "class"])
def test_rejects_python_keyword_as_keyword_argument(art, kw):
    edit(art, lambda m: node(m, "sum_1")["kwargs"].__setitem__(kw, 1))
    rejects(art, "schema.name", f"'{kw}'", "nodes[5].kwargs")


@pytest.mark.parametrize("target", ["class", "*def", "**None"])
def test_rejects_python_keyword_as_placeholder_target(art, target):
    edit(art, lambda m: node(m, "x").__setitem__("target", target))
    rejects(art, "graph.target", "nodes[0].target")


@pytest.mark.parametrize("target", ["forward", "graph", "training", "code"])
def test_module_target_shadowing_a_graph_module_attribute_fails_in_to_graph_module(art, target):
    edit(art, lambda m: node(m, "lin").__setitem__("target", target))
    a = fxlower.load(art)  # a valid dotted path for the format
    with pytest.raises(UnsupportedTargetError, match=f"'{target}'"):
        a.to_graph_module()


@pytest.mark.parametrize("attr,value", [("forward", "torch.relu"), ("__class__", "x"), ("__dict__", 1),
                                        ("training", True), ("_parameters", None)])
def test_lowering_attribute_replacing_module_state_fails_in_to_graph_module(art, attr, value):
    def add(m):
        node(m, "lin")["lowering"]["attrs"][attr] = value
        declared = {str: "str", int: "int", bool: "bool", type(None): "none"}[type(value)]
        m["modules"]["torch.nn.Linear"]["attrs"].append({"name": attr, "type": declared, "doc": ""})
    edit(art, add)
    a = fxlower.load(art)  # declared, so valid for the format
    with pytest.raises(UnsupportedTargetError, match=f"'{attr}'"):
        a.to_graph_module()


# ------------------------------------------------------------------------------------------------ agreement with C++
# Cases where the Python loader once disagreed with the spec (and the C++ reader): regexes that let a trailing
# newline through, a header followed by other whitespace, device strings judged by the installed torch, and a
# load path whose parent is a file.

def test_rejects_a_method_target_with_a_trailing_newline(art):
    edit(art, lambda m: node(m, "sum_1").update(target="sum\n"))
    rejects(art, "graph.target", "graphs[0].nodes[5].target", "public method")


def test_rejects_a_sha256_with_a_trailing_newline(art):
    edit(art, lambda m: tensor(m, "lin.weight").update(sha256=tensor(m, "lin.weight")["sha256"][:63] + "\n"))
    rejects(art, "schema.type", "tensors[", "sha256")


def test_rejects_a_safetensors_header_followed_by_a_newline(art):
    header, data = read_st(art / WEIGHTS)
    raw = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    (art / WEIGHTS).write_bytes(st_bytes(raw, data))
    rejects(art, "safetensors.header", WEIGHTS, "followed by spaces only")


@pytest.mark.parametrize("device", ["cuda:007", "npu_custom:1", "cpu:", "CUDA"])
def test_rejects_device_strings_outside_the_spec_whatever_torch_knows(art, device):
    edit(art, lambda m: node(m, "sum_1")["args"].append({"t": "device", "v": device}))
    rejects(art, "schema.type", "graphs[0].nodes[5].args[2]", "not a device string")


@pytest.mark.parametrize("device", ["cuda:0", "cuda:12", "privateuseone", "mps"])
def test_accepts_device_strings_of_the_spec(art, device):
    edit(art, lambda m: node(m, "sum_1")["kwargs"].update(dtype={"t": "device", "v": device}))
    assert fxlower.load(art).graphs[0].node("sum_1").kwargs["dtype"] == torch.device(device)


def test_a_path_below_a_regular_file_is_a_missing_artifact(tmp_path):
    (tmp_path / "file").write_text("x")
    rejects(tmp_path / "file" / "a.fxl", "artifact.missing", "does not exist")


@pytest.mark.parametrize("path", ["weights.", "NUL", "con.safetensors", "Lpt3.bin", "aux"])
def test_rejects_member_paths_that_would_not_survive_windows(art, path):
    (art / WEIGHTS).rename(art / path)

    def fix(m):
        m["files"] = [dict(f, path=path) if f["path"] == WEIGHTS else f for f in m["files"]]
        for t in m["tensors"]:
            if t["file"] == WEIGHTS:
                t["file"] = path
    edit(art, fix)
    rejects(art, "path.invalid", "files[", "Windows")


# ------------------------------------------------------------------------------------------------ format 1.1
# Tensor state (design C), declared lowering attributes (E), overloads (F), private kwargs (F), names (G),
# the x- scope (K). The Linear declaration is written here by hand, so the tests do not depend on the book's.

def decl(*attrs: tuple[str, str]) -> dict:
    return {"version": 1, "attrs": [{"name": n, "type": t, "doc": ""} for n, t in attrs], "forward": []}


LINEAR = decl(("in_features", "int"), ("out_features", "int"), ("weight", "tensor"), ("bias", "tensor|none"))


def with_linear_decl(m: dict, *extra: tuple[str, str]) -> None:
    m["modules"]["torch.nn.Linear"] = decl(*(tuple((a["name"], a["type"]) for a in LINEAR["attrs"]) + extra))


def lin_attrs(m: dict) -> dict:
    return node(m, "lin")["lowering"]["attrs"]


@pytest.mark.parametrize("name,index,field,value,needle", [
    ("scale", 4, "kind", "", "kind is ''"), ("scale", 4, "kind", "weight", "'weight'"),
    ("scale", 4, "kind", "golden", "golden"), ("scale", 4, "requires_grad", True, "requires_grad"),
    ("lin.weight", 3, "persistent", False, "persistent")])
def test_rejects_bad_tensor_state(art, name, index, field, value, needle):
    edit(art, lambda m: tensor(m, name).__setitem__(field, value))  # scale: a buffer, lin.weight: a parameter
    rejects(art, "schema.type", needle, f"tensors[{index}].{field}")


def test_rejects_requires_grad_on_a_constant(art):
    edit(art, lambda m: tensor(m, "scale").update(kind="constant", requires_grad=True))
    rejects(art, "schema.type", "requires_grad", "'constant'")


def test_rejects_a_golden_file_tensor_that_is_not_of_kind_golden(art):
    edit(art, lambda m: tensor(m, "golden/outputs/0").__setitem__("kind", "parameter"))
    rejects(art, "schema.type", "'parameter' in a golden file", "tensors[1].kind")


def test_a_1_0_file_may_leave_kind_empty(art):
    edit(art, to_1_0)
    a = fxlower.load(art, verify=True)
    assert a.tensors["scale"].kind == "" and a.tensors["lin.weight"].requires_grad is False
    works_as_exported(a)


def test_rejects_lowering_of_an_undeclared_module_type(art):
    edit(art, lambda m: m["modules"].pop("torch.nn.Linear"))
    rejects(art, "lowering.attr", "'torch.nn.Linear'", "nodes[1].lowering.module_type")


def test_rejects_an_undeclared_lowering_attribute(art):
    def bad(m):
        with_linear_decl(m)
        lin_attrs(m)["x-note"] = "attrs keys are data, not extensions"
    edit(art, bad)
    rejects(art, "lowering.attr", "'x-note'", "nodes[1].lowering.attrs.x-note")


@pytest.mark.parametrize("attr,value,declared", [("in_features", 4.0, "int"), ("in_features", True, "int"),
                                                 ("bias", 0.0, "tensor|none"),
                                                 ("weight", {"t": "function", "v": "torch.relu"}, "tensor")])
def test_rejects_a_lowering_attribute_of_the_wrong_type(art, attr, value, declared):
    def bad(m):
        with_linear_decl(m)
        lin_attrs(m)[attr] = value
    edit(art, bad)
    rejects(art, "lowering.attr", f"'{attr}'", f"declared {declared}", f"attrs.{attr}")


@pytest.mark.parametrize("declared,value,decoded", [
    ("int[2]|enum(same,valid)", {"t": "tuple", "v": [1, 2]}, (1, 2)), ("int[2]|enum(same,valid)", "valid", "valid"),
    ("float|none", None, None), ("float", 1e-5, 1e-5), ("int[]", {"t": "tuple", "v": []}, ()),
    ("str[1]", {"t": "tuple", "v": ["a"]}, ("a",)),
    ("function|module", {"t": "function", "v": "torch.nn.functional.gelu"}, FunctionRef("torch.nn.functional.gelu")),
    ("dtype", {"t": "dtype", "v": "BF16"}, torch.bfloat16), ("device", {"t": "device", "v": "cpu"}, torch.device("cpu")),
    ("bool", False, False)])
def test_accepts_each_kind_of_declared_type(art, declared, value, decoded):
    def add(m):
        with_linear_decl(m, ("extra", declared))
        lin_attrs(m)["extra"] = value
    edit(art, add)
    got = fxlower.load(art).graphs[0].node("lin").lowering.attrs["extra"]
    assert type(got) is type(decoded) and got == decoded


@pytest.mark.parametrize("declared,value", [
    ("int[2]|enum(same,valid)", {"t": "tuple", "v": [1, 2, 3]}), ("int[2]|enum(same,valid)", "full"),
    ("float", 1), ("int[]", {"t": "list", "v": [1]}), ("float[2]", {"t": "tuple", "v": [1.0, 2]}),
    ("function", "torch.relu"), ("module", "torch.nn.ReLU"), ("dtype", "F32"), ("none", 0)])
def test_rejects_a_value_outside_its_declared_type(art, declared, value):
    def add(m):
        with_linear_decl(m, ("extra", declared))
        lin_attrs(m)["extra"] = value
    edit(art, add)
    rejects(art, "lowering.attr", "'extra'", f"declared {declared}")


@pytest.mark.parametrize("declared", ["integer", "int|", "enum()", "enum(a b)", "tensor[2]", "int[02]", "Int", ""])
def test_rejects_an_attribute_type_breaking_the_grammar(art, declared):
    edit(art, lambda m: with_linear_decl(m, ("extra", declared)))
    rejects(art, "schema.type", "modules.torch.nn.Linear.attrs[4].type")


def test_star_matches_one_decimal_index(art):
    def add(m, index):
        with_linear_decl(m, ("layers.*.size", "int"))
        lin_attrs(m)[f"layers.{index}.size"] = 3
    edit(art, lambda m: add(m, "10"))
    assert fxlower.load(art).graphs[0].node("lin").lowering.attrs["layers.10.size"] == 3
    for bad in ("01", "x", "1.2"):
        edit(art, lambda m: (lin_attrs(m).clear(), lin_attrs(m).update(
            {"in_features": 4, "out_features": 3, "weight": {"t": "tensor", "v": "lin.weight"}}),
            add(m, bad)))
        rejects(art, "lowering.attr", f"'layers.{bad}.size'")


def test_attributes_below_a_module_valued_attribute_follow_that_module_type(art):
    def add(m, value, rest="inplace", rest_value=False):
        with_linear_decl(m, ("act", "function|module"))
        m["modules"]["torch.nn.ReLU"] = decl(("inplace", "bool"))
        lin_attrs(m)["act"] = value
        lin_attrs(m).pop("act.slope", None)  # edits accumulate: one fault at a time
        lin_attrs(m)[f"act.{rest}"] = rest_value
    edit(art, lambda m: add(m, {"t": "module", "v": "torch.nn.ReLU"}))
    a = fxlower.load(art)
    assert a.graphs[0].node("lin").lowering.attrs["act"].name == "torch.nn.ReLU"
    edit(art, lambda m: add(m, {"t": "module", "v": "torch.nn.ReLU"}, rest="slope"))
    rejects(art, "lowering.attr", "'act.slope'")
    edit(art, lambda m: add(m, {"t": "module", "v": "torch.nn.ReLU"}, rest_value=1))
    rejects(art, "lowering.attr", "'act.inplace'", "declared bool")


def test_attributes_below_a_function_valued_attribute_are_undeclared(art):
    def add(m):
        with_linear_decl(m, ("act", "function|module"))
        m["modules"]["torch.nn.ReLU"] = decl(("inplace", "bool"))
        lin_attrs(m)["act"] = {"t": "function", "v": "torch.relu"}
        lin_attrs(m)["act.inplace"] = False
    edit(art, add)
    rejects(art, "lowering.attr", "'act.inplace'")


def test_rejects_a_module_value_whose_type_is_undeclared(art):
    def add(m):
        with_linear_decl(m, ("act", "module"))
        lin_attrs(m)["act"] = {"t": "module", "v": "torch.nn.GELU"}
    edit(art, add)
    rejects(art, "lowering.attr", "'torch.nn.GELU'", "attrs.act")


@pytest.mark.parametrize("value,needle", [({"t": "function", "v": "relu"}, "canonical function name"),
                                          ({"t": "function", "v": 3}, "an int"),
                                          ({"t": "module", "v": ""}, "module type name"),
                                          ({"t": "module", "v": "a\nb"}, "module type name")])
def test_rejects_a_malformed_function_or_module_value(art, value, needle):
    def add(m):
        with_linear_decl(m, ("act", "function|module"))
        lin_attrs(m)["act"] = value
    edit(art, add)
    rejects(art, "schema.type", needle, "attrs.act")


class _Moded(nn.Module):
    """A leaf whose rule declares a str, a function and a child module attribute."""

    def __init__(self, mode: str, fn, act: nn.Module):
        super().__init__()
        self.mode, self.fn, self.act = mode, fn, act

    def forward(self, x):
        return self.act(self.fn(x)) if self.mode == "torch.relu" else x


@pytest.fixture
def moded_rule():
    fxlower.register_module(_Moded, attrs={"mode": "str", "fn": "function", "act": "module"}, version=1)
    yield
    fxlower.lowering.book.unregister_module(_Moded)


def test_a_str_is_always_a_str_and_a_function_a_function_in_1_1(tmp_path, moded_rule):
    """No guessing from content: a str that looks like a function name stays a str; a function stays a function;
    a child module comes back as its type, with its own attributes."""
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, _Moded) or super().is_leaf_module(m, qualname)

    root = nn.Sequential(_Moded("torch.relu", torch.nn.functional.gelu, nn.LeakyReLU(0.25)))
    gm = torch.fx.GraphModule(root, Tracer().trace(root))
    fxlower.export(gm, tmp_path / "a")
    with open(tmp_path / "a" / "manifest.msgpack", "rb") as f:
        attrs = msgpack.unpackb(f.read())["graphs"][0]["nodes"][1]["lowering"]["attrs"]
    assert attrs["mode"] == "torch.relu"
    assert attrs["fn"] == {"t": "function", "v": "torch.nn.functional.gelu"}
    assert attrs["act"] == {"t": "module", "v": "torch.nn.LeakyReLU"}
    assert attrs["act.negative_slope"] == 0.25
    leaf = getattr(fxlower.load(tmp_path / "a").to_graph_module(), "0")
    assert leaf.mode == "torch.relu" and type(leaf.mode) is str
    assert leaf.fn is torch.nn.functional.gelu
    assert type(leaf.act) is nn.LeakyReLU and leaf.act.negative_slope == 0.25


def test_a_record_the_local_rule_does_not_declare_cannot_be_rebuilt(art):
    """The manifest may declare more than this reader's book knows: loading works, rebuilding names the gap."""
    def add(m):
        with_linear_decl(m, ("fn", "function"))
        lin_attrs(m).update(fn={"t": "function", "v": "torch.nn.functional.gelu"})
    edit(art, add)
    loaded = fxlower.load(art)
    assert loaded.graphs[0].node("lin").lowering.attrs["fn"].name == "torch.nn.functional.gelu"
    with pytest.raises(UnsupportedTargetError, match=r"node 'lin'.*torch\.nn\.Linear rule here.*'fn'"):
        loaded.to_graph_module()


@pytest.mark.parametrize("field,value,code,needle", [
    ("kind", "varargs", "schema.type", "kind"), ("name", "1x", "schema.name", "name"),
    ("default", {"t": "node", "v": "x"}, "graph.reference", "default")])
def test_rejects_a_malformed_parameter_declaration(art, field, value, code, needle):
    def bad(m):
        param = {"name": "input", "kind": "positional_or_keyword", "default": None, "required": True}
        param[field] = value
        m["functions"]["torch.relu"] = [{"params": [param], "returns": "Tensor"}]
    edit(art, bad)
    rejects(art, code, f"functions.torch.relu[0].params[0].{needle}")


@pytest.mark.parametrize("table,key", [("functions", "relu"), ("functions", "x-vendor"), ("methods", "_private"),
                                       ("methods", "x-vendor")])
def test_rejects_a_declaration_key_that_is_not_a_target_name(art, table, key):
    edit(art, lambda m: m[table].__setitem__(key, []))
    rejects(art, "graph.target", f"{table}.{key}")


def test_x_keys_of_modules_are_data(art):
    edit(art, lambda m: m["modules"].__setitem__("x-vendor", "anything"))
    rejects(art, "schema.type", "modules.x-vendor")


def test_x_keys_are_ignored_in_declaration_objects(art):
    def add(m):
        with_linear_decl(m)
        linear = m["modules"]["torch.nn.Linear"]
        linear["x-note"] = 1
        linear["attrs"][0]["x-note"] = 2
        m["functions"]["torch.relu"][0]["x-note"] = 3
    edit(art, add)
    works_as_exported(fxlower.load(art))


@pytest.mark.parametrize("where,code", [("kwargs", "schema.name"), ("tolerances", "tensor.dtype"),
                                        ("golden_nodes", "graph.reference")])
def test_x_keys_of_data_maps_are_data(art, where, code):
    def add(m):
        if where == "kwargs":
            node(m, "sum_1")["kwargs"]["x-flag"] = 1
        elif where == "tolerances":
            m["golden"]["tolerances"]["x-flag"] = {"rtol": 0.0, "atol": 0.0}
        else:
            m["golden"]["nodes"]["x-flag"] = None
    edit(art, add)
    rejects(art, code, "x-flag")


@pytest.mark.parametrize("value", [{"t": "tuple", "v": [], "x-a": 1}, {"t": "tensor", "dtype": "F32", "shape": [],
                                                                         "x-a": 1}])
def test_values_and_meta_take_no_extension_keys(art, value):
    if "dtype" in value:
        edit(art, lambda m: node(m, "relu").__setitem__("meta", value))
    else:
        edit(art, lambda m: node(m, "relu")["kwargs"].__setitem__("v", value))
    rejects(art, "schema.type", "x-a")


@pytest.mark.parametrize("op_node,table", [("relu", "functions"), ("sum_1", "methods")])
def test_rejects_a_call_target_without_its_overloads(art, op_node, table):
    edit(art, lambda m: m[table].pop(node(m, op_node)["target"]))
    rejects(art, "graph.target", f"'{table}'", ".target")


@pytest.mark.parametrize("op_node,overload,needle", [("relu", "count", "out of range"), ("relu", -1, "out of range"),
                                                     ("sum_1", None, "overload is nil"), ("lin", 0, "only call_function"),
                                                     ("output", 0, "only call_function")])
def test_rejects_a_bad_overload_index(art, op_node, overload, needle):
    def bad(m):
        n = node(m, op_node)
        n["overload"] = len(m["functions"][n["target"]]) if overload == "count" else overload  # one past the last
    edit(art, bad)
    rejects(art, "graph.structure", needle, ".overload")


def test_accepts_the_last_overload(art):
    def two(m):
        m["functions"]["torch.relu"] = [{"params": [], "returns": ""}] * 2
        node(m, "relu")["overload"] = 1
    edit(art, two)
    assert fxlower.load(art).graphs[0].node("relu").overload == 1


def test_rejects_a_private_keyword_argument_in_1_1(art):
    edit(art, lambda m: node(m, "sum_1")["kwargs"].__setitem__("_stacklevel", 3))
    rejects(art, "schema.name", "'_stacklevel'", "nodes[5].kwargs")


def test_accepts_a_private_keyword_argument_in_1_0(art):
    def old(m):
        to_1_0(m)
        node(m, "sum_1")["kwargs"]["_stacklevel"] = 3
    edit(art, old)
    assert fxlower.load(art).graphs[0].node("sum_1").kwargs == {"_stacklevel": 3}


@pytest.mark.parametrize("target", ["block1-0", "layer 1", "\u00fc", "0", "a-b.c d"])
def test_accepts_path_components_that_are_not_identifiers(art, target):
    def rename(m):
        node(m, "scale")["target"] = target
        tensor(m, "scale")["name"] = target
        m["tensors"].sort(key=lambda t: t["name"])
    edit(art, rename)
    a = fxlower.load(art, verify=True)
    assert a.graphs[0].node("scale").target == target
    gm = a.to_graph_module()
    assert torch.equal(gm.get_buffer(target), torch.full((3,), 0.5))
    assert torch.equal(gm(*a.golden_inputs()), a.golden_outputs())


def test_a_component_python_reads_as_another_name_fails_in_to_graph_module(art):
    """'\ufb01' (the fi ligature) is an identifier Python normalises to 'fi': torch.fx's code would miss it."""
    def rename(m):
        node(m, "scale")["target"] = "\ufb01"
        tensor(m, "scale")["name"] = "\ufb01"
        m["tensors"].sort(key=lambda t: t["name"])
    edit(art, rename)
    a = fxlower.load(art)
    with pytest.raises(UnsupportedTargetError, match="normalises"):
        a.to_graph_module()


@pytest.mark.parametrize("name", ["a..b", 'a"b', "__x", "a.class"])
def test_rejects_a_nested_graph_name_that_is_not_a_module_path(art, name):
    edit(art, lambda m: m["graphs"].append(nested_graph(name, None)))
    rejects(art, "schema.name", "graphs[1].name")


def test_an_int_over_int64_in_a_value_is_a_schema_error_before_later_faults(art):
    """Design L: every int > INT64_MAX is schema.type at the schema step, so it is reported before a fault of a
    later step (here a tensor file that is too short, step 7)."""
    edit(art, lambda m: node(m, "sum_1")["kwargs"].__setitem__("dim", 2**64 - 1))
    (art / WEIGHTS).write_bytes(b"\0" * 4)
    rejects(art, "schema.type", "18446744073709551615", "nodes[5].kwargs.dim")


# ------------------------------------------------------------------------------------------------ 1.2 core view
# One test per rejection path of the core view (fxlower/io/reading.py, _Validator.core, in its order). The valid
# starting point is the hand-built core view of the base model (tests/test_core_load.py, small_core); each case
# breaks one thing.

_core_spec = importlib.util.spec_from_file_location("core_support", REPO / "tests" / "test_core_load.py")
_core = importlib.util.module_from_spec(_core_spec)
_core_spec.loader.exec_module(_core)


def _cnode(m, name, graph=0):
    return _core.core_node(m, name, graph)


def _set(d, key, value):
    d[key] = value


def _to_1_1(m):
    m["format_version"] = [1, 1]


def _unreached_subgraph(m):
    m["core"]["graphs"].append({"name": "orphan", "nodes": [
        {"name": "y", "op": "placeholder", "target": "y", "args": [], "kwargs": {}, "inputs": [], "users": ["output"],
         "meta": None, "lowering": None, "graph": None},
        {"name": "output", "op": "output", "target": "output", "args": [{"t": "node", "v": "y"}], "kwargs": {},
         "inputs": ["y"], "users": [], "meta": None, "lowering": None, "graph": None}]})


def _graph_value_outside_control_flow(m):
    _unreached_subgraph(m)
    _cnode(m, "relu")["kwargs"] = {"g": {"t": "graph", "v": 1}}


def _self_reference(m):
    _cnode(m, "relu")["kwargs"] = {"g": {"t": "graph", "v": 0}}


def _two_user_inputs_swapped(m):
    m["core"]["inputs"][3]["target"] = "y"


def _output_not_a_tuple(m):
    _cnode(m, "output")["args"] = [{"t": "node", "v": "sum_1"}]


def _core_only(m):
    m["graphs"], m["functions"], m["methods"], m["modules"] = [], {}, {}, {}
    for n in m["core"]["graphs"][0]["nodes"]:
        n["origin"] = None


CORE_REJECTS = [
    # step: the field is new in 1.2
    ("in_1_1_file", _to_1_1, "schema.unknown_field", ["new in format 1.2", "core"]),
    # the root graph
    ("no_graphs", lambda m: _set(m["core"], "graphs", []), "core.structure", ["core.graphs is empty"]),
    # ops
    ("op_key_form", lambda m: m["core"]["ops"].__setitem__("aten.relu", m["core"]["ops"]["aten.relu.default"]),
     "core.op", ["'aten.relu'", "namespace.name.overload", "core.ops.aten.relu"]),
    ("op_schema_name", lambda m: _set(m["core"]["ops"]["aten.relu.default"], "name", "aten::gelu"), "core.op",
     ["'aten::gelu'", "needs 'aten::relu' overload 'default'"]),
    ("op_required_with_default", lambda m: _set(m["core"]["ops"]["aten.relu.default"]["arguments"][0], "default", 1),
     "schema.type", ["required argument has a default", "arguments[0].default"]),
    ("op_duplicate_argument", lambda m: m["core"]["ops"]["aten.addmm.default"]["arguments"][1].__setitem__(
        "name", "self"), "core.op", ["'self' appears twice", "arguments[1].name"]),
    # symbols
    ("symbol_name", lambda m: m["core"]["symbols"].__setitem__("n0", m["core"]["symbols"].pop("s0")), "core.symbol",
     ["'n0'", "'s' and digits"]),
    ("symbol_min", lambda m: _set(m["core"]["symbols"]["s0"], "min", -1), "core.symbol", ["min is -1"]),
    ("symbol_max", lambda m: _set(m["core"]["symbols"]["s0"], "max", 1) or _set(m["core"]["symbols"]["s0"], "min", 2),
     "core.symbol", ["max 1 is below min 2"]),
    # nodes
    ("node_op", lambda m: _set(_cnode(m, "relu"), "op", "call_module"), "graph.op",
     ["'call_module'", "core-graph ops", "core.graphs[0].nodes[6].op"]),
    ("node_target_form", lambda m: _set(_cnode(m, "relu"), "target", "torch.relu"), "graph.target",
     ["'torch.relu'", "namespace.name.overload"]),
    ("node_target_without_schema", lambda m: m["core"]["ops"].pop("aten.relu.default"), "core.op",
     ["operator 'aten.relu.default' has no schema in core.ops", "nodes[6].target"]),
    ("node_get_attr", lambda m: _cnode(m, "relu").update(op="get_attr", target="nope", args=[], inputs=[]),
     "graph.op", ["'get_attr' is not one of the core-graph ops", "nodes[6].op"]),
    ("node_too_many_args", lambda m: _cnode(m, "relu")["args"].append(1), "core.op",
     ["2 positional args; 'aten.relu.default' takes at most 1"]),
    ("node_unknown_kwarg", lambda m: _set(_cnode(m, "addmm"), "kwargs", {"gamma": 2}), "core.op",
     ["'aten.addmm.default' has no argument 'gamma'"]),
    ("node_kwarg_twice", lambda m: _set(_cnode(m, "addmm"), "kwargs", {"mat1": 2}), "core.op",
     ["argument 'mat1' of 'aten.addmm.default' is given by position and by name"]),
    ("node_missing_required", lambda m: _cnode(m, "addmm").update(args=[{"t": "node", "v": "p_lin_bias"},
                                                                         {"t": "node", "v": "x"}]),
     "core.op", ["required argument 'mat2' of 'aten.addmm.default' is not given"]),
    ("graph_value_outside_control_flow", _graph_value_outside_control_flow, "core.structure",
     ["only an argument of a control-flow operator", "nodes[6].kwargs.g"]),
    ("graph_value_self", _self_reference, "core.structure", ["graph 0 is not a subgraph"]),
    ("graph_value_in_module_view", lambda m: node(m, "relu")["kwargs"].__setitem__("g", {"t": "graph", "v": 1}),
     "graph.reference", ["only allowed in the arguments of core-view nodes", "graphs[0].nodes[2].kwargs.g"]),
    ("shape_expression_syntax", lambda m: _set(_cnode(m, "relu"), "meta", {"t": "tensor", "dtype": "F32",
                                                                           "shape": ["s0+", 3]}),
     "core.symbol", ["shape expression", "nodes[6].meta.shape[0]"]),
    ("shape_expression_unknown_symbol", lambda m: _set(_cnode(m, "relu"), "meta", {"t": "tensor", "dtype": "F32",
                                                                                   "shape": ["s0*s1", 3]}),
     "core.symbol", ["'s1' is not declared"]),
    ("shape_str_in_module_view", lambda m: _set(node(m, "relu"), "meta", {"t": "tensor", "dtype": "F32",
                                                                          "shape": ["s0", 3]}),
     "tensor.shape", ["dimension 0 is 's0'"]),
    ("lowering_on_core_node", lambda m: _set(_cnode(m, "relu"), "overload", 0), "graph.structure",
     ["'overload' is set on a core-view node"]),
    ("origin_unknown_node", lambda m: _set(_cnode(m, "relu"), "origin", {"graph": 0, "node": "gelu"}),
     "graph.reference", ["origin (graph 0, node 'gelu')", "nodes[6].origin"]),
    ("origin_unknown_graph", lambda m: _set(_cnode(m, "relu"), "origin", {"graph": 3, "node": "relu"}),
     "graph.reference", ["origin (graph 3"]),
    ("origin_on_module_node", lambda m: _set(node(m, "relu"), "origin", {"graph": 0, "node": "relu"}),
     "graph.structure", ["origin is set on a module-view node", "graphs[0].nodes[2].origin"]),
    ("unreached_subgraph", _unreached_subgraph, "core.structure", ["core graph 1 is not reached"]),
    # inputs
    ("inputs_count", lambda m: m["core"]["inputs"].pop(), "core.structure",
     ["core.inputs has 3 entries; the core root graph has 4 placeholders"]),
    ("inputs_name", lambda m: _set(m["core"]["inputs"][0], "name", "w"), "core.structure",
     ["'w'", "placeholder 0 of the core root is 'p_lin_weight'"]),
    ("inputs_kind", lambda m: _set(m["core"]["inputs"][0], "kind", "token"), "core.structure", ["'token'"]),
    ("inputs_tensor_missing", lambda m: _set(m["core"]["inputs"][0], "target", "lin.w"), "tensor.reference",
     ["'lin.w'", "inputs[0].target"]),
    ("inputs_tensor_golden", lambda m: _set(m["core"]["inputs"][0], "target", "golden/outputs/0"),
     "tensor.reference", ["'golden/outputs/0'"]),
    ("inputs_kind_mismatch", lambda m: _set(m["core"]["inputs"][2], "kind", "parameter"), "core.structure",
     ["a parameter input names 'scale', a tensor of kind 'buffer'"]),
    ("inputs_user_binding", _two_user_inputs_swapped, "core.structure",
     ["the user inputs bind to ['y']; the signature's inputs are ['x']"]),
    # outputs
    ("outputs_not_tuple", _output_not_a_tuple, "core.structure", ["returns a tuple or list"]),
    ("outputs_count", lambda m: m["core"]["outputs"].append({"name": "", "kind": "user_output", "target": ""}),
     "core.structure", ["core.outputs has 2 entries; the core root returns 1"]),
    ("outputs_name", lambda m: _set(m["core"]["outputs"][0], "name", "mul"), "core.structure",
     ["'mul'", "output element 0 is 'sum_1'"]),
    ("outputs_kind", lambda m: _set(m["core"]["outputs"][0], "kind", "loss"), "core.structure", ["'loss'"]),
    ("outputs_user_target", lambda m: _set(m["core"]["outputs"][0], "target", "scale"), "core.structure",
     ["a user_output has target ''"]),
    ("outputs_mutation_missing", lambda m: m["core"]["outputs"][0].update(kind="buffer_mutation", target="n"),
     "tensor.reference", ["'n'", "outputs[0].target"]),
    ("outputs_mutation_not_buffer", lambda m: m["core"]["outputs"][0].update(kind="buffer_mutation",
                                                                             target="lin.bias"),
     "core.structure", ["updates 'lin.bias', a tensor of kind 'parameter'"]),
    # signature of a core-only artifact
    ("core_only_signature_inputs", lambda m: _core_only(m) or _set(m["core"]["inputs"][3], "target", "x0") or
     _set(m["signature"], "inputs", ["x0"]), "graph.structure",
     ["signature inputs ['x0'] differ from the core root's user-input placeholders ['x']"]),
    ("core_only_signature_output", lambda m: _core_only(m) or _set(m["signature"], "output",
                                                                   {"t": "node", "v": "mul"}),
     "graph.output", ["signature output references ['mul']; the core view's user outputs are ['sum_1']"]),
    ("core_only_signature_unknown", lambda m: _core_only(m) or _set(m["signature"], "output",
                                                                    {"t": "node", "v": "lin"}),
     "graph.reference", ["'lin' is not a node of the core root graph"]),
    # symbols' defining inputs
    ("symbol_input_not_user", lambda m: _set(m["core"]["symbols"]["s0"], "input", 0), "core.symbol",
     ["input 0 is not the index of a user_input"]),
    ("symbol_dim_out_of_rank", lambda m: _set(m["core"]["symbols"]["s0"], "dim", 2), "core.symbol",
     ["dim 2 is outside the rank 2 of input 'x'"]),
    ("symbol_dim_not_the_symbol", lambda m: _set(m["core"]["symbols"]["s0"], "dim", 1), "core.symbol",
     ["dimension 1 of input 'x' is 4, not the symbol 's0'"]),
    # golden
    ("golden_core_node", lambda m: _set(m["golden"], "core_nodes", {"lin": {"t": "tensor", "v": "golden/outputs/0"}}),
     "graph.reference", ["golden core node 'lin' is not a node of the core root graph"]),
]


@pytest.mark.parametrize("case,fn,code,needles", CORE_REJECTS, ids=[c[0] for c in CORE_REJECTS])
def test_rejects_core_view(art, case, fn, code, needles):
    _core.add_core(art, edit=fn)
    rejects(art, code, *needles)


def test_the_hand_built_core_view_is_valid(art):
    """The starting point of CORE_REJECTS loads (so each case fails for its own fault)."""
    _core.add_core(art)
    assert fxlower.load(art).core is not None


def test_rejects_core_nodes_in_golden_without_core_view(art):
    edit(art, lambda m: m["golden"].__setitem__("core_nodes", {"x": {"t": "tensor", "v": "golden/outputs/0"}}))
    rejects(art, "graph.reference", "golden core node 'x'")


def test_rejects_empty_graphs_without_core_view(art):
    edit(art, lambda m: m.__setitem__("graphs", []))
    rejects(art, "graph.structure", "graphs is empty", "only an artifact with a core view")


def test_core_view_rules_come_before_golden_and_after_signature(art):
    """Order: a signature fault wins over a core fault; a core fault wins over a golden fault."""
    def two(m):
        _set(m["core"]["inputs"][0], "kind", "token")
        m["golden"]["mode"] = "everything"
    _core.add_core(art, edit=two)
    rejects(art, "core.structure", "'token'")
    _core.add_core(art, edit=lambda m: _set(m["core"]["inputs"][0], "kind", "token") or
                   _set(m["signature"], "inputs", ["y"]))
    rejects(art, "graph.structure", "signature inputs ['y']")


def _branch_calls(m, gi, other):
    """Replace the computing node of core graph ``gi`` (a cond branch) with a cond over graph ``other``."""
    n = m["core"]["graphs"][gi]["nodes"][1]
    n.update(target="higher_order.cond", kwargs={},
             args=[{"t": "node", "v": "x"}, {"t": "graph", "v": other}, {"t": "graph", "v": other},
                   {"t": "tuple", "v": [{"t": "node", "v": "x"}]}])


CORE_CONTROL_FLOW_REJECTS = [
    ("cycle", lambda m: _branch_calls(m, 1, 2) or _branch_calls(m, 2, 1), "core.structure",
     ["core graph 2 refers to graph 1", "cycle"]),
    ("branch_not_a_graph", lambda m: _cnode(m, "cond")["args"].__setitem__(1, {"t": "node", "v": "gt"}),
     "core.structure", ["higher_order.cond takes a graph Value as args[1]"]),
    ("operands_hold_a_graph", lambda m: _cnode(m, "cond")["args"][3]["v"].append({"t": "graph", "v": 1}),
     "core.structure", ["higher_order.cond takes graph Values only as args[1, 2]"]),
    ("graph_index_out_of_range", lambda m: _cnode(m, "cond")["args"].__setitem__(2, {"t": "graph", "v": 3}),
     "core.structure", ["graph 3 is not a subgraph of the core view", "nodes[3].args[2]"]),
    ("graph_index_not_int", lambda m: _cnode(m, "cond")["args"].__setitem__(2, {"t": "graph", "v": "false"}),
     "schema.type", ["a graph reference holds an index, found a str"]),
    ("subgraph_root_name", lambda m: _set(m["core"]["graphs"][0], "name", "main"), "schema.name",
     ["the core root graph's name is ''"]),
    ("subgraph_inputs", lambda m: _set(m["core"]["graphs"][1]["nodes"][1], "inputs", []), "graph.structure",
     ["inputs is [] but args/kwargs reference ['x']", "core.graphs[1].nodes[1].inputs"]),
    ("subgraph_users", lambda m: _set(m["core"]["graphs"][2]["nodes"][0], "users", []), "graph.structure",
     ["users of 'x' is []", "core.graphs[2].nodes[0].users"]),
    ("subgraph_no_output", lambda m: m["core"]["graphs"][1]["nodes"].pop() and
     _set(m["core"]["graphs"][1]["nodes"][1], "users", []), "graph.output", ["core.graphs[1]", "no output node"]),
    ("symbol_input_without_tensor_meta", lambda m: _set(m["core"], "symbols", {"s0": {"min": 2, "max": None,
                                                                                      "input": 0, "dim": 0}})
     or _set(_cnode(m, "x"), "meta", None), "core.symbol", ["input 0 ('x') has no tensor metadata"]),
]


@pytest.mark.parametrize("case,fn,code,needles", CORE_CONTROL_FLOW_REJECTS,
                         ids=[c[0] for c in CORE_CONTROL_FLOW_REJECTS])
def test_rejects_core_control_flow(art, case, fn, code, needles):
    _core.add_core(art, _core.cond_core(), edit=fn)
    rejects(art, code, *needles)


def test_the_hand_built_cond_core_view_is_valid(art):
    _core.add_core(art, _core.cond_core())
    assert len(fxlower.load(art).core.graphs) == 3


def test_symint_metadata_in_core_graphs_only(art):
    """1.2: {"t": "symint", "v": expr} is core-graph metadata; its expression is checked like a shape entry."""
    _core.add_core(art, edit=lambda m: _set(_cnode(m, "relu"), "meta", {"t": "symint", "v": "s0*2"}))
    assert fxlower.load(art).core.graphs[0].node("relu").meta == {"t": "symint", "v": "s0*2"}
    _core.add_core(art, edit=lambda m: _set(_cnode(m, "relu"), "meta", {"t": "symint", "v": "s5"}))
    rejects(art, "core.symbol", "'s5' is not declared", "nodes[6].meta.v")
    _core.add_core(art, edit=lambda m: _set(_cnode(m, "relu"), "meta", {"t": "symint", "v": 1.5}))
    rejects(art, "schema.type", "a symint's v is an expression (str) or an int, found a float")
    _core.add_core(art, edit=lambda m: _set(node(m, "relu"), "meta", {"t": "symint", "v": "s0"}))
    rejects(art, "schema.type", "unknown metadata kind 'symint'", "graphs[0].nodes[2].meta")
