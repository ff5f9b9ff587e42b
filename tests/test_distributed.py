"""Multi-process training on the CPU with gloo: two processes started as torchrun would start them
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), each bounded in time so a hang fails.

Checked against one process holding the global batch: the NT-Xent loss and its gradients (with and
without pseudo-label masking, and the parameter gradients after DDP's averaging), the debiased and
hard-negative losses and their gradients against their float64 reference, the sampler's
global batches and the ranks' slices, and a short pretraining run (only rank 0 writes, one
checkpoint, loadable into a fresh model, resumable with one process).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gsimclr.distributed import World, current_world
from gsimclr.errors import UserError
from gsimclr.loss.ntxent import nt_xent

WORLD = 2
TIMEOUT_S = 90
TEMPERATURE = 0.5


# ------------------------------------------------------------------------------------ launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(WORLD)})
    torch.set_num_threads(1)
    fn(rank, *args)


def _launch(fn, *args, timeout: float = TIMEOUT_S) -> None:
    """``fn(rank, *args)`` in WORLD spawned processes; an error in one fails the test, and so does
    a run that has not finished after ``timeout`` seconds (the processes are killed)."""
    ctx = mp.start_processes(_entry, args=(fn, _free_port(), args), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{fn.__name__} did not finish in {timeout} s on {WORLD} processes (a hang?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)


def _results(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------------- (a) NT-Xent over ranks

N, DIM = 12, 8
CASES = {"two views": (2, "none"), "two views, masked": (2, "mask"), "three views, masked": (3, "mask"),
         "two views, attract": (2, "attract"), "three views, attract": (3, "attract")}


def _case(n_views: int, guidance: str):
    g = torch.Generator().manual_seed(n_views * 10 + (guidance != "none"))
    views = torch.randn(n_views, N, DIM, generator=g)
    labels = torch.randint(0, 4, (N,), generator=g) if guidance != "none" else None
    return views, labels


def _ddp_inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, N, DIM, generator=g), torch.randint(0, 3, (N,), generator=g)


def _linear() -> torch.nn.Linear:
    torch.manual_seed(11)
    return torch.nn.Linear(DIM, 6)


def _worker(rank: int, out: str, run_dir: str) -> None:
    """Everything the two processes check, in one launch (starting processes is the slow part)."""
    from gsimclr.distributed import close_world, init_world

    world = init_world("cpu")  # from the torchrun variables, as `gsimclr pretrain` does
    assert world == World(rank, WORLD, rank) and current_world() == world
    result = _loss_part(rank)
    result["samplers"] = _sampler_batches(world)
    result["moco"] = _moco_part(rank)
    result.update(_pretrain_part(rank, run_dir))
    close_world()
    torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The results of :func:`_worker` on each rank, and the run folder of its pretraining."""
    base = tmp_path_factory.mktemp("distributed")
    (base / "results").mkdir()
    _launch(_worker, str(base / "results"), str(base / "run"))
    return _results(base / "results"), base / "run"


def _loss_part(rank: int) -> dict:
    n = N // WORLD
    mine = slice(rank * n, (rank + 1) * n)
    result = {}
    for name, (n_views, guidance) in CASES.items():
        views, labels = _case(n_views, guidance)
        z = views[:, mine].clone().requires_grad_()
        loss = nt_xent(z, TEMPERATURE, None if labels is None else labels[mine], guidance=guidance)
        loss.backward()
        result[name] = (loss.detach(), z.grad)
    # the whole chain of a training step: a model in DDP, the loss with gathered negatives, backward
    net = _linear()
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    x, labels = _ddp_inputs()
    z = ddp(x[:, mine].reshape(-1, DIM)).view(2, n, -1)
    nt_xent(z, TEMPERATURE, labels[mine]).backward()
    result["ddp"] = {k: p.grad.clone() for k, p in net.named_parameters()}
    result["corrections"] = _corrections_part(mine)
    return result


