"""Guidance pieces beside the samplers: diagnostics, k-means, pseudo-label sources, re-clustering."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from gsimclr.config import load_config
from gsimclr.data.dataset import ImageData
from gsimclr.errors import UserError
from gsimclr.guidance.diagnostics import epoch_pair_stats, random_pairs, same_label_pairs, spread_floor_pairs
from gsimclr.guidance.kmeans import kmeans, torch_kmeans
from gsimclr.guidance.recluster import ReclusterSchedule
from gsimclr.guidance.samplers import RandomBatchSampler
from gsimclr.guidance.sources import (encoder_pseudo_labels, file_pseudo_labels, load_pseudo_labels,
                                      parse_source)


def _brute_pairs(batches, labels):
    return np.mean([sum(labels[i] == labels[j] for a, i in enumerate(b) for j in b[a + 1:]) for b in batches])


def test_pair_counts_match_a_loop():
    rng = np.random.default_rng(0)
    labels, pseudo = rng.integers(0, 5, 90), rng.integers(0, 7, 90)
    batches = RandomBatchSampler(90, 16, seed=1).epoch_batches()
    assert same_label_pairs(batches, labels) == pytest.approx(_brute_pairs(batches, labels))
    both = labels * 10 + pseudo
    assert same_label_pairs(batches, labels, pseudo) == pytest.approx(_brute_pairs(batches, both))
    stats = epoch_pair_stats(batches, pseudo, labels, guidance="mask")
    assert stats["pseudo_pairs_per_batch"] == pytest.approx(_brute_pairs(batches, pseudo))
    assert stats["class_pairs_in_loss"] == pytest.approx(_brute_pairs(batches, labels) - _brute_pairs(batches, both))
    assert epoch_pair_stats(batches, pseudo, labels, guidance="none")["class_pairs_in_loss"] == \
        stats["class_pairs_per_batch"]
    assert set(epoch_pair_stats(batches, None, labels)) == {"class_pairs_per_batch", "class_pairs_in_loss",
                                                            "class_pairs_random", "class_pairs_floor"}
    assert set(epoch_pair_stats(batches, pseudo, None)) == {"pseudo_pairs_per_batch"}


def test_references_closed_forms():
    """The issue's numbers: CIFAR-10's balanced classes, floor C (B/C)(B/C - 1) / 2 per batch, 14% below
    random at B = 64 and under 2% at B = 512; and the random expectation against simulation."""
    labels = np.repeat(np.arange(10), 5000)
    for batch, gap in ((64, 0.14), (512, 0.02)):
        m, rest = divmod(50000, batch)
        sizes = [batch] * m + ([rest] if rest else [])
        floor, rand = spread_floor_pairs(labels, sizes), random_pairs(labels, sizes)
        b = batch / 10
        assert floor == pytest.approx(10 * b * (b - 1) / 2, rel=0.02)
        assert 1 - floor / rand == pytest.approx(gap, abs=0.01)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 4, 40)
    simulated = np.mean([same_label_pairs(RandomBatchSampler(40, 8, seed=s).epoch_batches(), small)
                         for s in range(400)])
    assert simulated == pytest.approx(random_pairs(small, [8] * 5), rel=0.05)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_kmeans_recovers_blobs_and_is_deterministic(backend):
    x, y = make_blobs(n_samples=3000, centers=12, n_features=16, cluster_std=1.0, random_state=0)
    labels = kmeans(x, 12, seed=3, backend=backend)
    assert adjusted_rand_score(y, labels) > 0.99
    assert np.array_equal(labels, kmeans(x, 12, seed=3, backend=backend))
    assert labels.dtype == np.int64 and labels.shape == (3000,)


def test_torch_kmeans_agrees_with_sklearn_in_chunks(monkeypatch):
    import gsimclr.guidance.kmeans as km

    monkeypatch.setattr(km, "CHUNK_ELEMENTS", 1000)            # many chunks of the distance matrix
    x, _ = make_blobs(n_samples=2000, centers=40, n_features=8, cluster_std=0.5, random_state=1)
    ours = torch_kmeans(torch.from_numpy(x).float(), 40, seed=0, init_sample=500).numpy()
    theirs = kmeans(x, 40, seed=0, backend="sklearn")
    assert adjusted_rand_score(theirs, ours) > 0.95
    assert len(np.unique(ours)) == 40                             # no empty cluster


def _inertia(x, labels):
    return float(sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels)))


def _overlapping_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2.0, (10, 4))
    return np.concatenate([rng.normal(c, 1.0, (60, 4)) for c in centres]).astype(np.float32)


def test_torch_kmeans_honours_n_init():
    """The best of n_init starts (least inertia), as scikit-learn: never worse than one start, better
    on some seeds of overlapping clusters, and as good as scikit-learn's best of as many."""
    x = _overlapping_clusters()
    one = [_inertia(x, kmeans(x, 10, seed=s, backend="torch", n_init=1)) for s in range(3)]
    ten = [_inertia(x, kmeans(x, 10, seed=s, backend="torch", n_init=10)) for s in range(3)]
    assert all(b <= a + 1e-3 for a, b in zip(one, ten)) and any(b < a * 0.99 for a, b in zip(one, ten))
    sklearn = _inertia(x, kmeans(x, 10, seed=0, backend="sklearn", n_init=10))
    assert max(ten) < sklearn * 1.01
    assert np.array_equal(kmeans(x, 10, seed=1, backend="torch", n_init=10),
                          kmeans(x, 10, seed=1, backend="torch", n_init=10))      # deterministic


