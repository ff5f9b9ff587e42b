"""Writes docs/tutorials/gsimclr-digits.ipynb from the cells below and executes it in a temporary folder
(its outputs are committed, so the site shows them without running it):

    python notebooks/build_notebook.py            # write and execute
    python notebooks/build_notebook.py --no-run   # write only
    python notebooks/build_notebook.py --check    # execute; are the committed outputs still the code's?

tests/test_docs.py executes it as Jupyter would (in docs/tutorials/) and compares its outputs with the
committed ones (:func:`comparable_outputs`).
"""

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorials" / "gsimclr-digits.ipynb"

CELLS = [
    ("md", """# G-SimCLR end to end on digits

This notebook runs the whole G-SimCLR pipeline on scikit-learn's bundled digits (1,797 images of 8x8 pixels,
upsampled to 16x16), on a CPU, in a few minutes: pseudo labels from a denoising autoencoder and k-means,
SimCLR and G-SimCLR pretraining, the evaluations (linear probes at P1/P2/P3, kNN, fine-tuning on 10% of the
labels, a supervised baseline), then the pictures the run leaves behind. It is the `digits-quick` preset
with fewer epochs; `make demo` runs the full preset.

The site shows it with the outputs of its last execution, and the test suite executes it again and checks
that those outputs are still the ones the code gives (`tests/test_docs.py`). Run it yourself in Jupyter
(`pip install jupyterlab`, then `jupyter lab docs/tutorials/gsimclr-digits.ipynb`), or execute it and
rewrite its stored outputs with `python notebooks/build_notebook.py`. Its run folder goes to your temporary
folder (printed below), never beside the notebook."""),
    ("code", """import shutil
import tempfile
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain progress
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

from gsimclr.config import load_config

cfg = load_config("digits-quick", {
    "epochs": 3, "ae_epochs": 3,                        # the preset: 10 and 10
    "linear_epochs": 20, "finetune_head_epochs": 5,     # 100 and 50
    "finetune_epochs": 1, "supervised_epochs": 2,       # 10 and 10
    "tsne_points": 500, "device": "cpu", "seed": 0,
})
print(f"data {cfg.data} at {cfg.image_size} px, batch {cfg.batch_size}, k = {cfg.n_clusters} pseudo labels, "
      f"{cfg.epochs} epochs of {cfg.optimizer} at lr {cfg.lr}")"""),
    ("md", """## The data and SimCLR's two views

SimCLR learns by telling apart two random views of the same image (the *positive* pair) from the views of
every other image in the batch (the *negatives*). Each row below is one training image and two views
drawn by gsimclr's batched augmentation (random resized crop, flip, colour jitter, grayscale)."""),
    ("code", """from gsimclr.data.sources import load_split
from gsimclr.transforms.augment import simclr_augment

train = load_split("digits", "train", image_size=cfg.image_size)
augment = simclr_augment(cfg.image_size, strength=cfg.jitter_strength, scale=(cfg.crop_scale_min, 1.0),
                         mean=(0, 0, 0), std=(1, 1, 1))
batch = torch.from_numpy(train.images[:6])
gen = torch.Generator().manual_seed(0)
views = [augment(batch, gen), augment(batch, gen)]
fig, axes = plt.subplots(3, 6, figsize=(7, 3.6), dpi=150)
for i in range(6):
    axes[0, i].imshow(train.images[i])
    axes[0, i].set_title(f"class {train.classes[train.labels[i]]}", fontsize=8)
    for row in (1, 2):
        axes[row, i].imshow(views[row - 1][i].permute(1, 2, 0).clamp(0, 1).numpy())
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
for row, name in enumerate(["image", "view 1", "view 2"]):
    axes[row, 0].set_ylabel(name, fontsize=8)
fig.suptitle("digits (train): each image and its two augmented views", fontsize=10)
plt.show()"""),
    ("md", """## Run everything

`run_all` is what `gsimclr run` calls: pseudo labels, SimCLR, G-SimCLR, every evaluation, the supervised
baseline, the table and the pictures, all in one run folder: here `gsimclr-notebook-digits` in the
temporary folder, replaced at each execution."""),
    ("code", """from gsimclr.pipeline import run_all

out = Path(tempfile.gettempdir()) / "gsimclr-notebook-digits"
shutil.rmtree(out, ignore_errors=True)
print(f"run folder: {out}")
results = run_all(cfg, out)"""),
    ("md", """## The table

Top-1 accuracy (%) on the 360 test digits, and the false-negative diagnostics: same-class pairs per batch
under SimCLR's shuffling and under G-SimCLR's guided batches, beside the random expectation and the
floor (the least any batching can reach)."""),
    ("code", """display(Markdown((out / "results.md").read_text()))"""),
    ("md", """With 3 epochs instead of the preset's 10 (and 2 epochs for the supervised baseline), the accuracies are
lower than `make demo`'s; the point here is the pipeline and how to read it. The diagnostics rows need no
long training: they count the pairs in the batches the samplers built."""),
    ("md", """## False negatives in the batches

`false_negatives.png`: same-class pairs per batch, epoch by epoch. SimCLR's shuffled batches sit at the
random expectation; G-SimCLR's batches, built so that no two images share a pseudo label, hold fewer, but
only as far as the pseudo labels agree with the classes (their NMI is printed above). The floor is what
spreading by the *true* classes would reach."""),
    ("code", """display(Image(filename=str(out / "false_negatives.png")))"""),
    ("md", """## Pretraining loss"""),
    ("code", """display(Image(filename=str(out / "loss_curves.png")))"""),
    ("md", """## What the pseudo labels see, and what the encoder learnt

First, t-SNE of the autoencoder's latent codes of the training images (the features k-means clusters into
pseudo labels); then t-SNE of G-SimCLR's encoder features (P3) of the test images. Both are coloured by
the true digit, keyed in the legend; each picture names its run, data and method under its title."""),
    ("code", """display(Image(filename=str(out / "pseudo_labels" / "tsne_autoencoder.png")))
display(Image(filename=str(out / "gsimclr" / "tsne_encoder.png")))"""),
    ("md", """## Use the encoder

The pretrained model is in the run folder, `gsimclr/checkpoint.safetensors`. Features at P3 for a kNN
look-up of your own, or `gsimclr export RUN_FOLDER --method gsimclr` for torchvision, timm, Hugging Face
and ONNX (see *Use the encoder elsewhere*)."""),
    ("code", """from gsimclr.evaluation.features import extract_features
from gsimclr.pipeline import load_encoder
from gsimclr.transforms.augment import NORMALIZATIONS

model, saved, meta = load_encoder(out / "gsimclr")
test = load_split("digits", "test", image_size=cfg.image_size)
mean, std = NORMALIZATIONS[saved.normalize]
feats = extract_features(model, test, cfg.image_size, torch.device("cpu"), mean=mean, std=std)
print({point: tuple(f.shape) for point, f in feats.items()})"""),
]


