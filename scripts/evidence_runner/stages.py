"""Every stage and its parts: what each part runs, writes, needs, compiles and keeps as resumable state.

    a  throughput   gsimclr vs the lightly recipe (benchmarks/throughput.py): ResNet-18 CIFAR b512/b1024, ResNet-50 224 px
    b  tta          time to accuracy: cifar10-resnet18 with kNN monitored, beside the lightly recipe (b512, 60 epochs)
    c  paper-cifar10     paper-cifar10 and paper-cifar10-clean, seeds 0 1 2 (SimCLR, G-SimCLR, supervised)
    d  paper-imagenet5   paper-imagenet5 and paper-imagenet5-clean, seeds 0 1 2
    e  guidance     SimCLR against the guidance variants (GUIDANCE_VARIANTS) with the strong recipe, 3 seeds
    f  checks       a real distributed run (process group, DDP, SyncBatchNorm, gathered negatives) vs a plain
                    one; bf16 vs a true fp32 (TF32 off) NT-Xent on a real step
"""

from __future__ import annotations

from evidence_runner.context import Part, Stage
from evidence_runner.parts.checks import report_checks, run_bf16_ntxent, run_ddp_equal
from evidence_runner.parts.guidance import GUIDANCE_EPOCHS, GUIDANCE_PRESET, GUIDANCE_VARIANTS, report_guidance, run_guidance
from evidence_runner.parts.paper import report_presets, run_folder_progress, run_preset_seed
from evidence_runner.parts.throughput import (datapath_progress, report_throughput, run_datapath, run_throughput,
                                              throughput_progress)
from evidence_runner.parts.tta import (TTA_BATCH, TTA_EPOCHS, TTA_MONITOR, gsimclr_progress, lightly_progress,
                                       report_tta, run_tta_gsimclr, run_tta_lightly)

SEEDS = (0, 1, 2)
SMOKE_SEEDS = (0,)                # --smoke: the same parts with one seed
EV = "results/evidence"


def build_stages(seeds: tuple[int, ...] = SEEDS) -> list[Stage]:
    """Every stage and its parts (``seeds``: the seeds of stages c, d and e). Planned seconds are H100
    guesses without compilation (``compiles`` adds the allowance) until a run measures them."""
    stages = [
        Stage("a", "throughput", "Throughput: gsimclr against the lightly recipe (one process, one GPU)",
              "python scripts/evidence.py --stage a",
              [Part("a", "throughput-cuda-cifar", "benchmarks/results/throughput-cuda-cifar.json", 180, ("cifar10",),
                    run_throughput, compiles=2, models=("cifar10-resnet18",), state=("throughput-cuda-cifar",),
                    state_mib=0.1, progress=throughput_progress),
               Part("a", "throughput-cuda-r50", "benchmarks/results/throughput-cuda-r50.json", 120, ("imagenet5",),
                    run_throughput, compiles=1, models=("paper-imagenet5",), state=("throughput-cuda-r50",),
                    state_mib=0.1, progress=throughput_progress),
               Part("a", "datapath-cuda-224", f"{EV}/datapath-cuda-224.json", 150, ("imagenet5",),
                    run_datapath, compiles=2, state=("datapath-cuda-224",), state_mib=0.1, progress=datapath_progress)],
              report_throughput),
        Stage("b", "tta", f"Time to accuracy: cifar10-resnet18 (batch {TTA_BATCH}, {TTA_EPOCHS} epochs, cosine), kNN "
                          f"every {TTA_MONITOR} epochs, beside the lightly recipe",
              "python scripts/evidence.py --stage b",
              # two graphs: the 512 batch and the 336-image tail of CIFAR-10's 50,000
              [Part("b", "tta-gsimclr", f"{EV}/tta-gsimclr.json", 200, ("cifar10",), run_tta_gsimclr, compiles=2,
                    models=("cifar10-resnet18",), state=("tta-gsimclr",), state_mib=100, progress=gsimclr_progress),
               Part("b", "tta-lightly", f"{EV}/tta-lightly.json", 420, ("cifar10",), run_tta_lightly,
                    state=("tta-lightly",), state_mib=100, progress=lightly_progress)],
              report_tta),
    ]
    for key, dataset, paper, est, mib in (("c", "cifar10", "cifar10", 300, 10), ("d", "imagenet5", "imagenet5", 600, 400)):
        presets = (f"paper-{dataset}", f"paper-{dataset}-clean")
        stages.append(Stage(
            key, f"paper-{dataset}", f"{' and '.join(presets)}: seeds {', '.join(map(str, seeds))} (SimCLR, G-SimCLR, "
            "supervised), mean ± sd beside the paper's single runs",
            f"python scripts/evidence.py --stage {key}",
            [Part(key, f"{p}-seed{s}", f"{EV}/{p}-seed{s}.json", est, (dataset,), run_preset_seed(p, dataset, s),
                  compiles=2, models=(p,), state=(f"{p}-seed{s}",), state_mib=mib,
                  progress=run_folder_progress(lambda ctx, part: ctx.runs / part.state[0], ("simclr", "gsimclr")))
             for p in presets for s in seeds],
            report_presets(presets, paper)))
    stages.append(Stage(
        "e", "guidance", f"Guidance on CIFAR-10 with the strong recipe ({GUIDANCE_PRESET}, {GUIDANCE_EPOCHS} epochs): "
        "SimCLR against the guidance variants, kNN and linear P3",
        "python scripts/evidence.py --stage e",
        [Part("e", f"guidance-{v}-seed{s}", f"{EV}/guidance-{v}-seed{s}.json", 300, ("cifar10",), run_guidance(v, s),
              compiles=2, models=(GUIDANCE_PRESET,), state=(f"guidance-{v}-seed{s}",), state_mib=100,
              progress=run_folder_progress(lambda ctx, part: ctx.runs / part.state[0], (GUIDANCE_VARIANTS[v][0],)))
         for v in GUIDANCE_VARIANTS for s in seeds],
        report_guidance))
    stages.append(Stage(
        "f", "checks", "A distributed run (process group, DDP, SyncBatchNorm, gathered negatives) against a plain one; "
        "bf16 against a true fp32 (TF32 off) NT-Xent on a real step",
        "python scripts/evidence.py --stage f",
        [Part("f", "ddp-equal", f"{EV}/ddp-equal.json", 150, ("cifar10",), run_ddp_equal, compiles=3,
              models=("cifar10-resnet18",)),
         Part("f", "bf16-ntxent", f"{EV}/bf16-ntxent.json", 30, ("cifar10",), run_bf16_ntxent)],
        report_checks))
    return stages
