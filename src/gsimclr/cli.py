"""The ``gsimclr`` command line: one subcommand per stage, and ``run`` for all of them.

Each subcommand takes only the option sections it uses (:data:`COMMANDS`; the evaluation
subcommands come from :data:`gsimclr.evaluation.EVALUATIONS`), shown grouped in ``--help`` with each
option's help, type, choices and default from :class:`gsimclr.config.Config`. Values come from the
defaults, then the checkpoint's own config (evaluation commands), then ``--preset``, then the flags
given; the whole configuration is validated before any work starts. User errors print one line and
exit with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from gsimclr import __version__
from gsimclr.config import (FIELDS, SECTIONS, Config, choices_of, flag, load_config, option_commands, option_readers,
                            parse_value, preset_description, preset_names, read_preset, section_fields, type_name)
from gsimclr.errors import Terminated, UserError, one_line_warnings, out_of_memory, raise_terminated
from gsimclr.evaluation import EVALUATIONS
from gsimclr.methods import (METHODS, check_method_images, check_method_options, default_methods, guided_form,
                             parse_methods)


@dataclass(frozen=True)
class Command:
    help: str
    sections: tuple[str, ...] = ()     # the option sections it takes
    fields: tuple[str, ...] = ()       # single options from other sections


_EVERY_SECTION = tuple(SECTIONS)
COMMANDS: dict[str, Command] = {
    "run": Command("pseudo labels, SimCLR and G-SimCLR pretraining, every evaluation and the table", _EVERY_SECTION),
    "pseudo-label": Command("pseudo labels before pretraining: the denoising autoencoder and k-means, or file:PATH",
                            ("data", "pseudo_labels", "execution", "report"), ("batch_size", "defaults")),
    "pretrain": Command("contrastive pretraining (SimCLR, MoCo, or their guided forms with pseudo labels)",
                        ("data", "model", "augment", "pretrain", "loss", "moco", "guidance", "pseudo_labels", "knn",
                         "execution", "report")),
    **{ev.command: Command(ev.help, ("data", *ev.sections, "execution")) for ev in EVALUATIONS.values()},
    "supervised": Command("the fully supervised baseline with the same backbone",
                          ("data", "model", "supervised", "protocol", "execution"), ("batch_size",)),
    "embed": Command("write the features of a dataset to .npy or .parquet", ("data", "execution")),
}
EVAL_COMMANDS = {ev.command: ev.name for ev in EVALUATIONS.values()}
_SHOW_CHOICES = True  # help texts list the registries' choices; main() turns it off unless --help is asked for


def command_options(name: str) -> list[str]:
    """The config fields subcommand ``name`` takes, in declaration order: the core options of its
    sections and single fields, and every entry's options that name it among their commands."""
    command = COMMANDS[name]
    wanted = set(section_fields(*command.sections)) | set(command.fields)
    return [f for f in FIELDS if (f in wanted if option_commands(f) is None else name in option_commands(f))]