def _reference_losses(views: torch.Tensor, labels: torch.Tensor | None, guidance: str = "mask") -> torch.Tensor:
    """Per-anchor NT-Xent of one process holding the global batch, written out loop by loop:
    (V, N), each the mean over the anchor's positives."""
    n_views, n, _ = views.shape
    z = torch.nn.functional.normalize(views.double(), dim=-1).reshape(n_views * n, -1)
    image = torch.arange(n).repeat(n_views)
    out = torch.zeros(n_views * n, dtype=torch.float64)
    for a in range(n_views * n):
        sims = z @ z[a] / TEMPERATURE
        same_label = [labels is not None and image[k] != image[a] and labels[image[k]] == labels[image[a]]
                      for k in range(n_views * n)]
        keep = [k for k in range(n_views * n) if k != a and not (same_label[k] and guidance == "mask")]
        log_denominator = torch.logsumexp(sims[keep], dim=0)
        positives = [k for k in range(n_views * n) if k != a and (
            image[k] == image[a] or (same_label[k] and guidance == "attract"))]
        out[a] = -(sims[positives] - log_denominator).mean()
    return out.view(n_views, n)



@pytest.mark.parametrize("case", list(CASES))
def test_loss_over_ranks_matches_one_process(two_processes, case):
    n_views, guidance = CASES[case]
    views, labels = _case(n_views, guidance)
    z = views.clone().requires_grad_()
    single = nt_xent(z, TEMPERATURE, labels, guidance=guidance)  # one process, the global batch
    single.backward()
    single = single.detach()
    reference = _reference_losses(views, labels, guidance)
    assert float(single) == pytest.approx(float(reference.mean()), rel=1e-5)
    n = N // WORLD
    losses = []
    for rank, result in enumerate(two_processes[0]):
        loss, grad = result[case]
        mine = slice(rank * n, (rank + 1) * n)
        # each rank: the mean over its own anchors, with every rank's images as candidates
        assert float(loss) == pytest.approx(float(reference[:, mine].mean()), rel=1e-5)
        local_only = nt_xent(views[:, mine], TEMPERATURE, None if labels is None else labels[mine], gather=False,
                             guidance=guidance)
        assert not math.isclose(float(loss), float(local_only), rel_tol=1e-3)  # the gather matters here
        # the gather's backward sums every rank's share: R x the single-process gradient of these rows
        torch.testing.assert_close(grad / WORLD, z.grad[:, mine], rtol=1e-4, atol=1e-6)
        losses.append(float(loss))
    assert np.mean(losses) == pytest.approx(float(single), rel=1e-5)


