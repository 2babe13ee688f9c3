"""Collective export over torch.distributed (fxlower.io.collective): gloo, world size 2 on 127.0.0.1, ranks spawned as
subprocesses of this test (this file is also the ranks' program: ``python test_collective.py MODE RANK PORT OUT``).

Expected values come from PyTorch (the full model built from the same seed in this process, each rank's
``DTensor.to_local()``) and from placements written down by hand, never from fxlower.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

WORLD = 2
HANG, HANG_TIMEOUT = 6.0, 2.0  # a rank stuck for HANG seconds; the collective phases wait HANG_TIMEOUT
D, HEADS, FF, VOCAB = 16, 2, 45, 11  # FF and VOCAB are odd: uneven chunks (23/22 and 6/5) on purpose


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(D, D)
        self.k = nn.Linear(D, D)
        self.v = nn.Linear(D, D)
        self.o = nn.Linear(D, D)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, HEADS, D // HEADS).transpose(1, 2)
        k = self.k(x).view(b, t, HEADS, D // HEADS).transpose(1, 2)
        v = self.v(x).view(b, t, HEADS, D // HEADS).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / (D // HEADS) ** 0.5, dim=-1) @ v
        return self.o(a.transpose(1, 2).reshape(b, t, D))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(D, FF)
        self.down = nn.Linear(FF, D)

    def forward(self, x):
        return self.down(torch.nn.functional.gelu(self.up(x.to(self.up.weight.dtype)))).float()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(D)
        self.attn = Attention()
        self.norm2 = nn.LayerNorm(D)
        self.mlp = MLP().to(torch.bfloat16)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Tiny(nn.Module):
    """Transformer-shaped: embedding, one block (attention, MLP), final norm, head; a plain buffer too."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.block = Block()
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)
        self.register_buffer("pos", torch.arange(D, dtype=torch.float32) / D)

    def forward(self, ids):
        return self.head(self.norm(self.block(self.emb(ids) + self.pos)))


def full_model() -> Tiny:
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():  # LayerNorm starts at ones/zeros: make every tensor distinct
        for p in m.parameters():
            p.add_(torch.randn(p.shape, dtype=torch.float32).to(p.dtype) * 0.01)
    return m


def two_linears() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 4))


# Placements written down by hand: (mesh dim kind, tensor dim) per tensor; None: not placed.
SHARD0, SHARD1, REPL = ("shard", 0), ("shard", 1), ("replicate", -1)
EXPECTED = {
    "emb.weight": SHARD0,  # RowwiseParallel on an Embedding: rows (vocabulary)
    "block.attn.q.weight": SHARD0, "block.attn.q.bias": SHARD0,
    "block.attn.k.weight": SHARD0, "block.attn.k.bias": SHARD0,
    "block.attn.v.weight": SHARD0, "block.attn.v.bias": SHARD0,
    "block.attn.o.weight": SHARD1, "block.attn.o.bias": REPL,
    "block.mlp.up.weight": SHARD0, "block.mlp.up.bias": SHARD0,
    "block.mlp.down.weight": SHARD1, "block.mlp.down.bias": REPL,
    "block.norm1.weight": REPL, "block.norm1.bias": REPL,
    "block.norm2.weight": REPL, "block.norm2.bias": REPL,
    "norm.weight": REPL, "norm.bias": REPL,
    "head.weight": SHARD0,
    "pos": None,
}


def tp_plan():
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel
    return {"emb": RowwiseParallel(), "block.attn.q": ColwiseParallel(), "block.attn.k": ColwiseParallel(),
            "block.attn.v": ColwiseParallel(), "block.attn.o": RowwiseParallel(),
            "block.mlp.up": ColwiseParallel(), "block.mlp.down": RowwiseParallel(),
            "block.norm1": SequenceParallel(), "block.norm2": SequenceParallel(), "norm": SequenceParallel(),
            "head": ColwiseParallel()}


def placements_kwarg():
    """The single-process way to record the same placements (``export(placements=...)``)."""
    from torch.distributed.tensor import Replicate, Shard
    obj = {SHARD0: Shard(0), SHARD1: Shard(1), REPL: Replicate()}
    return {name: ((WORLD,), [obj[p]]) for name, p in EXPECTED.items() if p is not None}


