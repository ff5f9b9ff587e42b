"""MoCo (methods/moco.py): its loss against lightly's memory-bank NT-Xent and a brute-force loop (with
guidance on the queue), the queue's ring, the queue diagnostics, exact resume, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gsimclr.cli import main
from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.errors import UserError
from gsimclr.methods import METHODS
from gsimclr.methods.moco import KeyQueue, MoCoLoss, queue_size
from gsimclr.tracking import read_metrics
from gsimclr.training.pretrain import build_pretrainer, pretrain

B, K, D, T = 8, 32, 6, 0.2


def _filled_queue(seed: int = 0, labels: bool = False) -> KeyQueue:
    g = torch.Generator().manual_seed(seed)
    queue = KeyQueue(K, D)
    keys = torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=1)
    queue.push(keys, torch.randint(0, 3, (K,), generator=g) if labels else None, torch.arange(100, 100 + K))
    return queue


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randint(0, 3, (B,), generator=g)


def test_loss_and_queue_match_lightly_memory_bank():
    lightly_loss = pytest.importorskip("lightly.loss")
    queue = _filled_queue()
    theirs = lightly_loss.NTXentLoss(temperature=T, memory_bank_size=(K, D))
    theirs.memory_bank.bank = queue.keys.clone()
    theirs.memory_bank.bank_ptr.zero_()
    ours = MoCoLoss(queue, T)
    for step in range(K // B + 2):                     # past a full turn of the ring
        q, k, _ = _batch(step + 1)
        q.requires_grad_(True)
        expected = theirs(q, k)
        got = ours(q, k, index=torch.arange(B) + step * B)
        assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
        assert torch.allclose(queue.keys, theirs.memory_bank.bank, atol=1e-6)


def _loop_loss(q, k, queue: KeyQueue, labels, guidance):
    """One query at a time: -mean over its positives of log(exp(pos/t) / sum over candidates)."""
    q, k = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=1)
    losses = []
    for i in range(len(q)):
        cands = [(float(q[i] @ k[i]) / T, True)]
        for j in range(len(queue.keys)):
            if queue.index[j] < 0:
                continue
            same = labels is not None and int(queue.labels[j]) == int(labels[i])
            if same and guidance == "mask":
                continue
            cands.append((float(q[i] @ queue.keys[j]) / T, same and guidance == "attract"))
        logits = torch.tensor([c[0] for c in cands], dtype=torch.float64)
        log_p = logits - torch.logsumexp(logits, 0)
        positive = torch.tensor([c[1] for c in cands])
        losses.append(-float(log_p[positive].mean()))
    return float(np.mean(losses))


@pytest.mark.parametrize("guidance", ["none", "mask", "attract"])
def test_guidance_reaches_the_queue(guidance):
    queue = _filled_queue(labels=True)
    q, k, labels = _batch()
    loss = MoCoLoss(queue, T, guidance)(q, k, labels, update=False)
    assert float(loss) == pytest.approx(_loop_loss(q, k, queue, labels, guidance), rel=1e-5)
    if guidance != "none":        # the labels change the loss
        assert float(loss) != pytest.approx(float(MoCoLoss(queue, T)(q, k, labels, update=False)), rel=1e-4)


def test_a_partly_filled_queue_leaves_its_empty_entries_out():
    queue = KeyQueue(K, D)
    q, k, _ = _batch()
    queue.push(torch.nn.functional.normalize(k[:3], dim=1), None, torch.arange(3))
    assert float(MoCoLoss(queue, T)(q, k, update=False)) == pytest.approx(_loop_loss(q, k, queue, None, "none"),
                                                                           rel=1e-5)


def test_queue_ring_keeps_labels_and_relabels_by_image():
    queue = KeyQueue(5, 2)
    for start in (0, 3, 6):
        index = torch.arange(start, start + 3)
        queue.push(torch.ones(3, 2), index % 2, index)
    assert queue.index.tolist() == [5, 6, 7, 8, 4] and int(queue.ptr) == 4
    assert queue.labels.tolist() == [1, 0, 1, 0, 0]
    queue.relabel(torch.arange(10) * 10)                            # new pseudo labels, per image
    assert queue.labels.tolist() == [50, 60, 70, 80, 40]
    queue.push(torch.ones(7, 2), None, torch.arange(20, 27))        # more keys than the queue holds
    assert sorted(queue.index.tolist()) == [22, 23, 24, 25, 26]


def test_queue_pair_diagnostics_match_a_replay():
    recipe = METHODS["gmoco"].parts()
    rng = np.random.default_rng(0)
    classes, pseudo = rng.integers(0, 4, 60), rng.integers(0, 5, 60)
    batches = [rng.permutation(60)[:8] for _ in range(6)]
    start = (np.array([1, 2, 3, -1, -1, -1, -1, -1, -1, -1]), 3)
    stats = recipe.pair_stats(batches, start, pseudo, classes, "mask")
    queue, ptr, same_class, left, own = list(start[0]), start[1], 0, 0, 0
    for batch in batches:
        held = [j for j in queue if j >= 0]
        same_class += sum(classes[i] == classes[j] and i != j for i in batch for j in held)   # other images only
        left += sum(classes[i] == classes[j] and pseudo[i] != pseudo[j] for i in batch for j in held)
        own += sum(i == j for i in batch for j in held)
        for i in batch:
            queue[ptr] = i
            ptr = (ptr + 1) % len(queue)
    assert stats["class_pairs_queue"] == pytest.approx(same_class / 6)
    assert stats["class_pairs_in_loss"] == pytest.approx(left / 6) and left < same_class
    assert own > 0                    # the replay met keys of a batch's own images, left out of the counts
    assert "class_pairs_per_batch" in stats and "class_pairs_floor" in stats   # the batches' own pairs


def _reference_queue_losses(epochs, keys_q, keys_k, labels, size, guidance):
    """An independent float64 MoCo: FIFO arrays of (key, image, label) entries, and per query the InfoNCE
    over its key and the entries of other images (mask: other labels only; attract: same-label entries
    of other images are extra positives). Returns each step's loss and how many queries had an older key
    of their own image in the queue."""
    keys, images, entry_labels = np.zeros((0, keys_q[0].shape[1])), np.zeros(0, int), np.zeros(0, int)
    losses, met_own = [], 0
    for batch, q, k in zip(epochs, keys_q, keys_k):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        k = k / np.linalg.norm(k, axis=1, keepdims=True)
        per_query = []
        for i, image in enumerate(batch):
            other = images != image
            met_own += int((~other).any())
            same = (entry_labels == labels[image]) if guidance != "none" else np.zeros_like(other)
            kept = other & ~same if guidance == "mask" else other
            logits = np.concatenate([[q[i] @ k[i]], keys[kept] @ q[i]]) / T
            positive = np.concatenate([[True], same[kept] if guidance == "attract" else np.zeros(kept.sum(), bool)])
            log_p = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
            per_query.append(-log_p[positive].mean())
        losses.append(np.mean(per_query))
        keys, images = np.concatenate([keys, k])[-size:], np.concatenate([images, batch])[-size:]
        entry_labels = np.concatenate([entry_labels, labels[batch]])[-size:]
    return losses, met_own


@pytest.mark.parametrize("guidance", ["none", "mask", "attract"])
def test_a_querys_own_image_is_never_a_negative_over_reshuffled_epochs(guidance):
    """Digits-quick's sizes (1437 images, batch 128, queue 1280): from the second epoch on, reshuffled
    batches meet older keys of their own images in the queue; they are left out of the loss."""
    n, batch, size, dim = 1437, 128, queue_size(_tiny(queue_size=None, batch_size=128), 1437), 8
    assert size == 1280
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    order = [perm[i:i + batch] for perm in (rng.permutation(n) for _ in range(2)) for i in range(0, n, batch)]
    keys_q = [rng.standard_normal((len(b), dim)) for b in order]
    keys_k = [rng.standard_normal((len(b), dim)) for b in order]
    expected, met_own = _reference_queue_losses(order, keys_q, keys_k, labels, size, guidance)
    assert met_own > 100                      # the case this test is about does occur
    loss = MoCoLoss(KeyQueue(size, dim), T, guidance)
    all_labels = torch.from_numpy(labels)
    for step, (b, q, k) in enumerate(zip(order, keys_q, keys_k)):
        index = torch.from_numpy(b)
        got = loss(torch.from_numpy(q).float(), torch.from_numpy(k).float(), all_labels[index], index)
        assert float(got) == pytest.approx(expected[step], rel=1e-5), step


def _tiny(**extra):
    return load_config(None, {"data": "digits", "image_size": 8, "n_blocks": 0, "head_dims": [16, 8],
                              "optimizer": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 16, "queue_size": 48,
                              "warmup_epochs": 1, "device": "cpu", "compile": "off", "tsne_points": 0, **extra})


@pytest.mark.parametrize("method", ["moco", "gmoco"])
def test_resume_restores_queue_and_key_encoder_exactly(tmp_path, method):
    data = load_split("digits", image_size=8).subset(np.arange(96))
    cfg = _tiny(guidance="mask") if method == "gmoco" else _tiny()
    pseudo = np.random.default_rng(0).integers(0, 4, len(data))
    full = pretrain(cfg, data, tmp_path / "full", pseudo, method=method)
    pretrain(cfg, data, tmp_path / "part", pseudo, method=method, stop_after=1)
    pretrain(cfg, data, tmp_path / "part", pseudo, method=method, stop_after=1, resume=True)
    resumed = pretrain(cfg, data, tmp_path / "part", pseudo, method=method, resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert {"queue.keys", "queue.labels", "queue.index", "queue.ptr", "key_head.stages.0.0.weight"} <= set(a)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert int((a["queue.index"] >= 0).sum()) == 48                  # full after the first epoch
    assert not torch.equal(a["key_head.stages.0.0.weight"], a["head.stages.0.0.weight"])   # an average, not a copy
    losses = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    assert [r["loss"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl")] == losses
    records = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert all(r["class_pairs_queue"] > 0 for r in records[1:])
    if method == "gmoco":                                           # masking takes same-label keys out
        assert (pseudo[:, None] == a["queue.labels"].numpy()[None, :]).any()
        assert all(r["class_pairs_in_loss"] < r["class_pairs_queue"] for r in records[1:])


def test_option_checks_and_default_queue():
    data_size = 96
    with pytest.raises(UserError, match="--queue-size 90 with --batch-size 16 needs 106 training images, the data "
                       "has 96: .*; give --queue-size 80 or less"):
        METHODS["moco"].parts().validate(_tiny(queue_size=90), data_size)
    for images, fix in ((100, "give --queue-size 36 or less, or --batch-size 50 or less"), (64, "give --batch-size 32")):
        with pytest.raises(UserError) as error:       # the default queue: no --queue-size the user never gave
            METHODS["moco"].parts().validate(_tiny(queue_size=None, batch_size=64), images)
        assert str(error.value).startswith("--batch-size 64 leaves no room for MoCo's queue") and fix in str(error.value)
        assert "--queue-size 64" not in str(error.value) and "at most 0" not in str(error.value)
    with pytest.raises(UserError, match="--views 3"):
        METHODS["moco"].parts().validate(_tiny(views=3), data_size)
    with pytest.raises(UserError, match="--views-forward separate: G-MoCo always passes"):
        METHODS["gmoco"].parts().validate(_tiny(views_forward="separate"), data_size)
    assert queue_size(_tiny(queue_size=None), data_size) == 80          # whole batches up to 96 - 16
    assert queue_size(_tiny(queue_size=None, batch_size=128), 50_000) == 4096


def test_simclr_takes_any_number_of_views(tmp_path):
    data = load_split("digits", image_size=8).subset(np.arange(64))
    trainer = build_pretrainer(_tiny(views=3, epochs=1), data, tmp_path / "v", torch.device("cpu"))
    batch = torch.from_numpy(data.images[:16])
    assert trainer.views.make(batch).shape[:2] == (3, 16)
    assert torch.isfinite(trainer.step(batch))
    trainer.run()
    assert np.isfinite(read_metrics(tmp_path / "v" / "metrics.jsonl")[0]["loss"])


def test_cli_pretrain_and_run_with_moco(tmp_path, capsys):
    small = ["--data", "digits", "--image-size", "16", "--train-limit", "160", "--test-limit", "64", "--epochs", "1",
             "--batch-size", "32", "--device", "cpu", "--optimizer", "adam", "--lr", "1e-3", "--tsne-points", "0"]
    assert main(["pretrain", *small, "--method", "moco", "--queue-size", "64", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "moco" / "checkpoint.safetensors").exists()
    fast = ["--linear-epochs", "2", "--finetune-head-epochs", "1", "--finetune-epochs", "0", "--supervised-epochs", "1",
            "--knn-k", "5", "--ae-epochs", "1", "--k", "8", "--queue-size", "64"]
    assert main(["run", *small, *fast, "--methods", "simclr,gmoco", "--guidance", "mask",
                 "--out", str(tmp_path / "r")]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(results["methods"]) == {"simclr", "gmoco"}
    table = (tmp_path / "r" / "results.md").read_text()
    assert "G-MoCo" in table and "SimCLR" in table
    capsys.readouterr()
    code = main(["pretrain", *small, "--queue-size", "64", "--out", str(tmp_path / "x")])  # simclr reads no queue
    assert code == 2 and "--queue-size only affects moco, gmoco" in capsys.readouterr().err