def test_auto_kmeans_above_the_sklearn_size_runs_every_start(monkeypatch):
    """`auto` picks torch for large N x k (paper-cifar10: 50,000 x 64): it still runs n_init starts."""
    import gsimclr.guidance.kmeans as km

    x = _overlapping_clusters()
    monkeypatch.setattr(km, "SKLEARN_MAX_WORK", 0)
    assert np.array_equal(kmeans(x, 10, seed=0, n_init=10), kmeans(x, 10, seed=0, backend="torch", n_init=10))
    assert _inertia(x, kmeans(x, 10, seed=0, n_init=10)) < _inertia(x, kmeans(x, 10, seed=0, n_init=1))
    with pytest.raises(ValueError, match="n_init"):
        kmeans(x, 10, n_init=0)


def test_kmeans_errors_and_duplicates():
    with pytest.raises(ValueError, match="need at least"):
        kmeans(np.zeros((3, 2)), 4)
    labels = kmeans(np.zeros((20, 2)), 3, backend="torch")        # fewer distinct points than clusters
    assert labels.shape == (20,)


def test_file_source_labels_embeddings_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = make_blobs(n_samples=200, centers=4, n_features=6, random_state=2)
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 6),
                             "label": pa.array(y)}), tmp_path / "emb.parquet")
    assert np.array_equal(file_pseudo_labels(tmp_path / "labels.npy", 200).labels, y)
    for name in ("emb.npy", "emb.parquet"):
        result = file_pseudo_labels(tmp_path / name, 200, k=4, seed=0, truth=y)
        assert result.metrics["ari"] > 0.99 and result.metrics["k"] == 4
    with pytest.raises(UserError, match="k is needed"):
        file_pseudo_labels(tmp_path / "emb.npy", 200)
    with pytest.raises(UserError, match="holds 200 rows for 100 images"):
        file_pseudo_labels(tmp_path / "labels.npy", 100)
    np.save(tmp_path / "floats.npy", np.zeros(200))
    with pytest.raises(UserError, match="integer labels"):
        file_pseudo_labels(tmp_path / "floats.npy", 200)
    (tmp_path / "run" / "pseudo_labels").mkdir(parents=True)
    np.save(tmp_path / "run" / "pseudo_labels" / "pseudo_labels.npy", y)
    assert np.array_equal(load_pseudo_labels(tmp_path / "run", 200), y)
    with pytest.raises(UserError, match="not found"):
        file_pseudo_labels(tmp_path / "missing.npy", 200)