# A value that starts with "-" but is a number (``--weight-decay -1e-6``, ``--lr -inf``) is a value, not an option
# (argparse itself only knows ``-1`` and ``-.5``), so that the range check names the problem.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str):  # one line, no usage block
        raise UserError(message if self.prog == "gsimclr" else f"{self.prog}: {message}")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _unknown_arguments(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> str:
    """The one-line error for arguments ``command`` does not take: which subcommands take an unknown
    option instead, or the closest option of ``command`` (``--lr-schedul`` -> ``--lr-schedule``)."""
    import difflib

    subs = _subparsers(parser)
    own = [o for a in subs[command]._actions for o in a.option_strings if o.startswith("--")]
    message = f"gsimclr {command}: unrecognized arguments: {' '.join(extra)}"
    option = next((a.split("=")[0] for a in extra if a.startswith("--")), None)
    if option is None:
        return message
    elsewhere = [name for name, p in subs.items() if name != command
                 and any(option in a.option_strings for a in p._actions)]
    if elsewhere:
        return f"{message} ({option} is an option of gsimclr {' / '.join(elsewhere[:4])}, not of gsimclr {command})"
    close = difflib.get_close_matches(option, own, n=1, cutoff=0.75)
    return f"{message} (did you mean {close[0]}?)" if close else f"{message} (see gsimclr {command} --help)"


def _option_help(name: str) -> str:
    """The option's help with its default, once: a help that says its default in words (``(default:
    the batch size)``) keeps those words instead of the field's value."""
    f = FIELDS[name]
    text = f.metadata["help"]
    if "(default" not in text:
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if isinstance(default, list):
            default = ",".join(map(str, default))
        text = f"{text} (default: {default})"
    return text.replace("%", "%%")  # argparse formats help with %


PLUGIN_HELP = ("import this module (a name on the Python path, or a .py file or package folder) first: its "
               "registrations add methods, losses, samplers and their options (repeatable; also "
               "GSIMCLR_PLUGINS=a,b and the gsimclr.plugins entry points)")


RESUMABLE = ("run", "pretrain", "pseudo-label")
"""The commands that continue a run folder's stages with ``--resume`` (the others read a run, or write one
result beside it, and take no ``--resume``)."""


def _add_config_flags(parser: argparse.ArgumentParser, name: str) -> None:
    run = parser.add_argument_group("run folder")
    run.add_argument("--preset", help=f"a shipped preset ({', '.join(preset_names())}) or a YAML file")
    run.add_argument("--out", help="the run folder (default: runs/<preset>-<time>)")
    if name in RESUMABLE:
        run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    names = set(command_options(name))
    for section, title in SECTIONS.items():
        members = [n for n in section_fields(section) if n in names]
        if not members:
            continue
        group = parser.add_argument_group(f"{title} options")
        for name in members:
            meta = FIELDS[name].metadata
            if meta["metavar"]:
                metavar = meta["metavar"]
            elif meta["choices"] is not None and _SHOW_CHOICES:
                metavar = "{" + ",".join(choices_of(name)) + "}"
            elif meta["choices"] is not None:
                metavar = name.upper()  # parsing only: the registries are read (and PyTorch imported) later
            else:
                metavar = type_name(name).upper().replace("LIST OF ", "")
            switch = {"nargs": "?", "const": "true"} if type_name(name) == "bool" else {}  # --wandb alone: on
            group.add_argument(flag(name), dest=name, default=None, metavar=metavar, help=_option_help(name), **switch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gsimclr", description="SimCLR and G-SimCLR: contrastive self-supervised learning.")
    parser.add_argument("--version", action="version", version=f"gsimclr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    methods = METHODS.names()
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        _add_config_flags(p, name)
        stage = p.add_argument_group("stage")
        if name in ("run", "pretrain"):
            stage.add_argument("--stop-after", type=int, metavar="EPOCHS",
                               help="pretrain at most this many epochs in this call, then checkpoint; --resume continues")
            stage.add_argument("--max-minutes", type=float, metavar="MINUTES",
                               help="stop pretraining (with a checkpoint) before an epoch would end past this time")
        if name == "run":
            stage.add_argument("--methods", default=",".join(default_methods()),
                               help=f"comma-separated methods to pretrain and evaluate ({', '.join(methods)})")
            stage.add_argument("--jobs", type=int, default=1, metavar="N",
                               help="stages run at once, each in its own worker process with an equal share of the "
                                    "threads: the methods side by side once the pseudo labels exist, the supervised "
                                    "baseline beside them; each worker holds its own copy of in-memory data "
                                    "(default: 1, one stage after another)")
        if name == "pretrain":
            stage.add_argument("--method", default=methods[0], choices=methods)
        if name in EVAL_COMMANDS or name == "embed":
            stage.add_argument("--checkpoint", help="a checkpoint file, a stage folder, or a run folder (its --method "
                               "stage) (default: --out/<method>)")
            stage.add_argument("--method", default=methods[0], choices=methods)
        if name == "embed":
            stage.add_argument("--split", default="train", help="train, test or unlabeled")
            stage.add_argument("--point", default="P3", choices=["P1", "P2", "P3"])
            stage.add_argument("--output", required=True, help="a .npy or .parquet file")
    p = sub.add_parser("presets", help="list the shipped presets, or show one fully resolved",
                       description="list the shipped presets, or show one fully resolved")
    p.add_argument("--show", metavar="PRESET", help="print every option of this preset (a shipped name or a YAML "
                   "file) after defaults are filled in, as YAML that --preset reads back")
    p = sub.add_parser("export", help="export a pretrained backbone: a torchvision/timm state dict, a Hugging Face "
                       "folder, ONNX", description="export a pretrained backbone for use elsewhere; the state dict "
                       "loads with strict=True into the model named in export.json (see docs/tutorials/use-elsewhere.md)")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint file, a stage folder or a run folder "
                   "(default: --out/<method>)")
    p.add_argument("--out", help="a run folder (instead of CHECKPOINT)")
    p.add_argument("--method", choices=methods, help="which stage of a run folder (default: simclr, else gsimclr)")
    p.add_argument("--output", help="the export folder, new or empty (default: <stage folder>/export)")
    from gsimclr.export import EXPORT_FORMATS

    p.add_argument("--format", default=",".join(EXPORT_FORMATS.names()), metavar="FORMAT,...",
                   help="comma-separated: " + "; ".join(f"{name} ({f.help})" for name, f in EXPORT_FORMATS.items())
                   + " (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --output")
    p = sub.add_parser("summarize", help="mean and standard deviation of several runs' results (e.g. seeds), "
                       "beside the paper's", description="mean and standard deviation of several runs' results")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--paper", choices=["cifar10", "imagenet5"], help="add the paper's numbers")
    p.add_argument("--output", help="also write the table to this Markdown file")
    for p in _subparsers(parser).values():  # read before parsing (main); here so that every command accepts it
        p.add_argument_group("plug-ins").add_argument("--plugin", action="append", metavar="MODULE", help=PLUGIN_HELP)
    return parser


def show_preset(name: str) -> str:
    """The fully resolved configuration of a preset as YAML: every option, defaults filled in, after a
    comment with its description; ``--preset`` reads it back to the same configuration. Options the preset
    requires from the user (``requires:``, e.g. ``--data``) stay a ``requires:`` mapping."""
    import yaml

    from gsimclr.config import preset_requirements

    needs = preset_requirements(name)
    values = load_config(name, {k: "required" for k in needs}).to_dict()
    for k in needs:
        values.pop(k)
    description = preset_description(name) if name in preset_names() else ""
    header = f"# {name}: {description}\n" if description else f"# {name}\n"
    return header + yaml.safe_dump({"requires": needs, **values} if needs else values, sort_keys=False)


def _overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}


def _config(args: argparse.Namespace, base: dict | None = None) -> Config:
    """Defaults, then ``base`` (a checkpoint's configuration), then --preset, then the flags given;
    validated as a whole. A preset does not change a checkpoint's :data:`CHECKPOINT_INPUTS` (a warning
    says so); a flag does."""
    if args.preset is not None and not args.preset.strip():
        raise UserError("--preset needs a value (a shipped preset or a YAML file)")
    overrides = {k: parse_value(k, v) for k, v in _overrides(args).items()}
    base = None if base is None else _machine_here(base, overrides)
    cfg = load_config(args.preset, overrides, base=base)
    if base is None or not args.preset:
        return cfg
    kept = {k: base[k] for k in CHECKPOINT_INPUTS if k in base and overrides.get(k) is None and getattr(cfg, k) != base[k]}
    if not kept:
        return cfg
    import warnings

    warnings.warn(f"--preset {args.preset} would change the inputs the checkpoint was trained on; keeping the "
                  f"checkpoint's {', '.join(f'{flag(k)} {v}' for k, v in kept.items())} (give the flag to change it)",
                  stacklevel=2)
    return load_config(args.preset, {**overrides, **kept}, base=base)


CHECKPOINT_INPUTS = ("image_size", "normalize", "resize")
"""What a pretrained encoder's inputs were: a command reading a checkpoint keeps these from it when a
--preset would change them (features of ImageNet-normalised inputs read from raw pixels are others);
a flag given changes them."""


def _machine_here(saved: dict, given: dict) -> dict:
    """A checkpoint's configuration with its --device and --precision usable here: they name the machine
    that trained it, so one this machine lacks (cuda or mps, fp16 without a GPU: a checkpoint read on
    a laptop) becomes auto with a one-line warning, unless the flag is given (then it is checked as given)."""
    import warnings

    from gsimclr.runtime import resolve_device, resolve_precision

    saved = dict(saved)
    device = saved.get("device", "auto")
    if "device" not in given and isinstance(device, str) and device not in ("auto", "cpu"):
        try:
            resolve_device(device)
        except UserError:
            warnings.warn(f"the checkpoint was trained with --device {device}, which this machine lacks; "
                          "using --device auto (give --device to choose)", stacklevel=2)
            saved["device"] = "auto"
    if "precision" not in given and saved.get("precision") == "fp16":
        try:
            resolve_precision(resolve_device(given.get("device", saved.get("device", "auto"))), "fp16")
        except UserError:
            warnings.warn("the checkpoint was trained with --precision fp16, which needs a CUDA GPU; using "
                          "--precision auto (give --precision to choose)", stacklevel=2)
            saved["precision"] = "auto"
    return saved


def _check_stage_flags(args: argparse.Namespace, cfg: Config) -> None:
    """The options of ``run``/``pretrain`` that are not config fields, flags that would be ignored and
    options the methods cannot train with (no data, no PyTorch: before any work)."""
    if getattr(args, "stop_after", None) is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be >= 1 epoch, got {args.stop_after}")
    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    minutes = getattr(args, "max_minutes", None)
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise UserError(f"--max-minutes must be a finite number > 0, got {minutes:g}")
    methods = _trained_methods(args)
    for method in methods:
        check_method_options(cfg, method)
    from gsimclr.methods.views import check_views_memory

    check_views_memory(cfg.views, cfg.batch_size, cfg.image_size)  # the views alone; the trainer adds the network's
    if methods and all(m in METHODS and not METHODS[m].guided for m in methods):
        # guidance options only shape a guided method's batches and loss: given for SimCLR alone they would be ignored
        unused = [flag(n) for n in section_fields("guidance") if getattr(args, n, None) is not None]
        if unused:
            guided = ", ".join(m.title for m in METHODS.values() if m.guided)
            forms = list(dict.fromkeys(f for f in map(guided_form, methods) if METHODS[f].guided))
            which, fix = (("--methods " + ",".join(methods), "add " + " or ".join(forms)) if args.command == "run"
                          else (f"--method {args.method}", f"use --method {forms[0]}" if forms else ""))
            fix = fix or "train a guided method"
            raise UserError(f"{unused[0]} only affects the guided methods ({guided}: their batches and loss), but "
                            f"{which} trains none; drop it or {fix}")
    _check_unread_options(args, cfg, methods)


def _check_unread_options(args: argparse.Namespace, cfg: Config, methods: list[str]) -> None:
    """An entry's option given for a run that uses none of the entries reading it would be ignored: one
    line naming who reads it (the methods a command trains; the entry a configuration option picks)."""
    for name in command_options(args.command):
        readers = option_readers(name)
        if not readers or getattr(args, name, None) is None:
            continue
        if any(entry in (methods if registry is METHODS else registry.selected(cfg)) for registry, entry in readers):
            continue
        registry = readers[0][0]
        entries = [entry for r, entry in readers if r is registry]
        if registry is METHODS:
            raise UserError(f"{flag(name)} only affects {', '.join(entries)}, which this command does not train; "
                            "drop it or train one of them")
        if registry.option is not None:
            picks = flag(registry.option)
            raise UserError(f"{flag(name)} only affects {picks} {' / '.join(entries)}, not {picks} "
                            f"{getattr(cfg, registry.option)}; drop it or choose {picks} {entries[0]}")
        raise UserError(f"{flag(name)} only affects the {registry.kind} {' / '.join(entries)}, which this run "
                        "does not use; drop it")


def _trained_methods(args: argparse.Namespace) -> list[str]:
    """The methods a command pretrains: ``run``'s ``--methods``, ``pretrain``'s ``--method``, else none."""
    if args.command == "run":
        return list(parse_methods(args.methods))
    return [args.method] if args.command == "pretrain" else []


def _check_data(args: argparse.Namespace, cfg: Config) -> None:
    """``--data`` and ``--test-data`` name something readable (local facts only: a path exists, a file is
    parquet): the data of the commands that train, and any given to a command that reads a run; and the
    ``--pseudo-labels file:PATH`` a new guided run reads exists; the batch and k fit ``--train-limit``."""
    from gsimclr.data.sources import check_spec

    trains = args.command in ("run", "pretrain", "pseudo-label", "supervised")
    for name in ("data", "test_data"):
        spec = getattr(cfg, name)
        if spec is not None and (trains or getattr(args, name, None) is not None):
            check_spec(spec)
    from gsimclr.guidance.sources import locate_file, parse_source

    makes_labels = args.command == "pseudo-label" or any(METHODS[m].guided for m in _trained_methods(args)) \
        or (args.command == "pretrain" and args.pseudo_labels is not None)   # an unguided method's diagnostics
    source, path = parse_source(cfg.pseudo_labels)
    if makes_labels and not getattr(args, "resume", False) and source == "file":  # a new run reads its file:PATH of pseudo labels
        locate_file(path)
    # --train-limit bounds the images: what cannot fit it is refused now, not after the data is read (each
    # command checks only what it uses: pseudo-label trains no --batch-size batches, only its --k)
    limit = cfg.train_limit
    if limit and args.command in _BATCHES and cfg.batch_size > limit:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than --train-limit {limit}")
    if limit and makes_labels and source != "encoder" and cfg.n_clusters > limit:
        what = f"--k {cfg.k}" if cfg.k else f"--k (default: --batch-size {cfg.batch_size})"
        raise UserError(f"{what} is larger than --train-limit {limit}: give --k {limit} or less")
    for method in _trained_methods(args) if limit else ():
        check_method_images(cfg, method, limit, f"--train-limit {limit}")   # e.g. MoCo's queue


_BATCHES = ("run", "pretrain", "supervised")
"""The commands that train with ``--batch-size`` batches (which must fit the training images)."""


def _run_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        name = Path(args.preset).stem if args.preset else "run"
        out = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        from gsimclr.distributed import from_main

        out = Path(from_main(str(out)))  # under torchrun every process uses rank 0's folder name
    from gsimclr.io import check_output

    return check_output(out, "--out", folder=True)  # a writable place, before any work


def _require_new(args: argparse.Namespace, folder) -> None:
    if not getattr(args, "resume", False) and not folder.is_empty():
        raise UserError(f"run folder {folder.root} is not empty; pass --resume to continue it or choose another --out")


def _checkpoint_path(args: argparse.Namespace) -> Path:
    if args.checkpoint:
        from gsimclr.export import locate_checkpoint

        # a file, a stage folder, or a run folder (its --method stage, as with --out and for export)
        return locate_checkpoint(args.checkpoint, args.method, args.command)[0]
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
    from gsimclr.pipeline import run_all
    from gsimclr.report import markdown_table, summary_lines
    from gsimclr.run_folder import RunFolder

    cfg = _config(args)
    methods = parse_methods(args.methods)
    world = _start_world(cfg)
    if args.jobs > 1 and world.distributed:
        raise UserError(f"--jobs {args.jobs} runs stages in worker processes of one command; under torchrun "
                        "(WORLD_SIZE > 1) every process trains every stage: give --jobs 1")
    folder = RunFolder(_run_dir(args))
    with folder.lock():
        _require_new(args, folder)
        barrier()  # every process has checked the run folder before rank 0 writes to it
        if world.is_main:
            print(f"run folder: {folder.root}")
        if args.jobs > 1:
            from gsimclr.stage_jobs import run_all_in_jobs

            results = run_all_in_jobs(cfg, folder, args.resume, methods, args.jobs, stop_after=args.stop_after,
                                      max_minutes=args.max_minutes)
        else:
            results = run_all(cfg, folder, args.resume, methods, stop_after=args.stop_after,
                              max_minutes=args.max_minutes)
    close_world()
    if not world.is_main:
        return
    if results.get("incomplete"):
        print(f"run incomplete: continue with  gsimclr run --resume --out {folder.root} ...")
        return
    if "supervised" in results:
        print()
        print(markdown_table(results))
    print()
    print("\n".join(summary_lines(results)))
    print(f"results: {folder.results_md}")


def cmd_pseudo_label(args) -> None:
    from gsimclr.pipeline import (check_inputs, guided_checkpoints, load_data, reusable_pseudo_labels,
                                  stage_pseudo_labels, write_run_info)
    from gsimclr.run_folder import RunFolder

    cfg = _config(args)
    folder = RunFolder(_run_dir(args))
    with folder.lock():
        folder.check_stage_target()
        train, test = load_data(cfg, pretraining=False)  # no --batch-size batches here: only --k must fit
        reuse = args.resume and reusable_pseudo_labels(cfg, train, folder)
        if not reuse:
            trained = guided_checkpoints(folder)
            if trained:
                raise UserError(f"{trained[0]} was trained with the pseudo labels in {folder.root}; pseudo-label would "
                                "replace them: choose another --out (or --resume to keep them)")
            check_inputs(cfg, train, test, pseudo_labels=True)
        write_run_info(folder, cfg)
        result = stage_pseudo_labels(cfg, train, folder, args.resume, test)
    result.pop("labels")
    _print_json(result)
    print(f"pseudo labels: {folder.pseudo_labels}")


def cmd_pretrain(args) -> None:
    from gsimclr.distributed import close_world
    from gsimclr.pipeline import (check_inputs, check_pretrain, held_pseudo_labels, load_data,
                                  pseudo_labels_before_pretraining, shared_pseudo_labels, stage_pretrain,
                                  stage_results, write_run_info)
    from gsimclr.run_folder import RunFolder

    cfg = _config(args)
    world = _start_world(cfg)
    folder = RunFolder(_run_dir(args))
    with folder.lock():
        folder.check_stage_target()
        train, test = load_data(cfg)
        # autoencoder or file:PATH pseudo labels are made (or reused) in --out/pseudo_labels before
        # pretraining; encoder pseudo labels are made during it. An unguided method shows (never uses)
        # those the folder holds, or makes those --pseudo-labels names, for its pseudo-label diagnostics
        shows_given = not METHODS[args.method].guided and args.pseudo_labels is not None
        before = (METHODS[args.method].guided or shows_given) and pseudo_labels_before_pretraining(cfg)
        pseudo = None if shows_given else held_pseudo_labels(cfg, train, folder, (args.method,), args.resume)
        check_pretrain(cfg, train, folder, args.method, pseudo, args.resume)
        check_inputs(cfg, train, test, (args.method,), pseudo_labels=shows_given)
        ckpt = folder.checkpoint(args.method)
        if world.is_main:
            write_run_info(folder, cfg)
        if before and pseudo is None:
            pseudo = shared_pseudo_labels(cfg, train, folder, resume=True, test=test)["labels"]
        monitor = (train, test) if cfg.monitor_every and train.has_labels and test is not None and test.has_labels else None
        stage_pretrain(cfg, train, folder, args.method, pseudo, args.resume, args.stop_after, args.max_minutes, monitor)
        if world.is_main:
            _print_json(stage_results(folder, args.method))
            print(f"checkpoint: {ckpt}")
    close_world()


def _eval_setup(args):
    from gsimclr.pipeline import load_data

    model, cfg = _read_checkpoint(args)
    train, test = load_data(cfg, pretraining=False)
    return model, cfg, train, test


def _read_checkpoint(args):
    """The pretrained encoder that ``--checkpoint``/``--out`` names and the configuration to read it with:
    the checkpoint's, then --preset and the flags (:func:`_config`); an unfinished pretraining is warned
    about and an --image-size the network cannot take refused."""
    from gsimclr.training.pretrain import load_encoder

    path = _checkpoint_path(args)
    model, saved, meta = load_encoder(path)
    _note_unfinished(path, saved, meta)
    cfg = _config(args, base=saved.to_dict())
    _check_eval_size(cfg, saved)
    return model, cfg


def _note_unfinished(path: Path, saved: Config, meta: dict) -> None:
    """A one-line warning when the checkpoint read is one of an unfinished pretraining (stopped by
    --stop-after, --max-minutes or a kill): its results are not the run's."""
    import warnings

    epoch = meta.get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch < saved.epochs:
        within = " (and part of the next)" if meta.get("partial") else ""
        warnings.warn(f"{path} is epoch {epoch}{within} of {saved.epochs}: its pretraining is unfinished (continue it "
                      "with --resume), so these results are not the finished run's", stacklevel=2)


def _check_eval_size(cfg: Config, saved: Config) -> None:
    """--image-size given to read a checkpoint: its network (built for the size it was trained at) must take it."""
    if cfg.image_size != saved.image_size:
        from gsimclr.pipeline import check_input_size

        check_input_size(cfg, built_for=saved)


def _reading(args):
    """(the folder of the checkpoint a command reads: its run folder, else its stage folder; the stage folder;
    whether that is a run folder)."""
    from gsimclr.export import locate_checkpoint

    ckpt, run_dir, _ = locate_checkpoint(_checkpoint_path(args), args.method if not args.checkpoint else None,
                                         args.command)
    return (run_dir or ckpt.parent), ckpt.parent, run_dir is not None


def _cmd_eval(args, which: tuple[str, ...], key: str) -> None:
    from gsimclr.io import write_json
    from gsimclr.run_folder import RunFolder

    root, stage, in_run = _reading(args)  # a missing checkpoint is refused before PyTorch is imported
    from gsimclr.pipeline import evaluate_encoder

    # the result is written beside the checkpoint; a loose checkpoint's folder keeps no lock file after
    with RunFolder(root).lock(transient=not in_run):
        model, cfg, train, test = _eval_setup(args)
        result = evaluate_encoder(cfg, model, train, test, which)
        _print_json(result)
        write_json(stage / f"{key}.json", result)


def cmd_supervised(args) -> None:
    from gsimclr.io import write_json
    from gsimclr.pipeline import (check_input_size, load_data, stage_supervised, supervised_provenance,
                                  write_run_info)
    from gsimclr.run_folder import RunFolder

    cfg = _config(args)
    check_input_size(cfg, cfg.supervised_model, cfg.supervised_n_blocks)
    folder = RunFolder(_run_dir(args))
    with folder.lock():
        folder.check_stage_target()
        train, test = load_data(cfg)
        if not folder.run_info.exists():  # a run folder says what made it
            write_run_info(folder, cfg)
        result = stage_supervised(cfg, train, test)
        folder.record("supervised", supervised_provenance(cfg, train, test))
        write_json(folder.supervised, result)
    _print_json({"supervised_top1": result["top1"]})


def cmd_embed(args) -> None:
    from gsimclr.run_folder import RunFolder

    root, _, _ = _reading(args)
    output = _check_embed_output(args.output, root)
    with RunFolder(root).lock(shared=True):
        _embed(args, output)


def _embed(args, output: Path) -> None:
    from gsimclr.data.store_batches import open_split
    from gsimclr.evaluation.features import extract_features
    from gsimclr.io import atomic_path, save_npy
    from gsimclr.pipeline import load_data
    from gsimclr.runtime import resolve_device
    from gsimclr.transforms.augment import NORMALIZATIONS

    model, cfg = _read_checkpoint(args)
    if args.split in ("train", "test"):
        # the images the run trains and evaluates on: --train-limit/--test-limit and the hold-out applied,
        # so that --split train feeds back as --pseudo-labels file:PATH row for row
        train, test = load_data(cfg, pretraining=False)
        data = train if args.split == "train" else test
    else:
        budget = None if cfg.memory_budget_gb is None else int(cfg.memory_budget_gb * 1e9)
        data = open_split(cfg.data, args.split, cfg.cache_size or cfg.image_size, cfg.store, cfg.on_corrupt, budget,
                          resize=cfg.resize)
    if data is None:
        raise UserError(f"{cfg.data} has no {args.split!r} split")
    device = resolve_device(cfg.device)
    mean, std = NORMALIZATIONS[cfg.normalize]
    feats = extract_features(model.to(device), data, cfg.image_size, device, precision=cfg.precision, mean=mean,
                             std=std)[args.point].numpy()
    if output.suffix == ".npy":
        save_npy(output, feats)
    elif output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), feats.shape[1])}
        if data.labels is not None:
            columns["label"] = pa.array(data.labels)
        with atomic_path(output) as tmp:
            try:
                pq.write_table(pa.table(columns), tmp)
            except OSError as exc:  # pyarrow's own errors (no space left) name the temporary file
                raise OSError(exc.errno, getattr(exc, "strerror", None) or str(exc)) from None
    print(f"{len(feats)} x {feats.shape[1]} features at {args.point} -> {output}")