# ------------------------------------------------------------------------------------------------ the ranks

def _rank_main(mode: str, rank: int, port: int, out: str) -> None:
    import datetime

    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor.parallel import parallelize_module

    import fxlower
    import fxlower.io.collective as collective

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    model = full_model()
    parallelize_module(model, DeviceMesh("cpu", list(range(WORLD))), tp_plan())
    report: dict = {}

    def save():
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)

    real_pwrite = collective._pwrite
    if mode in ("kill", "hang"):
        def pwrite_then_die(fd, data, offset):
            real_pwrite(fd, data, offset)
            if rank == 1 and mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if rank == 1 and mode == "hang" and not report:
                report["hung"] = True
                time.sleep(HANG)
        collective._pwrite = pwrite_then_die
        start = time.monotonic()
        try:
            fxlower.export(model, os.path.join(out, "art"), timeout=20 if mode == "kill" else HANG_TIMEOUT)
            report["result"] = "returned"
        except fxlower.ExportError as e:
            report["result"] = "ExportError"
            report["message"] = str(e)
        report["seconds"] = time.monotonic() - start
        save()
        os._exit(0)  # the process group cannot be torn down cleanly with a dead peer

    s = fxlower.export(model, os.path.join(out, "art"))
    report["summary"] = [s.path, s.nodes, s.graphs, s.tensors, s.bytes_written, s.digest]
    s2 = fxlower.export(model, os.path.join(out, "art-sharded"), max_shard_bytes=1000)
    report["sharded_summary"] = [s2.tensors, s2.bytes_written, s2.digest]
    dist.barrier()

    # each rank's slice of every placed tensor, read from the artifact, against its own DTensor.to_local()
    art = fxlower.load(os.path.join(out, "art"))
    per_rank = "shard" in inspect.signature(type(art).tensor).parameters
    slices = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if per_rank:
            got = art.tensor(name, shard=(rank, WORLD))
        else:  # the spec's rule by hand for a 1-D mesh of 2 (torch.chunk), from the recorded placement
            got = art.tensor(name)
            pl = art.tensors[name].placement
            if pl is not None and pl.dims[0].kind == "shard":
                got = torch.chunk(got, WORLD, dim=pl.dims[0].dim)[rank]
        want = t.to_local() if hasattr(t, "to_local") else t
        slices[name] = [list(got.shape), bool(torch.equal(got, want.detach()))]
    report["slices"] = slices
    report["per_rank_reads"] = per_rank
    art.close()

    # FSDP2: fully_shard on a block, on a leaf (the head) and on the root: every parameter Shard(0)
    from torch.distributed.fsdp import fully_shard
    fsdp = full_model()
    mesh = DeviceMesh("cpu", list(range(WORLD)))
    fully_shard(fsdp.block.mlp, mesh=mesh)  # its own group: FSDP wants one dtype per group (the MLP is bf16)
    fully_shard(fsdp.block, mesh=mesh)
    fully_shard(fsdp.head, mesh=mesh)
    fully_shard(fsdp, mesh=mesh)
    fxlower.export(fsdp, os.path.join(out, "art-fsdp"))
    report["fsdp_classes"] = [type(m).__name__ for m in (fsdp, fsdp.block, fsdp.block.mlp, fsdp.head)]
    ids = torch.tensor([[1, 5, 10]])
    with torch.no_grad():  # the FSDP model still runs after export (its classes were put back)
        report["fsdp_forward_ok"] = bool(torch.allclose(fsdp(ids), full_model()(ids), atol=1e-5))

    # a 2-D mesh (2, 1) with names: [Replicate(), Shard(0)] is written by rank 0 alone (rank 1 is at coordinate 1
    # along the replicated dimension), [Shard(1), Replicate()] by both
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    mesh2 = init_device_mesh("cpu", (WORLD, 1), mesh_dim_names=("dp", "tp"))
    seq = two_linears()
    for mod, pl in ((seq[0], [Replicate(), Shard(0)]), (seq[1], [Shard(1), Replicate()])):
        for pname in ("weight", "bias"):
            t = getattr(mod, pname)
            setattr(mod, pname, nn.Parameter(distribute_tensor(t.detach(), mesh2, pl if t.dim() == 2 else
                                                               [Replicate(), Replicate()])))
    fxlower.export(seq, os.path.join(out, "art-2d"))

    # a Python exception on rank 1 (disk full while writing) becomes an ExportError on both ranks
    def pwrite_fails(fd, data, offset):
        if rank == 1:
            raise OSError(28, "No space left on device")
        real_pwrite(fd, data, offset)
    collective._pwrite = pwrite_fails
    try:
        fxlower.export(model, os.path.join(out, "art-fail"))
        report["fail"] = "returned"
    except fxlower.ExportError as e:
        report["fail"] = str(e)
    collective._pwrite = real_pwrite
    # ranks holding different models (on rank 1 the head's weight is a plain tensor) are told so, on both ranks
    other = full_model()
    parallelize_module(other, DeviceMesh("cpu", list(range(WORLD))), tp_plan())
    if rank == 1:
        other.head.weight = nn.Parameter(full_model().head.weight.detach())
    try:
        fxlower.export(other, os.path.join(out, "art-differ"))
        report["differ"] = "returned"
    except fxlower.ExportError as e:
        report["differ"] = str(e)
    dist.barrier()
    report["fail_left"] = sorted(n for n in os.listdir(out) if n.startswith(("art-fail", "art-differ")))
    save()
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the test side

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(mode: str, out: str) -> list[subprocess.Popen]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
               OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, os.path.abspath(__file__), mode, str(r), str(port), out], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(WORLD)]