def test_ddp_parameter_gradients_match_one_process(two_processes):
    net = _linear()
    x, labels = _ddp_inputs()
    nt_xent(net(x.reshape(-1, DIM)).view(2, N, -1), TEMPERATURE, labels).backward()
    for result in two_processes[0]:
        for name, p in net.named_parameters():
            torch.testing.assert_close(result["ddp"][name], p.grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------- (a') the debiased and hard-negative losses over ranks

CORRECTIONS = {"debiased": ("debiased", 2, "none", 0.1, None), "debiased, masked": ("debiased", 2, "mask", 0.3, None),
               "debiased, three views": ("debiased", 3, "none", 0.2, None),
               "hard-negative": ("hard-negative", 2, "none", 0.1, 1.0),
               "hard-negative, masked": ("hard-negative", 2, "mask", 0.1, 0.5),
               "hard-negative, three views, masked": ("hard-negative", 3, "mask", 0.2, 2.0)}


def _correction_loss(kind: str, z: torch.Tensor, labels, guidance: str, tau_plus: float, beta, gather: bool = True):
    from gsimclr.loss.debiased import debiased_loss
    from gsimclr.loss.hard_negative import hard_negative_loss

    if kind == "debiased":
        return debiased_loss(z, TEMPERATURE, tau_plus, labels, gather=gather, guidance=guidance)
    return hard_negative_loss(z, TEMPERATURE, tau_plus, beta, labels, gather=gather, guidance=guidance)


def _corrections_part(mine: slice) -> dict:
    """Each rank's loss and gradient of its share, in float32 and float64 (negatives gathered)."""
    result = {}
    for name, (kind, n_views, guidance, tau_plus, beta) in CORRECTIONS.items():
        views, labels = _case(n_views, guidance)
        for dtype in (torch.float32, torch.float64):
            z = views[:, mine].to(dtype).clone().requires_grad_()
            loss = _correction_loss(kind, z, None if labels is None else labels[mine], guidance, tau_plus, beta)
            loss.backward()
            result[name, dtype] = (loss.detach(), z.grad)
    return result


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CORRECTIONS))
def test_debiased_and_hard_negative_over_ranks_match_the_float64_reference(two_processes, case, dtype):
    """Each rank's loss is the float64 reference's mean over its own anchors, with the other rank's
    images as negatives, and its gradient (x 1/R, the gather's sum) the reference's gradient of its
    rows: to 1e-10 in float64, in float32 to 1e-6 (loss) and 1e-5 (gradients)."""
    from contrastive_reference import reference_losses

    kind, n_views, guidance, tau_plus, beta = CORRECTIONS[case]
    views, labels = _case(n_views, guidance)
    ref_views = views.double().requires_grad_()
    per_anchor, _ = reference_losses(ref_views, TEMPERATURE, tau_plus, beta if kind == "hard-negative" else None,
                                     None if labels is None else labels.tolist())
    per_anchor.mean().backward()
    tol, grad_tol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-6, 1e-5)
    n = N // WORLD
    for rank, result in enumerate(two_processes[0]):
        loss, grad = result["corrections"][case, dtype]
        mine = slice(rank * n, (rank + 1) * n)
        assert float(loss) == pytest.approx(per_anchor[:, mine].mean().item(), rel=tol, abs=tol)
        torch.testing.assert_close(grad.double() / WORLD, ref_views.grad[:, mine], rtol=grad_tol, atol=grad_tol)
        local_only = _correction_loss(kind, views[:, mine], None if labels is None else labels[mine], guidance,
                                      tau_plus, beta, gather=False)
        assert not math.isclose(float(loss), float(local_only), rel_tol=1e-3)  # the gather matters here


# ------------------------------------------------------------------------------ (b) the samplers

SAMPLER_N, SAMPLER_BATCH, SAMPLER_SEED = 120, 12, 3


def _sampler_labels() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 15, SAMPLER_N)


def _samplers(rank: int, size: int):
    from gsimclr.guidance.samplers import GreedyBatchSampler, RandomBatchSampler, SpreadBatchSampler

    return {"guided": GreedyBatchSampler(_sampler_labels(), SAMPLER_BATCH, SAMPLER_SEED, rank=rank, world_size=size),
            "spread": SpreadBatchSampler(_sampler_labels(), SAMPLER_BATCH, SAMPLER_SEED, rank=rank, world_size=size),
            "random": RandomBatchSampler(SAMPLER_N, SAMPLER_BATCH, SAMPLER_SEED, rank=rank, world_size=size)}


def _sampler_batches(world: World) -> dict:
    batches = {}
    for name, sampler in _samplers(world.rank, world.size).items():
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches[name, epoch] = [np.asarray(b) for b in sampler]
            batches[name, epoch, "len"] = len(sampler)
    return batches


