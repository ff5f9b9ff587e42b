"""Degenerate devices and checkpoints given to training and evaluation: a device this machine lacks is one
line before any work, a run folder given as --checkpoint reads its --method stage, a file that is not a
pretrained encoder is named for what it is, and a checkpoint trained on another machine's device is read
here."""

from __future__ import annotations

import pytest

from gsimclr.checkpoint import save_checkpoint
from gsimclr.cli import main
from gsimclr.config import load_config
from gsimclr.errors import UserError
from test_run_faults import SMALL, fake_run
from test_run_folder import one_line_error as _error_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp("degenerate") / "run")


@pytest.mark.parametrize("device,needle", [
    ("mps", "--device mps: MPS (Apple GPU) is not available on this machine"),  # was a RuntimeError traceback
    ("cuda", "--device cuda: CUDA is not available"),
    ("cuda:7", "--device cuda:7: CUDA is not available"),
])
def test_a_device_this_machine_lacks_is_refused_before_any_work(capsys, tmp_path, run, device, needle):
    import torch

    if device == "mps" and torch.backends.mps.is_available() or device != "mps" and torch.cuda.is_available():
        pytest.skip("this machine has the device")
    out = tmp_path / "out"
    assert needle in _error_of(capsys, ["pretrain", "--preset", "digits-quick", "--epochs", "1", "--train-limit", "100",
                                        "--device", device, "--out", str(out)])
    assert not out.exists()
    assert needle in _error_of(capsys, ["knn", "--checkpoint", str(run.root / "simclr"), "--device", device])
    with pytest.raises(UserError, match="not available"):
        load_config(None, {"device": device})


def test_a_cuda_index_past_the_machines_gpus_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("gsimclr.runtime.bf16_supported", lambda device: True)   # asks the (absent) driver
    with pytest.raises(UserError, match=r"--device cuda:7: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        load_config(None, {"device": "cuda:7"})
    assert load_config(None, {"device": "cuda:1"}).device == "cuda:1"


def test_a_run_folder_as_checkpoint_reads_its_method_stage(capsys, tmp_path, run):
    """--checkpoint RUN was accepted by the lock check, then read as RUN/checkpoint.safetensors: 'checkpoint
    not found'. It is the --method stage of the run, as with --out RUN and for export."""
    assert main(["knn", "--checkpoint", str(run.root), "--knn-k", "3", "--test-limit", "50"]) == 0
    assert '"knn"' in capsys.readouterr().out
    assert (run.root / "simclr" / "knn.json").is_file()
    err = _error_of(capsys, ["knn", "--checkpoint", str(run.root), "--method", "gsimclr", "--knn-k", "3"])
    assert "no checkpoint in" in err and "gsimclr/checkpoint.safetensors" in err
    output = tmp_path / "feats.npy"
    assert main(["embed", "--checkpoint", str(run.root), "--output", str(output), "--split", "test"]) == 0
    assert output.is_file()


def test_a_checkpoint_that_is_not_a_pretrained_encoder_is_named(capsys, tmp_path, run):
    """The pseudo-label autoencoder's weights (and any gsimclr file without a method and configuration)
    were built as the default network and refused with PyTorch's first line, 'Error(s) in loading
    state_dict for SimCLRModel:'."""
    import torch

    (tmp_path / "pseudo_labels").mkdir()
    ae = tmp_path / "pseudo_labels" / "autoencoder.safetensors"   # what pseudo-label leaves in RUN/pseudo_labels
    save_checkpoint(ae, torch.nn.Conv2d(3, 4, 3), meta={"ae_model": "shallow", "ae_decoder": "conv_first"})
    for argv in (["knn", "--checkpoint", str(ae)], ["embed", "--checkpoint", str(ae), "--output", str(tmp_path / "f.npy")],
                 ["export", str(ae), "--output", str(tmp_path / "e")]):
        err = _error_of(capsys, argv)
        assert "is the pseudo-label autoencoder's weights, not a pretrained encoder" in err, err
    assert not (tmp_path / "e").exists() and not (tmp_path / "f.npy").exists()


def test_weights_of_another_network_name_the_keys_that_differ(tmp_path):
    """A checkpoint whose weights are not its configuration's network: PyTorch's message is many lines, and
    its first ('Error(s) in loading state_dict for SimCLRModel:') said nothing."""
    from gsimclr.checkpoint import load_checkpoint
    from gsimclr.training.pretrain import build_model

    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, build_model(load_config(None, {**SMALL, "n_blocks": 1})), meta={"epoch": 1})
    with pytest.raises(UserError) as info:
        load_checkpoint(path, build_model(load_config(None, SMALL)))
    message = str(info.value)
    assert "\n" not in message and "does not match the model:" in message
    assert "unexpected (e.g." in message and message.endswith(" keys")
    save_checkpoint(path, build_model(load_config(None, {**SMALL, "head_dims": [16, 4]})), meta={"epoch": 1})
    with pytest.raises(UserError, match=r"of another shape \(e.g. .*\(4, 16\) vs \(8, 16\)"):
        load_checkpoint(path, build_model(load_config(None, SMALL)))