# The kernel's environment: one PyTorch thread, so that the stored numbers do not depend on the machine's
# number of cores (the thread count changes the order of floating-point sums).
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Outputs that differ between two executions of the same code: durations and throughputs, the run folder's path.
_VARYING = [(re.compile(r"\d+(?:\.\d+)? (?:s|images/s)\b"), "<time>"), (re.compile(r"run folder: .*"), "run folder: <temporary>")]


def build() -> nbformat.NotebookNode:
    """The notebook of :data:`CELLS`, not executed."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    return nb


def execute(nb: nbformat.NotebookNode, cwd: str | Path, timeout: int = 1800) -> nbformat.NotebookNode:
    """Execute ``nb`` in place with its kernel in folder ``cwd`` (where Jupyter would start it: the notebook's)."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, **KERNEL_ENV})
    return nb


def comparable_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """What an execution printed and displayed as text (each code cell's stdout, its Markdown and plain-text
    results), without what varies between two executions of the same code: the outputs that say whether
    the stored ones are still those of the code. Pictures are left out: their bytes depend on the
    matplotlib version, and every number they show is printed too."""
    outputs = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        stdout = "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stdout")
        texts = [stdout] if stdout else []
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "text/markdown" in data:
                texts.append(data["text/markdown"])
            elif "text/plain" in data and "image/png" not in data and o.output_type == "execute_result":
                texts.append(data["text/plain"])
        for text in texts:
            for pattern, replacement in _VARYING:
                text = pattern.sub(replacement, text)
            outputs.append(text)
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="write the notebook without executing it")
    parser.add_argument("--check", action="store_true",
                        help="execute it and say whether the committed outputs are still those of the code (exit 1 if not)")
    args = parser.parse_args()
    nb = build()
    if not args.no_run:
        with tempfile.TemporaryDirectory() as tmp:
            execute(nb, tmp)
    if args.check:
        stale = comparable_outputs(nb) != comparable_outputs(nbformat.read(NOTEBOOK, as_version=4))
        print(f"{NOTEBOOK}: {'stale: rerun python notebooks/build_notebook.py' if stale else 'current'}")
        return int(stale)
    for cell in nb.cells:  # no machine-specific metadata in the committed file
        cell.metadata.pop("execution", None)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