@pytest.mark.parametrize("name", ["guided", "spread", "random"])
def test_samplers_are_global(two_processes, name):
    per_rank = [result["samplers"] for result in two_processes[0]]
    labels = _sampler_labels()
    single = _samplers(0, 1)[name]
    orders = []
    for epoch in (0, 1):
        single.set_epoch(epoch)
        expected = single.global_batches()  # one process, same seed and epoch
        steps = [r[name, epoch] for r in per_rank]
        assert len(steps[0]) == len(steps[1]) == len(expected) == per_rank[0][name, epoch, "len"]
        for i, global_batch in enumerate(expected):
            parts = [s[i] for s in steps]
            assert all(len(p) == SAMPLER_BATCH // WORLD for p in parts)
            assert not set(parts[0]) & set(parts[1])                          # disjoint slices
            assert sorted(np.concatenate(parts)) == sorted(global_batch)     # same shuffle on every rank
            if name == "guided":
                cap = math.ceil(SAMPLER_BATCH / len(np.unique(labels)))
                counts = np.bincount(labels[np.concatenate(parts)])
                assert counts.max() <= cap or single.relaxed_images  # the global batch keeps the constraint
            if name == "spread":                                              # 120 images of 15 labels, 10 batches
                assert np.bincount(labels[np.concatenate(parts)]).max() <= -(-np.bincount(labels).max() // 10)
        seen = np.concatenate([b for s in steps for b in s])
        assert sorted(seen.tolist()) == list(range(SAMPLER_N))              # every image once per epoch
        orders.append(np.concatenate(steps[0]))
    assert not np.array_equal(orders[0], orders[1])                          # reshuffled each epoch


def test_batch_size_not_divisible_by_processes_is_a_user_error():
    from gsimclr.config import load_config
    from gsimclr.training.pretrain import make_sampler

    cfg = load_config("digits-quick", {"batch_size": 63, "device": "cpu"})
    with pytest.raises(UserError, match="not divisible by the 2 processes") as info:
        make_sampler(cfg, 256, None, World(0, 2))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------- MoCo's queue over ranks

QUEUE = 10


def _moco_inputs():
    g = torch.Generator().manual_seed(5)
    return (torch.randn(N, DIM, generator=g), torch.randn(N, DIM, generator=g), torch.randint(0, 3, (N,), generator=g),
            torch.nn.functional.normalize(torch.randn(QUEUE, DIM, generator=g), dim=1))


def _moco_queue(keys_before: torch.Tensor):
    from gsimclr.methods.moco import KeyQueue

    queue = KeyQueue(QUEUE, DIM)
    queue.push(keys_before, torch.arange(QUEUE) % 3, torch.arange(100, 100 + QUEUE))
    return queue


def _moco_part(rank: int) -> dict:
    """Each rank's queries against the queue, then its keys enqueued (gathered from both ranks first)."""
    from gsimclr.methods.moco import MoCoLoss

    q, k, labels, before = _moco_inputs()
    n = N // WORLD
    mine = slice(rank * n, (rank + 1) * n)
    queue = _moco_queue(before)
    loss = MoCoLoss(queue, TEMPERATURE, "mask")(q[mine], k[mine], labels[mine], torch.arange(N)[mine])
    return {"loss": loss.detach(), "queue": {name: b.clone() for name, b in queue.named_buffers()}}


def test_moco_keys_are_gathered_before_enqueueing(two_processes):
    """Every rank ends with the queue one process holding the global batch would have, and the mean
    of the ranks' losses is that process's loss."""
    from gsimclr.methods.moco import MoCoLoss

    results, _ = two_processes
    q, k, labels, before = _moco_inputs()
    queue = _moco_queue(before)
    expected = MoCoLoss(queue, TEMPERATURE, "mask")(q, k, labels, torch.arange(N))
    for r in results:
        for name, buffer in queue.named_buffers():
            assert torch.allclose(r["moco"]["queue"][name].float(), buffer.float(), atol=1e-6), name
    assert float(sum(r["moco"]["loss"] for r in results) / WORLD) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------- re-clustering waits on the long-timeout barrier

SHORT_TIMEOUT_S = 3


def _slow_recluster_worker(rank: int, out: str) -> None:
    """The default group's collectives time out after SHORT_TIMEOUT_S; rank 0's clustering takes
    longer: the other rank must wait on the long-timeout barrier, not in the default group."""
    from datetime import timedelta
    from types import SimpleNamespace

    import torch.distributed as dist

    import gsimclr.training.reclustering as reclustering
    from gsimclr.config import load_config
    from gsimclr.distributed import close_world, init_world
    from gsimclr.guidance.sources import PseudoLabels

    dist.init_process_group("gloo", timeout=timedelta(seconds=SHORT_TIMEOUT_S))
    init_world("cpu")

    def slow_clustering(*args, **kwargs):
        time.sleep(3 * SHORT_TIMEOUT_S)
        return PseudoLabels(np.arange(6) % 2, None, {"k": 2})

    reclustering.encoder_pseudo_labels = slow_clustering
    cfg = load_config(None, {"epochs": 3, "recluster_warmup": 1, "k": 2, "batch_size": 2})
    received = []
    trainer = SimpleNamespace(model=None, data=np.zeros(6), device=torch.device("cpu"), out_dir=Path(out) / f"r{rank}",
                              set_pseudo_labels=received.append)
    metrics = reclustering.EncoderReclustering.from_config(cfg, 6).cluster(trainer, 1)
    close_world()
    torch.save({"labels": received[0], "metrics": metrics}, Path(out) / f"rank{rank}.pt")


def test_ranks_wait_for_rank0s_reclustering_on_the_long_barrier(tmp_path):
    _launch(_slow_recluster_worker, str(tmp_path))
    for r in _results(tmp_path):
        assert r["labels"].tolist() == [0, 1, 0, 1, 0, 1] and r["metrics"] == {"k": 2, "epoch": 1}


# --------------------------------------------------------------------------- (c) a pretraining run

SUBSET = 128


def _pretrain_setup(epochs: int):
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split

    cfg = load_config("digits-quick", {"epochs": epochs, "batch_size": 64, "device": "cpu", "head_dims": [32, 16],
                                       "warmup_epochs": 0, "guidance": "mask"})
    data = load_split("digits", image_size=16).subset(np.arange(SUBSET))
    return cfg, data, data.labels  # the true digit labels stand in for pseudo labels


def _record_writes(root: str, events: list) -> None:
    """An audit hook that records every file-system change under ``root`` made by this process."""
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & write_flags)
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            path, writes = args[0], True
        else:
            return
        if writes and isinstance(path, (str, os.PathLike)) and (
                os.path.abspath(path) + os.sep).startswith(root + os.sep):
            events.append((event, str(path)))

    sys.addaudithook(hook)


def _pretrain_part(rank: int, run_dir: str) -> dict:
    from gsimclr.pipeline import stage_pretrain

    cfg, data, pseudo = _pretrain_setup(epochs=1)
    events: list = []
    if rank != 0:
        _record_writes(os.path.abspath(run_dir), events)
    model = stage_pretrain(cfg, data, Path(run_dir), "gsimclr", pseudo)
    return {"events": events, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def test_pretraining_on_two_processes_then_resume_on_one(two_processes):
    from safetensors import safe_open

    from gsimclr.checkpoint import load_checkpoint, read_meta
    from gsimclr.pipeline import stage_pretrain
    from gsimclr.training.pretrain import build_model

    results, run_dir = two_processes
    assert results[1]["events"] == []                                           # rank 1 wrote nothing
    checkpoints = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.safetensors"))
    assert checkpoints == [Path("gsimclr/checkpoint.safetensors")]               # exactly one, by rank 0
    stage = run_dir / "gsimclr"
    assert not list(stage.rglob("*.tmp"))
    assert len(list((stage / "tensorboard").glob("events.*"))) == 1
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and np.isfinite(records[0]["loss"])
    assert (stage / "timing.json").exists()
    ckpt = stage / "checkpoint.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        assert not any(".module." in k or k.startswith("module.") for k in f.keys())
    cfg, data, pseudo = _pretrain_setup(epochs=2)
    fresh = build_model(cfg)
    assert load_checkpoint(ckpt, fresh)["epoch"] == 1                           # strict load into a fresh model
    saved = fresh.state_dict()
    for key, value in results[0]["state"].items():                             # rank 0's model, saved
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    for key, _ in fresh.named_parameters():                                   # DDP kept the weights identical
        torch.testing.assert_close(results[1]["state"][key], saved[key], rtol=0, atol=0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads are several times slower on a busy 2-core machine
    try:
        stage_pretrain(cfg, data, run_dir, "gsimclr", pseudo, resume=True)      # one process continues
    finally:
        torch.set_num_threads(threads)
    assert current_world() == World()
    assert read_meta(ckpt)["epoch"] == 2
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


# ------------------------------------------------------------------------------ (d) under torchrun


def _failure(done) -> str:
    """What a failed torchrun printed, head and tail: the rank that failed first is often not the last to
    print (the others then fail on the closed connection)."""
    text = done.stdout[-1500:] + "\n--- stderr ---\n" + done.stderr
    return text if len(text) <= 7000 else text[:4000] + "\n...\n" + text[-3000:]


def _torchrun(args: list[str], cwd: Path, nproc: int = WORLD) -> "subprocess.CompletedProcess[str]":
    """``torchrun --standalone`` (a free port of its own) in a session of its own, so that on a
    timeout the agent and its workers are all killed."""
    import signal
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "gsimclr", *args]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} did not finish in {TIMEOUT_S} s (a hang?)")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_cli_pretrain_under_torchrun(tmp_path):
    from PIL import Image

    images = tmp_path / "images"  # a small unlabelled image folder keeps the run short
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (128, 16, 16, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(images / f"{i:03d}.png")
    options = ["--preset", "digits-quick", "--data", str(images), "--epochs", "1", "--image-size", "16",
               "--head-dims", "32,16", "--device", "cpu"]
    done = _torchrun(["pretrain", *options, "--batch-size", "64"], tmp_path)
    assert done.returncode == 0, _failure(done)
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1                                 # every process used rank 0's default folder name
    assert done.stdout.count("checkpoint: ") == 1             # only rank 0 prints
    assert sorted(p.name for p in run_dirs[0].rglob("*.safetensors")) == ["checkpoint.safetensors"]
    records = (run_dirs[0] / "simclr" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in records] == [1]


def test_torchrun_with_one_process_matches_a_plain_run(tmp_path):
    from safetensors.torch import load_file

    from gsimclr.cli import main

    options = ["pretrain", "--preset", "digits-quick", "--train-limit", "256", "--epochs", "2", "--batch-size", "64",
               "--head-dims", "32,16", "--device", "cpu"]
    done = _torchrun([*options, "--out", str(tmp_path / "torchrun")], tmp_path, nproc=1)
    assert done.returncode == 0, _failure(done)
    assert main([*options, "--out", str(tmp_path / "plain")]) == 0
    a = load_file(tmp_path / "torchrun" / "simclr" / "checkpoint.safetensors")
    b = load_file(tmp_path / "plain" / "simclr" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_global_batch_must_split_over_the_processes(monkeypatch, capsys):
    import gsimclr.distributed
    from gsimclr.cli import main

    monkeypatch.setattr(gsimclr.distributed, "init_world", lambda device: World(0, 2))  # as under torchrun
    assert main(["pretrain", "--preset", "digits-quick", "--batch-size", "63", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == ("gsimclr: error: --batch-size 63 is the global batch and must be divisible "
                                       "by the 2 processes\n")


def test_sync_batch_norm_conversion_is_undone_after_training():
    from gsimclr.distributed import convert_sync_batch_norm
    from gsimclr.models.simclr import SimCLRModel

    model = SimCLRModel.build("paper_resnet", [32, 16], head_batch_norm=True, n_blocks=0)
    kinds = {name: type(m) for name, m in model.named_modules()}
    tensors = {k: v.data_ptr() for k, v in model.state_dict().items()}
    parameters = [id(p) for p in model.parameters()]
    assert any(issubclass(kind, torch.nn.modules.batchnorm._BatchNorm) for kind in kinds.values())
    restore = convert_sync_batch_norm(model)
    synced = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(synced) == sum(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds.values())
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == tensors   # same keys, same tensors
    restore()
    assert {name: type(m) for name, m in model.named_modules()} == kinds
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == tensors
    assert [id(p) for p in model.parameters()] == parameters                     # the optimizer's parameters