def _doc_script() -> str:
    """The workflow's script in docs/scale.md (section 3)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for page in ("scale.md",):
        path = os.path.join(root, "docs", page)
        if os.path.exists(path):
            for body in re.findall(r"^```python\n(.*?)^```", open(path).read(), flags=re.S | re.M):
                if body.startswith("# tp_export.py"):
                    return body
    raise AssertionError("the tp_export.py script of the collective workflow is not in docs/")


def _start_doc(out: str) -> list[subprocess.Popen]:
    """torchrun --nproc-per-node 2 tp_export.py, as the docs say."""
    with open(os.path.join(out, "tp_export.py"), "w") as f:
        f.write(_doc_script())
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
               OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                              "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "tp_export.py"],
                             cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs ("main", "kill", "hang"), 2 ranks each, started together and bounded in time: mode ->
    (output directory, [CompletedProcess per rank])."""
    outs = {mode: str(tmp_path_factory.mktemp(mode)) for mode in ("main", "kill", "hang", "doc")}
    procs = {}
    try:
        for mode, out in outs.items():
            procs[mode] = _start_doc(out) if mode == "doc" else _start(mode, out)
        deadline = time.monotonic() + 150
        done = {}
        for mode, ps in procs.items():
            done[mode] = (outs[mode], [])
            for p in ps:
                stdout, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                done[mode][1].append(subprocess.CompletedProcess(p.args, p.returncode,
                                                                 stdout.decode(errors="replace")))
        return done
    finally:
        for ps in procs.values():
            for p in ps:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def _files(path: str) -> dict[str, bytes]:
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


@pytest.fixture(scope="module")
def collective_run(runs):
    out, results = runs["main"]
    for r in results:
        assert r.returncode == 0, r.stdout[-4000:]
    reports = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(WORLD)]
    return out, reports


def test_collective_artifact_is_byte_identical_to_single_process_export(collective_run, tmp_path):
    import fxlower
    out, reports = collective_run
    fxlower.export(full_model(), tmp_path / "ref", placements=placements_kwarg())
    fxlower.export(full_model(), tmp_path / "plain")
    got = _files(os.path.join(out, "art"))
    assert sorted(got) == ["manifest.msgpack", "weights.safetensors"]
    assert got == _files(str(tmp_path / "ref"))
    assert got["weights.safetensors"] == _files(str(tmp_path / "plain"))["weights.safetensors"]
    # every rank returned the same summary
    assert reports[0]["summary"] == reports[1]["summary"]
    assert reports[0]["summary"][0] == os.path.join(out, "art")
    assert reports[0]["summary"][4] == sum(len(b) for b in got.values())
    # nothing else was left beside the artifacts (no temporary directory)
    assert not [n for n in os.listdir(out) if ".fxlower-tmp-" in n]