def test_file_source_odd_shapes_are_read_or_refused(tmp_path):
    """A 0-d array is refused (was a TypeError), an (N, 1) integer column is read as labels (was
    clustered as 1-D embeddings into 2 clusters), 1-D float embeddings are refused (L2 normalisation
    leaves only their sign), and labels with a single value are refused (with --guidance mask every
    negative would leave the loss: a zero loss that trains nothing)."""
    y = np.arange(40) % 5
    np.save(tmp_path / "scalar.npy", np.int64(3))
    with pytest.raises(UserError, match="single value"):
        file_pseudo_labels(tmp_path / "scalar.npy", 40, k=5)
    np.save(tmp_path / "column.npy", y.reshape(-1, 1))
    assert np.array_equal(file_pseudo_labels(tmp_path / "column.npy", 40, k=3).labels, y)
    np.save(tmp_path / "emb1.npy", np.random.default_rng(0).random((40, 1)))
    with pytest.raises(UserError, match="one-dimensional embeddings"):
        file_pseudo_labels(tmp_path / "emb1.npy", 40, k=5)
    np.save(tmp_path / "one.npy", np.full(40, 7))
    with pytest.raises(UserError, match="same label"):
        file_pseudo_labels(tmp_path / "one.npy", 40)
    (tmp_path / "text.npy").write_text("0 1 2\n")
    with pytest.raises(UserError, match="not a .npy file"):          # not numpy's advice to unpickle it
        file_pseudo_labels(tmp_path / "text.npy", 40)
    np.save(tmp_path / "negative.npy", y - 10)                  # any integers are labels
    assert file_pseudo_labels(tmp_path / "negative.npy", 40).metrics["k"] == 5

def test_parse_source():
    assert parse_source("autoencoder") == ("autoencoder", None)
    assert parse_source("file:a/b.npy") == ("file", "a/b.npy")
    for bad in ("file", "file:", "encoders", "autoencoder:x"):
        with pytest.raises(UserError, match="--pseudo-labels"):
            parse_source(bad)


def test_encoder_source_clusters_the_encoders_features():
    from gsimclr.models.simclr import SimCLRModel

    rng = np.random.default_rng(0)
    images = np.concatenate([np.full((30, 16, 16, 3), v, np.uint8) for v in (20, 120, 230)])
    images = np.clip(images + rng.integers(-5, 6, images.shape), 0, 255).astype(np.uint8)
    data = ImageData(images, labels=np.repeat(np.arange(3), 30))
    torch.manual_seed(0)
    model = SimCLRModel.build("paper_resnet", [16, 8], n_blocks=0)
    model.train()
    result = encoder_pseudo_labels(model, data, 3, 16, torch.device("cpu"), seed=0)
    assert model.training                                          # left in the mode it was in
    assert result.labels.shape == (90,) and result.metrics["nmi"] > 0.9



@pytest.mark.parametrize("normalize", ["none", "imagenet"])
def test_encoder_source_uses_the_training_normalisation(normalize):
    """The features clustered are those of the inputs the encoder trains on (--normalize), not
    always ImageNet-normalised ones."""
    from gsimclr.evaluation.features import extract_features
    from gsimclr.models.simclr import SimCLRModel
    from gsimclr.transforms.augment import NORMALIZATIONS

    rng = np.random.default_rng(0)
    data = ImageData(rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = SimCLRModel.build("paper_resnet", [16, 8], n_blocks=0)
    result = encoder_pseudo_labels(model, data, 4, 16, torch.device("cpu"), seed=0, normalize=normalize)
    mean, std = NORMALIZATIONS[normalize]
    expected = extract_features(model, data, 16, torch.device("cpu"), mean=mean, std=std)["P3"].numpy()
    other = extract_features(model, data, 16, torch.device("cpu"), mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5))["P3"]
    assert np.allclose(result.features, expected) and not np.allclose(result.features, other.numpy())


