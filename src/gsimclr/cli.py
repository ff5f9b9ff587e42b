"""The ``gsimclr`` command line: one subcommand per stage, and ``run`` for all of them.

Every option of :class:`gsimclr.config.Config` is a flag of every subcommand (``--batch-size``,
``--epochs``, ``--label-fraction``, ...): defaults, then the checkpoint's own config (evaluation
commands), then ``--preset``, then the flags given. User errors print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


from gsimclr import __version__
from gsimclr.config import CHOICES, FIELDS, Config, load_config, parse_value, preset_description, preset_names, read_preset
from gsimclr.errors import UserError

HELP = {
    "data": "a source: digits, a parquet file or folder, an image folder, cifar10[:ROOT], cifar100[:ROOT], stl10[:ROOT]",
    "test_data": "evaluation data (default: the source's test split, else 20%% of a labelled training set)",
    "label_fraction": "fraction of training labels for fine-tuning, in (0, 1]",
    "k": "k-means clusters for pseudo labels (default: the batch size)",
    "guidance": "G-SimCLR guidance: guided batches, false-negative masking, or both",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UserError(f"{self.prog}: {message}")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"a shipped preset ({', '.join(preset_names())}) or a YAML file")
    parser.add_argument("--out", help="the run folder (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    group = parser.add_argument_group("options (override the preset)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" |")[0]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = HELP.get(f.name, "")
        metavar = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else kind.upper()
        group.add_argument(flag, dest=f.name, default=None, metavar=metavar,
                           help=f"{text + '; ' if text else ''}default {default}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gsimclr", description="SimCLR and G-SimCLR: contrastive self-supervised learning.")
    parser.add_argument("--version", action="version", version=f"gsimclr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    specs = {
        "run": "pseudo labels, SimCLR and G-SimCLR pretraining, every evaluation and the table",
        "pseudo-label": "train the denoising autoencoder and cluster its codes into pseudo labels",
        "pretrain": "contrastive pretraining (SimCLR, or G-SimCLR with pseudo labels)",
        "linear-eval": "linear classifiers on frozen features at P1, P2 and P3",
        "knn": "weighted kNN accuracy on frozen backbone features",
        "finetune": "fine-tune a pretrained backbone on a fraction of the labels",
        "supervised": "the fully supervised baseline with the same backbone",
        "embed": "write the features of a dataset to .npy or .parquet",
        "presets": "list the shipped presets",
        "summarize": "mean and standard deviation of several runs' results (e.g. seeds), beside the paper's",
    }
    for name, text in specs.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "presets":
            continue
        if name == "summarize":
            p.add_argument("runs", nargs="+", help="run folders")
            p.add_argument("--paper", choices=["cifar10", "imagenet5"], help="add the paper's numbers")
            p.add_argument("--output", help="also write the table to this Markdown file")
            continue
        _add_config_flags(p)
        if name in ("run", "pretrain"):
            p.add_argument("--stop-after", type=int, metavar="EPOCHS",
                           help="pretrain at most this many epochs in this call, then checkpoint; --resume continues")
            p.add_argument("--max-minutes", type=float, metavar="MINUTES",
                           help="stop pretraining (with a checkpoint) before an epoch would end past this time")
        if name == "run":
            p.add_argument("--methods", default="simclr,gsimclr", help="comma-separated: simclr, gsimclr")
        if name == "pretrain":
            p.add_argument("--method", default="simclr", choices=["simclr", "gsimclr"])
            p.add_argument("--pseudo-labels", help="pseudo_labels.npy or a run folder (default: computed in --out)")
        if name in ("linear-eval", "knn", "finetune", "embed"):
            p.add_argument("--checkpoint", help="a checkpoint file or stage folder (default: --out/<method>)")
            p.add_argument("--method", default="simclr", choices=["simclr", "gsimclr"])
        if name == "embed":
            p.add_argument("--split", default="train", help="train, test or unlabeled")
            p.add_argument("--point", default="P3", choices=["P1", "P2", "P3"])
            p.add_argument("--output", required=True, help="a .npy or .parquet file")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}


def _config(args: argparse.Namespace, base: dict | None = None) -> Config:
    values = dict(base or {})
    if args.preset:
        values.update(read_preset(args.preset))
    values.update(_overrides(args))
    return load_config(None, {k: parse_value(k, v) for k, v in values.items()})


def _run_dir(args: argparse.Namespace, must_be_new: bool = False) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        name = Path(args.preset).stem if args.preset else "run"
        out = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        from gsimclr.distributed import from_main

        out = Path(from_main(str(out)))  # under torchrun every process uses rank 0's folder name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if must_be_new and not args.resume and out.exists() and any(out.iterdir()):
        raise UserError(f"run folder {out} is not empty; pass --resume to continue it or choose another --out")
    return out


def _checkpoint_path(args: argparse.Namespace) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    if args.out:
        return Path(args.out) / args.method
    raise UserError("give --checkpoint (a checkpoint file or stage folder) or --out (a run folder)")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _start_world(cfg: Config):
    """The hook of the commands that train: under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) join
    the process group (NCCL on GPUs, gloo on CPUs); a plain process is a world of one.
    ``--batch-size`` is the global batch, split equally over the processes."""
    from gsimclr.distributed import init_world

    world = init_world(cfg.device)
    if cfg.batch_size % world.size:
        raise UserError(f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the "
                        f"{world.size} processes")
    return world


def cmd_run(args) -> None:
    from gsimclr.distributed import barrier, close_world
    from gsimclr.pipeline import run_all, write_run_info
    from gsimclr.report import markdown_table, summary_lines

    cfg = _config(args)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods or any(m not in ("simclr", "gsimclr") for m in methods):
        raise UserError(f"--methods must list simclr and/or gsimclr, got {args.methods!r}")
    world = _start_world(cfg)
    run_dir = _run_dir(args, must_be_new=True)
    barrier()  # every process has checked the run folder before rank 0 writes to it
    if world.is_main:
        write_run_info(run_dir, cfg)
        print(f"run folder: {run_dir}")
    results = run_all(cfg, run_dir, args.resume, methods, stop_after=args.stop_after, max_minutes=args.max_minutes)
    close_world()
    if not world.is_main:
        return
    if results.get("incomplete"):
        print(f"run incomplete: continue with  gsimclr run --resume --out {run_dir} ...")
        return
    if "supervised" in results:
        print()
        print(markdown_table(results))
    print()
    print("\n".join(summary_lines(results)))
    print(f"results: {run_dir / 'results.md'}")


def cmd_pseudo_label(args) -> None:
    from gsimclr.pipeline import load_data, stage_pseudo_labels, write_run_info

    cfg = _config(args)
    run_dir = _run_dir(args)
    train, _ = load_data(cfg)
    write_run_info(run_dir, cfg)
    result = stage_pseudo_labels(cfg, train, run_dir, args.resume)
    result.pop("labels")
    _print_json(result)
    print(f"pseudo labels: {run_dir / 'pseudo_labels' / 'pseudo_labels.npy'}")


def cmd_pretrain(args) -> None:
    from gsimclr.distributed import close_world
    from gsimclr.pipeline import load_data, shared_pseudo_labels, stage_pretrain, stage_results, write_run_info
    from gsimclr.pseudo_labels import load_pseudo_labels

    cfg = _config(args)
    world = _start_world(cfg)
    run_dir = _run_dir(args)
    train, test = load_data(cfg)
    pseudo = None
    if args.method == "gsimclr":
        if args.pseudo_labels:
            pseudo = load_pseudo_labels(args.pseudo_labels, len(train))
        else:
            pseudo = shared_pseudo_labels(cfg, train, run_dir, resume=True)["labels"]
    if world.is_main:
        write_run_info(run_dir, cfg)
    monitor = (train, test) if cfg.monitor_every and train.has_labels and test is not None and test.has_labels else None
    stage_pretrain(cfg, train, run_dir, args.method, pseudo, args.resume, args.stop_after, args.max_minutes, monitor)
    if world.is_main:
        _print_json(stage_results(run_dir, args.method))
        print(f"checkpoint: {run_dir / args.method / 'checkpoint.safetensors'}")
    close_world()


def _eval_setup(args):
    from gsimclr.pipeline import load_data, load_encoder

    model, saved, _ = load_encoder(_checkpoint_path(args))
    cfg = _config(args, base=saved.to_dict())
    train, test = load_data(cfg)
    return model, cfg, train, test


def _cmd_eval(args, which: tuple[str, ...], key: str) -> None:
    from gsimclr.io import write_json
    from gsimclr.pipeline import evaluate_encoder

    model, cfg, train, test = _eval_setup(args)
    result = evaluate_encoder(cfg, model, train, test, which)
    _print_json(result)
    target = _checkpoint_path(args)
    folder = target if target.is_dir() else target.parent
    write_json(folder / f"{key}.json", result)


def cmd_supervised(args) -> None:
    from gsimclr.io import write_json
    from gsimclr.pipeline import load_data, stage_supervised

    cfg = _config(args)
    run_dir = _run_dir(args)
    train, test = load_data(cfg)
    top1 = stage_supervised(cfg, train, test)
    write_json(run_dir / "supervised.json", {"top1": top1, "epochs": cfg.supervised_epochs})
    _print_json({"supervised_top1": top1})


def cmd_embed(args) -> None:
    from gsimclr.data.sources import load_split
    from gsimclr.evaluation.features import extract_features
    from gsimclr.io import atomic_path, save_npy
    from gsimclr.pipeline import load_encoder
    from gsimclr.runtime import resolve_device

    model, saved, _ = load_encoder(_checkpoint_path(args))
    cfg = _config(args, base=saved.to_dict())
    data = load_split(cfg.data, args.split, image_size=cfg.cache_size or cfg.image_size, on_corrupt=cfg.on_corrupt)
    if data is None:
        raise UserError(f"{cfg.data} has no {args.split!r} split")
    device = resolve_device(cfg.device)
    feats = extract_features(model.to(device), data, cfg.image_size, device, precision=cfg.precision)[args.point].numpy()
    output = Path(args.output)
    if output.suffix == ".npy":
        save_npy(output, feats)
    elif output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), feats.shape[1])}
        if data.labels is not None:
            columns["label"] = pa.array(data.labels)
        with atomic_path(output) as tmp:
            pq.write_table(pa.table(columns), tmp)
    else:
        raise UserError(f"--output must end in .npy or .parquet, got {output.name}")
    print(f"{len(feats)} x {feats.shape[1]} features at {args.point} -> {output}")


def cmd_summarize(args) -> None:
    from gsimclr.io import write_text
    from gsimclr.report import summarize

    try:
        table = summarize(args.runs, args.paper)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    print(table)
    if args.output:
        write_text(args.output, table + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if args.command == "presets":
            for name in preset_names():
                print(f"{name}: {preset_description(name)}")
            return 0
        commands = {"run": cmd_run, "summarize": cmd_summarize, "pseudo-label": cmd_pseudo_label, "pretrain": cmd_pretrain,
                    "linear-eval": lambda a: _cmd_eval(a, ("linear",), "linear"),
                    "knn": lambda a: _cmd_eval(a, ("knn",), "knn"),
                    "finetune": lambda a: _cmd_eval(a, ("finetune",), "finetune"),
                    "supervised": cmd_supervised, "embed": cmd_embed}
        commands[args.command](args)
        return 0
    except UserError as exc:
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)  # (a `!r` here would quote every message)
        print(f"gsimclr: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gsimclr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