def _check_embed_output(output: str, reading: Path | None = None) -> Path:
    """``embed --output``: a .npy or .parquet file path in a writable place, outside the run folder the
    command reads (checked before any features are computed)."""
    from gsimclr.io import check_output, same_or_inside

    path = Path(output)
    if not output.strip() or path.suffix not in (".npy", ".parquet"):
        raise UserError(f"--output must be a file ending in .npy or .parquet, got {output!r}")
    if path.is_dir():
        raise UserError(f"--output {output} is a folder; give a .npy or .parquet file")
    if reading is not None and same_or_inside(path, reading):
        raise UserError(f"--output {output} lies inside {reading}, the run the features come from; "
                        "write it outside the run folder")
    return check_output(path, "--output")


def cmd_export(args) -> None:
    from gsimclr.export import export_run

    source = args.checkpoint or args.out
    if not source:
        raise UserError("export: give a checkpoint, stage folder or run folder (or --out RUN)")
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    summary = export_run(source, args.output, formats, args.method, args.overwrite)
    folder = Path(args.output) if args.output else Path(summary["config"]["checkpoint"]).parent / "export"
    target = summary["target"]
    print(f"exported {summary['config']['model']} ({summary['config']['method']}, epoch {summary['config']['epochs']}) "
          f"-> {folder}: {', '.join(summary['files'])}")
    print(f"loads with strict=True into: {target['library']} {target['name']}"
          + (" with a CIFAR stem" if target["cifar_stem"] else "") + " (recipe in export.json)")
    if "onnx" in summary:
        print(f"ONNX vs PyTorch (onnxruntime, CPU): max abs difference {summary['onnx']['max_abs_diff']:.2e}")