def test_fsdp2_collective_export_is_byte_identical(collective_run, tmp_path):
    """fully_shard swaps classes (FSDPTiny, FSDPBlock, FSDPMLP, FSDPLinear): the export maps them back to the original
    classes (the head stays a leaf Linear), records Shard(0) on every parameter, and puts the classes back."""
    import fxlower
    from torch.distributed.tensor import Shard
    out, reports = collective_run
    full = full_model()
    fxlower.export(full, tmp_path / "ref", placements={n: ((WORLD,), [Shard(0)]) for n, _ in full.named_parameters()})
    assert _files(os.path.join(out, "art-fsdp")) == _files(str(tmp_path / "ref"))
    for rep in reports:
        assert rep["fsdp_classes"] == ["FSDPTiny", "FSDPBlock", "FSDPMLP", "FSDPLinear"]
        assert rep["fsdp_forward_ok"] is True


def test_two_dimensional_mesh_with_names(collective_run, tmp_path):
    import fxlower
    out, _ = collective_run
    fxlower.export(two_linears(), tmp_path / "plain")
    got = _files(os.path.join(out, "art-2d"))
    assert got["weights.safetensors"] == _files(str(tmp_path / "plain"))["weights.safetensors"]
    art = fxlower.load(os.path.join(out, "art-2d"))
    placed = {n: (e.placement.mesh, [(d.kind, d.dim) for d in e.placement.dims], e.placement.mesh_dim_names)
              for n, e in art.tensors.items()}
    assert placed == {
        "0.weight": ([2, 1], [REPL, SHARD0], ["dp", "tp"]),
        "0.bias": ([2, 1], [REPL, REPL], ["dp", "tp"]),
        "1.weight": ([2, 1], [SHARD1, REPL], ["dp", "tp"]),
        "1.bias": ([2, 1], [REPL, REPL], ["dp", "tp"]),
    }
    for name, t in two_linears().state_dict().items():
        assert torch.equal(art.tensor(name), t), name


def test_collective_records_the_dtensor_placements(collective_run):
    import fxlower
    out, _ = collective_run
    art = fxlower.load(os.path.join(out, "art"))
    entries = art.tensors
    assert sorted(entries) == sorted(EXPECTED)
    for name, want in EXPECTED.items():
        pl = entries[name].placement
        if want is None:
            assert pl is None, name
            continue
        assert pl.mesh == [2], name
        assert [(d.kind, d.dim) for d in pl.dims] == [want], name
        assert pl.mesh_dim_names == [], name
    # one process reads full tensors: equal to the full model's
    full = dict(full_model().state_dict())
    for name, t in full.items():
        assert torch.equal(art.tensor(name), t), name


def test_each_rank_reads_its_own_slice(collective_run):
    _, reports = collective_run
    for rank, rep in enumerate(reports):
        slices = rep["slices"]
        assert sorted(slices) == sorted(EXPECTED)
        assert all(ok for _, ok in slices.values()), (rank, slices)
        # uneven chunks, by hand: vocabulary 11 -> 6 + 5 rows; FF 45 -> 23 + 22
        assert slices["emb.weight"][0] == [[6, D], [5, D]][rank]
        assert slices["head.weight"][0] == [[6, D], [5, D]][rank]
        assert slices["block.mlp.down.weight"][0] == [[D, 23], [D, 22]][rank]
        assert slices["block.mlp.up.bias"][0] == [[23], [22]][rank]
        assert slices["block.attn.o.bias"][0] == [D]
        assert slices["pos"][0] == [D]


