"""One distributed training step, run under torchrun by the ``ddp-equal`` part (never imported by gsimclr).

Every process joins the process group the way gsimclr's commands do (:func:`gsimclr.distributed.init_world`:
NCCL on GPUs, gloo on CPUs, even for one process), wraps a small model in DistributedDataParallel (with
SyncBatchNorm on GPUs), takes its contiguous share of one fixed global batch, and computes NT-Xent with
the other processes' embeddings gathered as negatives, in float64. Rank 0 writes what happened (backend, world size,
DDP, SyncBatchNorm layers, rows gathered, the loss) to ``--out`` and the averaged gradient beside it
(``.npy``): with any number of processes it must equal the one-process gradient of the whole batch, within
the difference that reordering the batch alone makes (NT-Xent's logits are float32: ``reorder_floor``).

    python -m torch.distributed.run --standalone --nproc_per_node=2 scripts/evidence_runner/ddp_probe.py \
        --device cpu --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.distributed as dist

    import gsimclr.distributed as distributed
    import gsimclr.loss.ntxent as ntxent
    from gsimclr.config import load_config
    from gsimclr.distributed import close_world, convert_sync_batch_norm, init_world, world_device
    from gsimclr.runtime import resolve_device
    from gsimclr.training.pretrain import build_model

    world = init_world(args.device)
    device = resolve_device(world_device(args.device, world))
    cfg = load_config("cifar10-resnet18", {"model": "paper_resnet", "n_blocks": 0, "head_dims": [32, 16],
                                           "image_size": 16, "device": args.device})
    torch.manual_seed(0)
    model = build_model(cfg).to(device, torch.float64)  # float64: any difference left is the distributed path's
    model.eval()  # BatchNorm on running statistics: the step does not depend on how the batch is split
    sync_layers = 0
    if dist.is_initialized() and device.type == "cuda":
        convert_sync_batch_norm(model)
        sync_layers = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.is_initialized() else model
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(args.batch, 3, 16, 16, generator=gen, dtype=torch.float64)
    share = args.batch // world.size
    mine = images[world.rank * share:(world.rank + 1) * share].to(device)
    views = torch.stack([mine, mine.flip(-1)])

    rows = []
    gather = distributed.gather

    def spy(x):
        out = gather(x)
        rows.append(list(out[0].shape))
        return out

    distributed.gather = spy  # the losses look it up in gsimclr.distributed at each call
    try:
        emb = ddp(views.flatten(0, 1))
        emb = emb[1] if isinstance(emb, tuple) else emb
        loss = ntxent.nt_xent(emb.reshape(2, share, -1), cfg.temperature, gather=True)
        loss.backward()
    finally:
        distributed.gather = gather
    total = loss.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(total)
        total /= world.size
    grad = torch.cat([p.grad.detach().flatten().double().cpu() for p in model.parameters() if p.grad is not None])
    floor = None
    if world.size == 1:  # the same batch in another order: the loss's float32 rounding alone (the floor)
        model.zero_grad(set_to_none=True)
        other = mine.roll(share // 2, dims=0)
        emb = ddp(torch.stack([other, other.flip(-1)]).flatten(0, 1))
        ntxent.nt_xent(emb.reshape(2, share, -1), cfg.temperature, gather=True).backward()
        again = torch.cat([p.grad.detach().flatten().double().cpu() for p in model.parameters() if p.grad is not None])
        floor = float((again - grad).norm() / grad.norm())
    if world.rank == 0:
        out = Path(args.out)
        np.save(out.with_suffix(".npy"), grad.numpy())
        out.write_text(json.dumps({
            "process_group": dist.is_initialized(), "backend": dist.get_backend() if dist.is_initialized() else None,
            "world_size": world.size, "distributed": world.distributed, "device": str(device),
            "ddp": isinstance(ddp, torch.nn.parallel.DistributedDataParallel), "sync_batch_norm_layers": sync_layers,
            "local_rows": share, "gathered_shape": rows[0] if rows else None, "loss": float(total),
            "reorder_floor": floor}))
    close_world()
    return 0


if __name__ == "__main__":
    sys.exit(main())