def cmd_presets(args) -> None:
    if args.show is not None:
        if not args.show.strip():
            raise UserError("--show needs a preset (a shipped name or a YAML file)")
        print(show_preset(args.show), end="")
        return
    for name in preset_names():
        print(f"{name}: {preset_description(name)}")


def cmd_summarize(args) -> None:
    from contextlib import ExitStack

    from gsimclr.io import check_output, same_or_inside, write_text
    from gsimclr.report import summarize
    from gsimclr.run_folder import RunFolder

    if args.output is not None:
        for run in args.runs:
            if Path(run).is_dir() and same_or_inside(args.output, run):
                raise UserError(f"--output {args.output} lies inside the run folder {run} that summarize reads; "
                                "write it outside the run folders")
        check_output(args.output, "--output")
    with ExitStack() as stack:  # no run is summarized while a command writes it
        for run in dict.fromkeys(args.runs):
            if Path(run).is_dir():
                stack.enter_context(RunFolder(run).lock(shared=True))
        table = summarize(args.runs, args.paper)
    print(table)
    if args.output:
        write_text(args.output, table + "\n")


def main(argv: list[str] | None = None) -> int:
    global _SHOW_CHOICES
    argv = sys.argv[1:] if argv is None else argv
    previous = _on_sigterm()
    restore_warnings = one_line_warnings()  # one line per distinct warning, no source lines
    try:
        _SHOW_CHOICES = any(a in ("-h", "--help") for a in argv)
        from gsimclr.plugins import load_plugins, plugin_arguments

        load_plugins(plugin_arguments(argv))  # before parsing: a plug-in's entries bring their options
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise UserError(_unknown_arguments(parser, args.command, extra))
        commands = {"run": cmd_run, "summarize": cmd_summarize, "presets": cmd_presets, "export": cmd_export, "pseudo-label": cmd_pseudo_label, "pretrain": cmd_pretrain,
                    "supervised": cmd_supervised, "embed": cmd_embed}
        if args.command == "embed":
            _check_embed_output(args.output)
        _check_blank_values(parser, args)
        if args.command in COMMANDS:
            cfg = _config(args)  # the whole configuration is checked before anything heavy is imported or done
            _check_stage_flags(args, cfg)
            _check_data(args, cfg)
            from gsimclr.launch import launch_environment

            launch_environment()  # RANK, WORLD_SIZE, LOCAL_RANK: nonsense is one line, before any work
        if args.command in EVAL_COMMANDS:
            name = EVAL_COMMANDS[args.command]
            _cmd_eval(args, (name,), name)
        else:
            commands[args.command](args)
        return 0
    except UserError as exc:
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)  # (a `!r` here would quote every message)
        print(f"gsimclr: error: {_in_own_words(message, argv)}{_plugin_hint(message, argv)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"gsimclr: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory(exc)
        if message is None:
            raise
        print(f"gsimclr: error: {message}", file=sys.stderr)
        return 2
    except Terminated:
        print("gsimclr: terminated (SIGTERM); files being written were discarded (a run continues with --resume)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("gsimclr: interrupted; files being written were discarded (a run continues with --resume)", file=sys.stderr)
        return 130
    finally:
        restore_warnings()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_blank_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A command's own path or name given as an empty string (``--out ""``, ``--checkpoint ""``,
    ``--output ""``, a blank CHECKPOINT or run) is refused in one line, not read as "not given" (``--out ""``
    wrote a new ``runs/<preset>-<time>``, ``export --output ""`` exported into the current folder). The
    configuration's options check their own values (an optional one's ``""`` is its default), as do
    ``--show`` and ``--plugin``. A leading ``~`` is the home folder, as in ``--data`` and ``--init``
    (``--out=~/run``, which the shell leaves as it is, made a folder named ``~`` here)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in sub._actions:
        if action.dest in FIELDS or action.dest in ("show", "plugin", "help"):
            continue
        value = getattr(args, action.dest, None)
        if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
            name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest).upper()
            raise UserError(f"{name} needs a value, got an empty string")
        if isinstance(value, list):
            setattr(args, action.dest, [os.path.expanduser(v) if isinstance(v, str) else v for v in value])
        elif isinstance(value, str) and value.startswith("~"):
            setattr(args, action.dest, os.path.expanduser(value))


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                errno.EISDIR, errno.EFBIG}
"""Operating-system errors of a write that no writer turned into a one-line message: still one line."""

