"""Cheap validation probe (README, session 13): train the network `--steps` steps on fresh training pairs, one
pair a step, Adam (amsgrad) with the config's poly decay per 120-step epoch, then score the validation pairs.

One change at a time against the fp32 default (32^3, widths 16..128, Adam 3e-3, lambda 1, seed 42):

    OMP_NUM_THREADS=1 python -m apps.nestedmorph.probe --steps 600 [--lr 6e-3 --warmup 50 | --smooth 0.1 | ...]
    OMP_NUM_THREADS=1 python -m apps.nestedmorph.probe --steps 240 --bf16 net.stages.2.fusion   # (session 14)

`--bf16` runs only the named modules (classes or module names, or `all`) under bf16 autocast;
`--upstream-lr` sets the rate of every parameter before the last decoder stage's blocks.

Prints the val means (SSIM, Dice, HD95, SDlogJ, folding, identity) and the training CPU seconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource

import torch
import torch.nn.functional as F

from apps.nestedmorph.data import NestedMorphDataModule
from apps.nestedmorph.model import RegistrationNet
from apps.nestedmorph.module import NestedMorphModule

EPOCH = 120  # the default's training pairs per epoch


def as_batch(item: dict) -> dict:
    return {k: (v[None] if torch.is_tensor(v) else torch.tensor([v])) for k, v in item.items()}


def in_bf16(root: torch.nn.Module, names: set[str]) -> None:
    """Run the submodules of `root` with these class or module names under CPU bf16 autocast, as bf16-mixed does."""
    for name, m in root.named_modules():
        if {type(m).__name__, name} & names:
            m.forward = _autocast(m.forward)


def _autocast(forward):
    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return torch.utils._pytree.tree_map(
            lambda t: t.float() if torch.is_tensor(t) and t.is_floating_point() else t, out
        )

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--smooth", type=float, default=1.0, help="lambda of Grad3d")
    p.add_argument("--dims", default="16,32,64,128")
    p.add_argument("--integrate", type=int, default=0, help="scaling-and-squaring steps (0: the displacement)")
    p.add_argument("--window", type=int, default=9, help="LNCC window")
    p.add_argument("--amsgrad", type=int, default=1)
    p.add_argument("--ms", type=float, default=0.0, help="weight of a second LNCC on 2x average-pooled volumes")
    p.add_argument("--data-dir", default="data/nestedmorph")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--upstream-lr", type=float, help="lr of all but the last decoder stage's blocks and the head")
    p.add_argument(
        "--bf16",
        default="",
        help="classes or names (net.flow) run under bf16 autocast, or 'all'",
    )
    a = p.parse_args()
    torch.manual_seed(a.seed)
    dm = NestedMorphDataModule(data_dir=a.data_dir, size=32, train_pairs=EPOCH, val_pairs=8)
    dm.prepare_data()
    dm.setup("fit")
    dims = tuple(int(x) for x in a.dims.split(","))
    model = RegistrationNet(size=32, dims=dims, integrate=a.integrate)
    module = NestedMorphModule(model, optimizer=None, smoothness=a.smooth, ncc_window=a.window)
    if a.bf16:
        in_bf16(model, {"net"} if a.bf16 == "all" else set(a.bf16.split(",")))  # net: the whole network
    head = ("net.stages.2.norm", "net.stages.2.blocks", "net.stages.2.up", "net.last", "net.flow")
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n.startswith(head)]}]
    groups.append({"params": [p for n, p in named if not n.startswith(head)]})
    if a.upstream_lr is not None:
        groups[1]["lr"] = a.upstream_lr
    opt = torch.optim.Adam(groups, lr=a.lr, amsgrad=bool(a.amsgrad))
    epochs = a.steps / EPOCH

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / a.warmup) if a.warmup else 1.0
        return warm * max(0.0, 1 - (step // EPOCH) / epochs) ** 0.9

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    for step in range(a.steps):
        if step % EPOCH == 0:
            order = torch.randperm(EPOCH)
        batch = as_batch(dm.datasets["train"][int(order[step % EPOCH])])
        loss, out = module.loss(batch)
        if a.ms:
            loss = loss + a.ms * module.ncc(F.avg_pool3d(out["warped"], 2), F.avg_pool3d(batch["fixed"], 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    model.eval()
    with torch.no_grad():
        rows = [module.pair_scores(as_batch(dm.datasets["val"][i])) for i in range(len(dm.datasets["val"]))]
    means = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in rows[0]}
    print(json.dumps({"args": vars(a), "train_cpu_s": round(cpu)} | means))


if __name__ == "__main__":
    main()