def test_reclustering_during_training_uses_the_training_normalisation(tmp_path, tiny_overrides, monkeypatch):
    import gsimclr.evaluation.features as features
    from gsimclr.data.sources import load_split
    from gsimclr.training.pretrain import pretrain

    seen = []
    extract = features.extract_features

    def recording(*args, **kwargs):
        seen.append((tuple(kwargs.get("mean", ())), tuple(kwargs.get("std", ()))))
        return extract(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", recording)
    data = load_split("digits", image_size=16).subset(np.arange(128))
    cfg = load_config(None, {**tiny_overrides, "epochs": 2, "pseudo_labels": "encoder", "recluster_warmup": 1,
                             "k": 8, "normalize": "none"})
    pretrain(cfg, data, tmp_path / "g", method="gsimclr")
    assert seen == [((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]


def test_encoder_source_refuses_collapsed_features():
    """Identical features (a collapsed encoder) cluster into one label; with --guidance mask that
    removes every negative and the loss is exactly 0 from then on, silently. Refused instead."""
    from gsimclr.models.simclr import SimCLRModel

    data = ImageData(np.full((40, 16, 16, 3), 100, np.uint8), labels=np.arange(40) % 4)
    torch.manual_seed(0)
    model = SimCLRModel.build("paper_resnet", [16, 8], n_blocks=0)
    with pytest.raises(UserError, match="single cluster"):
        encoder_pseudo_labels(model, data, 4, 16, torch.device("cpu"), seed=0)


def test_file_embeddings_that_are_all_alike_are_refused(tmp_path):
    """Embeddings pointing one way cluster into one label (the --guidance mask zero loss): refused."""
    np.save(tmp_path / "same.npy", np.tile(np.arange(1, 5, dtype=np.float32), (40, 1)))
    with pytest.raises(UserError, match="single cluster"):
        file_pseudo_labels(tmp_path / "same.npy", 40, k=4)

def test_recluster_schedule():
    s = ReclusterSchedule(every=3, warmup=2)
    assert [e for e in range(12) if s.due(e)] == [2, 5, 8, 11]
    assert s.last_refresh(1) is None and s.last_refresh(7) == 5 and s.last_refresh(8) == 8
    assert ReclusterSchedule(every=1, warmup=0).due(0)
    with pytest.raises(ValueError):
        ReclusterSchedule(every=0)


def test_old_guidance_values_are_read_as_their_present_meaning():
    from gsimclr.config import config_from_dict, load_config

    assert load_config(None, {"guidance": "both"}).guidance == "mask"          # guided batches + masking
    assert load_config(None, {"guidance": "batches"}).guidance == "none"       # batches alone: --sampler
    assert config_from_dict({"guidance": "batches"}).guidance == "none"        # a checkpoint of an older run
    with pytest.raises(UserError, match="--guidance must be one of none, mask, attract"):
        load_config(None, {"guidance": "pull"})


def test_resume_uses_the_checkpoints_pseudo_labels_not_a_later_reclustering(tmp_path, tiny_overrides):
    """Re-clustering after epochs 1 and 3, a checkpoint every 2 epochs: a run killed in epoch 4 has
    pseudo_labels.npy from the re-clustering after epoch 3 but a checkpoint of epoch 2, which trained
    with those of epoch 1. Resuming must use those (it used the later ones) and so match the run that
    was never interrupted."""
    import json
    import shutil

    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.training.pretrain import pretrain

    digits_small = load_split("digits", image_size=16).subset(np.arange(192))

    cfg = load_config(None, {**tiny_overrides, "epochs": 4, "pseudo_labels": "encoder", "recluster_warmup": 1,
                             "recluster_every": 2, "checkpoint_every": 2, "k": 20, "guidance": "mask"})
    full = pretrain(cfg, digits_small, tmp_path / "full", method="gsimclr")
    assert json.loads((tmp_path / "full" / "pseudo_labels.json").read_text())["epoch"] == 3
    pretrain(cfg, digits_small, tmp_path / "part", method="gsimclr", stop_after=2)
    for name in ("pseudo_labels.npy", "pseudo_labels.json"):      # the killed run's later re-clustering
        shutil.copy(tmp_path / "full" / name, tmp_path / "part" / name)
    resumed = pretrain(cfg, digits_small, tmp_path / "part", method="gsimclr", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    # a run folder without the checkpoint's labels (older versions) is refused, not resumed with the wrong ones
    pretrain(cfg, digits_small, tmp_path / "old", method="gsimclr", stop_after=2)
    (tmp_path / "old" / "checkpoint_pseudo_labels.npy").unlink()
    for name in ("pseudo_labels.npy", "pseudo_labels.json"):
        shutil.copy(tmp_path / "full" / name, tmp_path / "old" / name)
    with pytest.raises(UserError, match="those of epoch 3"):
        pretrain(cfg, digits_small, tmp_path / "old", method="gsimclr", resume=True)


def test_encoder_pseudo_labels_with_k_above_the_images_are_refused_before_training(tmp_path, tiny_overrides,
                                                                                  monkeypatch):
    """--pseudo-labels encoder --k 41 on 40 images: refused before the first epoch (it trained the
    whole warm-up, then failed at the first re-clustering)."""
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.training import pretrain as pretrain_module

    data = load_split("digits", image_size=16).subset(np.arange(40))
    cfg = load_config(None, {**tiny_overrides, "epochs": 2, "batch_size": 32, "pseudo_labels": "encoder",
                             "recluster_warmup": 1, "k": 41})

    def no_training(*args, **kwargs):
        raise AssertionError("an epoch was trained")

    monkeypatch.setattr(pretrain_module.Pretrainer, "train_epoch", no_training)
    with pytest.raises(UserError, match="--k 41 is larger than the dataset"):
        pretrain_module.pretrain(cfg, data, tmp_path / "run", method="gsimclr")


@pytest.mark.parametrize("warmup", [2, 5])
def test_encoder_pseudo_labels_with_a_warmup_as_long_as_the_run_are_refused(tmp_path, tiny_overrides, warmup):
    """--recluster-warmup >= --epochs: no clustering would ever happen (none follows the last epoch),
    so 'G-SimCLR' would silently be SimCLR; refused before training."""
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.training.pretrain import pretrain

    data = load_split("digits", image_size=16).subset(np.arange(64))
    cfg = load_config(None, {**tiny_overrides, "epochs": 2, "batch_size": 32, "pseudo_labels": "encoder",
                             "recluster_warmup": warmup, "k": 8})
    with pytest.raises(UserError, match="would train as SimCLR"):
        pretrain(cfg, data, tmp_path / "run", method="gsimclr")
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_run_refuses_a_reclustering_warmup_before_simclrs_pretraining(tmp_path, tiny_overrides, monkeypatch):
    """gsimclr run with both methods: the G-SimCLR-only problem is found before SimCLR pretrains."""
    from gsimclr import pipeline
    from gsimclr.config import load_config

    cfg = load_config(None, {**tiny_overrides, "epochs": 1, "train_limit": 64, "batch_size": 32,
                             "pseudo_labels": "encoder", "k": 8})           # warm-up 1, epochs 1

    def no_pretraining(*args, **kwargs):
        raise AssertionError("pretraining started")

    monkeypatch.setattr(pipeline, "pretrain", no_pretraining)
    with pytest.raises(UserError, match="--recluster-warmup 1 is not shorter than --epochs 1"):
        pipeline.run_all(cfg, tmp_path / "run", methods=("simclr", "gsimclr"), log=lambda *a: None)


def test_run_resumes_a_gsimclr_run_with_encoder_pseudo_labels(tmp_path, tiny_overrides):
    """gsimclr run --resume of a G-SimCLR run whose pseudo labels come from re-clustering the encoder:
    the run folder has no pseudo_labels/ (none are made before pretraining), which --resume took for
    lost labels and refused; it resumes, and a changed re-clustering option is still refused."""
    import dataclasses

    from gsimclr.config import load_config
    from gsimclr.pipeline import run_all

    cfg = load_config(None, {**tiny_overrides, "epochs": 3, "train_limit": 128, "test_limit": 64, "batch_size": 32,
                             "pseudo_labels": "encoder", "k": 8, "guidance": "mask", "tsne_points": 0,
                             "linear_epochs": 1})
    quiet = lambda *a: None                                                        # noqa: E731
    assert run_all(cfg, tmp_path / "run", methods=("gsimclr",), stop_after=1, log=quiet).get("incomplete")
    results = run_all(cfg, tmp_path / "run", resume=True, methods=("gsimclr",), log=quiet)
    assert not results.get("incomplete") and "gsimclr" in results["methods"]
    records = (tmp_path / "run" / "gsimclr" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3
    with pytest.raises(UserError, match="recluster"):
        run_all(dataclasses.replace(cfg, recluster_every=2), tmp_path / "run", resume=True, methods=("gsimclr",),
                log=quiet)


def test_every_kmeans_of_a_run_uses_the_configured_starts(tmp_path, monkeypatch):
    """--kmeans-n-init reaches the clustering of file:PATH embeddings too (it ran 3 starts whatever it said)."""
    import gsimclr.guidance.kmeans as km
    from gsimclr.pipeline import stage_pseudo_labels

    seen, real = [], km.kmeans
    monkeypatch.setattr(km, "kmeans", lambda *a, **kw: seen.append(kw.get("n_init")) or real(*a, **kw))
    x, _ = make_blobs(n_samples=200, centers=4, n_features=6, random_state=2)
    np.save(tmp_path / "e.npy", x)
    cfg = load_config(None, {"data": "digits", "pseudo_labels": f"file:{tmp_path / 'e.npy'}", "k": 4,
                             "kmeans_n_init": 7, "device": "cpu", "tsne_points": 0})
    stage_pseudo_labels(cfg, ImageData(np.zeros((200, 8, 8, 3), np.uint8)), tmp_path / "run")
    assert seen == [7]


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_of_an_unguided_method_logs_the_pseudo_label_diagnostics(tmp_path, method, capsys):
    """Issue 26: `gsimclr pretrain` of an unguided method shows (never uses) pseudo labels, as the trainer's
    docstring says: those --pseudo-labels names, or those the run folder already holds of the same data."""
    from gsimclr.cli import main
    from gsimclr.tracking import read_metrics

    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(128) % 4)
    small = ["--data", "digits", "--train-limit", "128", "--image-size", "8", "--n-blocks", "0", "--head-dims", "16,8",
             "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--tsne-points", "0", "--method", method]
    small += ["--queue-size", "64"] if method == "moco" else []
    given = tmp_path / "given"
    assert main(["pretrain", *small, "--k", "4", "--pseudo-labels", f"file:{labels}", "--out", str(given)]) == 0
    held = tmp_path / "held"                      # labels made first, then a pretraining that names none
    assert main(["pseudo-label", "--data", "digits", "--train-limit", "128", "--image-size", "8", "--device", "cpu",
                 "--tsne-points", "0", "--k", "4", "--pseudo-labels", f"file:{labels}", "--out", str(held)]) == 0
    assert main(["pretrain", *small, "--out", str(held)]) == 0, capsys.readouterr().err
    for run in (given, held):
        record = read_metrics(run / method / "metrics.jsonl")[0]
        assert record["pseudo_pairs_per_batch"] > 0, record
    plain = tmp_path / "plain"                    # none given, none held: nothing is computed for them
    assert main(["pretrain", *small, "--out", str(plain)]) == 0
    assert "pseudo_pairs_per_batch" not in read_metrics(plain / method / "metrics.jsonl")[0]
    assert not (plain / "pseudo_labels").exists()