_FLAG = re.compile(r"--[a-z0-9]+(?:-[a-z0-9]+)*")
_READS_A_RUN = ("embed",)  # besides the evaluation commands: their settings come from the checkpoint


def _in_own_words(message: str, argv: list[str]) -> str:
    """``message`` naming only options the subcommand takes: an option of the configuration that this
    subcommand lacks (and the user did not type) is named as the setting it is, e.g. ``knn``'s
    "--batch-size 128 is larger ..." becomes "the run's batch size 128 is larger ..."."""
    command = next((a for a in argv if a in COMMANDS), None)
    if command is None:
        return message
    taken = {flag(n) for n in command_options(command)}
    typed = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    whose = "the run's" if command in EVAL_COMMANDS or command in _READS_A_RUN else "the"

    def setting(match: re.Match) -> str:
        option = match.group(0)
        name = option[2:].replace("-", "_")
        if name not in FIELDS or option in taken or option in typed:
            return option
        words = name.replace("_", " ")
        return f"the run's {words}" if whose == "the run's" else f"the {words} setting"

    return _FLAG.sub(setting, message)


_UNKNOWN = re.compile(r"unknown|invalid choice|unrecognized argument|no checkpoint|choose one of")


def _plugin_hint(message: str, argv: list[str]) -> str:
    """For an error about something unknown (a method, an option, a checkpoint's method), the plug-ins that
    made a run this command reads and that are not loaded now (``run.json``'s ``plugins``, else the
    ``--plugin`` of its command): `` (the run in R was made with plug-in P, not loaded now: add --plugin P)``."""
    if not _UNKNOWN.search(message):
        return ""
    import shlex

    from gsimclr.plugins import loaded_modules, plugin_arguments, plugin_path

    loaded = set(loaded_modules())
    for token in argv:
        value = os.path.expanduser(token.split("=", 1)[1] if token.startswith("--") and "=" in token else token)
        if token.startswith("-") and "=" not in token or not value.strip():
            continue
        path = Path(value)
        for root in (path, path.parent, path.parent.parent) if path.exists() else ():
            try:
                info = json.loads((root / "run.json").read_text())
                made = info.get("plugins")
                if made is None:
                    made = plugin_arguments(shlex.split(str(info.get("command", ""))))
            except (OSError, ValueError, AttributeError):
                continue
            missing = [str(p) for p in made if isinstance(p, str) and not p.startswith("entry point ")
                       and p not in loaded and str(Path(p).resolve() if plugin_path(p) else p) not in loaded]
            if missing:
                names = ", ".join(missing)
                return (f" (the run in {root} was made with plug-in {names}, not loaded now: add "
                        + " ".join(f"--plugin {shlex.quote(m)}" for m in missing) + ")")
            break
    return ""


def _on_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one to restore, or None."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_terminated)


if __name__ == "__main__":
    raise SystemExit(main())