def test_a_checkpoint_trained_on_a_device_this_machine_lacks_is_evaluated_here(capsys, tmp_path, monkeypatch):
    """A run trained with --device cuda (or fp16) read on a machine without a GPU: the device is the
    machine's, not the model's, so the evaluation runs here with a one-line warning (it was refused, naming
    a --device the user never gave); a --device given is still checked as given."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    folder = fake_run(tmp_path / "run")
    cfg = load_config(None, SMALL).to_dict()
    from gsimclr.training.pretrain import build_model

    save_checkpoint(folder.checkpoint("simclr"), build_model(load_config(None, SMALL)),
                    meta={"config": {**cfg, "device": "cuda:1", "precision": "fp16"}, "epoch": 1, "method": "simclr"})
    with pytest.warns(UserWarning) as record:
        assert main(["knn", "--out", str(folder.root), "--knn-k", "3", "--test-limit", "50"]) == 0
    assert '"knn"' in capsys.readouterr().out
    warned = [str(w.message) for w in record]
    assert any("trained with --device cuda:1, which this machine lacks; using --device auto" in w for w in warned)
    assert any("trained with --precision fp16, which needs a CUDA GPU; using --precision auto" in w for w in warned)
    assert "--device cuda: CUDA is not available" in _error_of(capsys, ["knn", "--out", str(folder.root),
                                                                         "--device", "cuda", "--knn-k", "3"])


TIMM_SMALL = ["--preset", "digits-quick", "--device", "cpu", "--train-limit", "200", "--batch-size", "16", "--epochs", "1",
              "--ae-epochs", "1", "--k", "5", "--knn-k", "5"]


@pytest.mark.parametrize("argv,needle", [
    # three downsamplings after a 4x4 patchify stem leave less than a pixel: a RuntimeError traceback at the first
    # forward, in `run` after the autoencoder had trained and written its pseudo labels
    (["run", "--methods", "gsimclr", "--model", "timm:convnext_atto", "--image-size", "16"],
     "--image-size 16 is too small for --model timm:convnext_atto (Calculated padded input size"),
    (["pretrain", "--model", "timm:vit_tiny_patch16_224", "--image-size", "8"],
     "--image-size 8 is too small for --model timm:vit_tiny_patch16_224 (Calculated padded input size per channel: "
     "(8 x 8). Kernel size: (16 x 16)"),
    (["supervised", "--model", "timm:convnext_atto", "--image-size", "16"], "too small for --model timm:convnext_atto"),
])
def test_an_image_size_the_backbone_cannot_take_is_refused_before_any_work(capsys, tmp_path, argv, needle):
    pytest.importorskip("timm")
    from test_cli import only

    out = tmp_path / "out"
    err = _error_of(capsys, [argv[0], *only(argv[0], TIMM_SMALL), *argv[1:], "--out", str(out)])
    assert needle in err, err
    assert "give a larger --image-size" in err
    assert not out.exists()


def test_the_size_check_draws_no_random_numbers():
    """The check runs before every training stage: it must leave the seeded streams as they were."""
    import torch

    from gsimclr.models.registry import input_size_problem

    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert input_size_problem("paper_resnet", 16, n_blocks=0) is None
    assert torch.equal(torch.get_rng_state(), state)


def test_another_image_size_for_a_fixed_size_checkpoint_is_refused(capsys, tmp_path):
    """A ViT is built for the size it was trained at (its position embeddings): knn/embed --image-size 32 on
    a 16 px run was timm's AssertionError traceback."""
    pytest.importorskip("timm")
    folder = fake_run(tmp_path / "run", model="timm:vit_tiny_patch16_224", patch_size=4)
    for argv in (["knn", "--out", str(folder.root), "--knn-k", "3"],
                 ["embed", "--out", str(folder.root), "--output", str(tmp_path / "f.npy")]):
        err = _error_of(capsys, [*argv, "--image-size", "32"])
        assert ("--image-size 32 does not fit the run's model timm:vit_tiny_patch16_224, built for 16 px images "
                "(Input height (32) doesn't match model (16).); give --image-size 16") in err, err
    assert not (tmp_path / "f.npy").exists() and not (folder.root / "simclr" / "knn.json").exists()


def test_a_label_fraction_below_one_image_per_class_says_how_many_labels_it_uses():
    """--label-fraction 0.001 of 100 images: the stratified draw's one image per class takes 10 (10%), while
    the table says "Fine-tune (0.1% labels)"; the labels really used are said in one warning."""
    import warnings

    import numpy as np

    from gsimclr.evaluation.notebook import sample_labelled
    from gsimclr.evaluation.standard_linear import label_fraction_indices

    labels = np.repeat(np.arange(10), 10)
    with pytest.warns(UserWarning, match=r"--label-fraction 0.001 of 100 labelled images is less than one image per "
                                         r"class: .* each of the 10 classes, 10 images \(10%\)"):
        assert len(label_fraction_indices(labels, 0.001)) == 10
    with pytest.warns(UserWarning, match="--standard-label-fraction 0.01 of 100"):
        label_fraction_indices(labels, 0.01, option="--standard-label-fraction")
    with pytest.warns(UserWarning, match="less than one image per class"):
        sample_labelled(labels, 0.001, "stratified", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a fraction the draw honours says nothing
        assert len(label_fraction_indices(np.repeat(np.arange(10), 100), 0.1)) == 100
        assert len(label_fraction_indices(np.repeat(np.arange(10), 10), 0.1)) == 10


def test_evaluating_an_unfinished_pretraining_says_so(capsys, tmp_path):
    """knn/embed on a run stopped by --stop-after (or a kill) printed results as if the run were finished."""
    import warnings

    folder = fake_run(tmp_path / "run", epochs=3)   # its checkpoint: epoch 1
    with pytest.warns(UserWarning, match=r"simclr is epoch 1 of 3: its pretraining is unfinished \(continue it with "
                                         r"--resume\)"):
        assert main(["knn", "--out", str(folder.root), "--knn-k", "3", "--test-limit", "50"]) == 0
    with pytest.warns(UserWarning, match="epoch 1 of 3"):
        assert main(["embed", "--out", str(folder.root), "--output", str(tmp_path / "f.npy"), "--split", "test"]) == 0
    finished = fake_run(tmp_path / "finished", epochs=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*unfinished")
        assert main(["knn", "--out", str(finished.root), "--knn-k", "3", "--test-limit", "50"]) == 0