def test_collective_sharded_export(collective_run):
    """max_shard_bytes=1000 collectively: the shards follow the rule (file order: item size desc, then key; a
    tensor opens a new shard when the current one holds data and would pass 1000 bytes), and every stored tensor
    equals the full model's."""
    from safetensors import safe_open
    out, reports = collective_run
    path = os.path.join(out, "art-sharded")
    full = {k: v for k, v in full_model().state_dict().items()}
    # the rule by hand over the full model's tensors
    order = sorted(full, key=lambda k: (-full[k].element_size(), k))
    shards, used = [[]], 0
    for k in order:
        n = full[k].numel() * full[k].element_size()
        if shards[-1] and used + n > 1000:
            shards.append([])
            used = 0
        shards[-1].append(k)
        used += n
    names = [f"weights-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    assert sorted(os.listdir(path)) == sorted(names + ["manifest.msgpack"])
    for name, keys in zip(names, shards):
        with safe_open(os.path.join(path, name), "pt") as f:
            assert list(f.keys()) == sorted(keys) or sorted(f.keys()) == sorted(keys)
            for k in keys:
                assert torch.equal(f.get_tensor(k), full[k]), k
    assert reports[0]["sharded_summary"] == reports[1]["sharded_summary"]


def test_collective_sharded_export_is_byte_identical_to_single_process(collective_run, tmp_path):
    import fxlower
    out, _ = collective_run
    fxlower.export(full_model(), tmp_path / "ref", placements=placements_kwarg(), max_shard_bytes=1000)
    got = _files(os.path.join(out, "art-sharded"))
    assert len(got) > 2 and got == _files(str(tmp_path / "ref"))
    art = fxlower.load(os.path.join(out, "art-sharded"), verify=True)
    assert len({t.file for t in art.manifest.tensors}) == len(got) - 1


def test_an_exception_on_one_rank_fails_every_rank_naming_it(collective_run):
    _, reports = collective_run
    for rep in reports:
        msg = rep["fail"]
        assert "phase write" in msg and "rank 1: OSError: [Errno 28] No space left on device" in msg, msg
        assert "rank 0:" not in msg
        assert rep["fail_left"] == []
        assert rep["differ"] == ("collective export: ranks [1] traced a different graph or tensor table than rank 0 "
                                 "(names, shapes, dtypes, placements or tied weights differ); every rank must export "
                                 "the same model. Nothing was published")


def test_killed_rank_leaves_nothing_and_the_other_rank_fails_in_time(runs):
    out, results = runs["kill"]
    assert results[1].returncode == -signal.SIGKILL, results[1].stdout[-3000:]
    assert results[0].returncode == 0, results[0].stdout[-3000:]
    rep = json.load(open(os.path.join(out, "rank0.json")))
    assert rep["result"] == "ExportError"
    # gloo sees the dead peer at once: its words depend on which socket call noticed it first
    assert re.fullmatch(r"collective export, phase write: rank 0 lost contact with the other ranks \(.*Connection "
                        r"(closed|reset) by peer.*\): a rank died, or did not reach this phase within 20 s \(export's "
                        r"timeout=\)\. Nothing was published", rep["message"]), rep["message"]
    assert rep["seconds"] < 20 + 5
    assert sorted(os.listdir(out)) == ["rank0.json"]  # no artifact, no temporary directory


@pytest.fixture
def world_of_one(tmp_path):
    """A process group of one rank in this process (gloo over a file store), torn down after the test."""
    import torch.distributed as dist
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import DeviceMesh
        yield DeviceMesh("cpu", [0])
    finally:
        dist.destroy_process_group()


def test_world_of_one_is_byte_identical_and_restores_nothing_it_should_not(world_of_one, tmp_path):
    import fxlower
    from torch.distributed.tensor.parallel import parallelize_module
    model = full_model()
    parallelize_module(model, world_of_one, tp_plan())
    orphan = tmp_path / "art.fxlower-tmp-0123456789abcdef"  # left by an export that was killed
    orphan.mkdir()
    (orphan / "weights.safetensors").write_bytes(b"partial")
    s = fxlower.export(model, tmp_path / "art")
    assert s.removed_temporaries == (str(orphan),)
    ref = {name: ((1,), p) for name, (_, p) in placements_kwarg().items()}
    fxlower.export(full_model(), tmp_path / "ref", placements=ref)
    assert _files(str(tmp_path / "art")) == _files(str(tmp_path / "ref"))
    assert s.tensors == len(EXPECTED)
    with pytest.raises(fxlower.ArtifactExistsError):
        fxlower.export(full_model(), tmp_path / "art")  # single-process export: the path exists
    with pytest.raises(fxlower.ExportError, match=r"phase plan on rank 0: ArtifactExistsError: .*art exists"):
        fxlower.export(model, tmp_path / "art")
    assert sorted(os.listdir(tmp_path)) == ["art", "ref", "store"]


def test_collective_refuses_what_it_cannot_do(world_of_one, tmp_path):
    import fxlower
    from torch.distributed.tensor import DTensor, Partial
    from torch.distributed.tensor.parallel import parallelize_module
    model = full_model()
    parallelize_module(model, world_of_one, tp_plan())
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"^golden= is not supported by a collective export"):
        fxlower.export(model, tmp_path / "a", (ids,), golden=True)
    with pytest.raises(ValueError, match=r"^example_inputs are not supported by a collective export"):
        fxlower.export(model, tmp_path / "a", (ids,))
    with pytest.raises(ValueError, match=r"^core=True is not supported by a collective export"):
        fxlower.export(model, tmp_path / "a", core=True)
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds or None, got 0"):
        fxlower.export(model, tmp_path / "a", timeout=0)
    with pytest.raises(ValueError, match=r"^placements= and weights_from= are for a single-process export"):
        fxlower.export(model, tmp_path / "a", placements={})
    # a pending reduction is no layout
    model.norm.weight = nn.Parameter(DTensor.from_local(torch.ones(D), world_of_one, [Partial()]))
    with pytest.raises(fxlower.ExportError, match=r"phase plan on rank 0: ExportError: tensor 'norm.weight' is "
                                                  r"Partial\(sum\) on mesh dimension 0: a pending reduction"):
        fxlower.export(model, tmp_path / "a")
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_the_documented_torchrun_script_runs(runs):
    out, (result,) = runs["doc"]
    assert result.returncode == 0, result.stdout[-3000:]
    # the two ranks print to one pipe: an unbuffered print writes its text and its newline separately, so one
    # rank's line may be glued to the other's; each text itself is one write, whole
    found = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"rank (\d): 32 tensors, 48\.0 MiB written in [0-9.]+ s; local shards 24\.0 MiB; peak RSS during export "
        r"\+([0-9.]+) MiB", result.stdout)}
    assert sorted(found) == [0, 1], result.stdout[-3000:]
    for r, rss in found.items():
        assert rss < 24.0, (r, rss)  # well under the rank's own shards, let alone the 48 MiB model
    for text in ("layers.0.o.weight [512, 512] [2] [('shard', 1)]", "layers.0.q.weight [('shard', 0)]",
                 "layers.0.norm.weight None"):
        assert text in result.stdout, result.stdout[-3000:]
    assert result.stdout.index("layers.0.o.weight") < result.stdout.index("layers.0.q.weight") < \
        result.stdout.index("layers.0.norm.weight")
    assert sorted(os.listdir(os.path.join(out, "tp.fxl"))) == ["manifest.msgpack", "weights.safetensors"]


def test_a_stuck_rank_times_out_on_the_others_and_leaves_nothing(runs):
    """Rank 1 stops for HANG seconds inside its first write; rank 0 gives up after timeout=HANG_TIMEOUT, and rank 1,
    when it resumes, finds rank 0 gone: both raise, nothing is left."""
    out, results = runs["hang"]
    assert [r.returncode for r in results] == [0, 0], results[1].stdout[-3000:]
    reps = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(WORLD)]
    assert reps[0]["result"] == "ExportError"
    assert reps[0]["message"].startswith("collective export, phase write: rank 0 lost contact with the other "
                                         "ranks (Timed out"), reps[0]["message"]
    assert "within 2 s (export's timeout=)" in reps[0]["message"]
    assert HANG_TIMEOUT <= reps[0]["seconds"] < HANG_TIMEOUT + 3
    assert reps[1]["result"] == "ExportError" and "phase write: rank 1 lost contact" in reps[1]["message"]
    assert sorted(os.listdir(out)) == ["rank0.json", "rank1.json"]


if __name__ == "__main__":
    _rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
