"""FMViT's structural re-parameterisation: training form against deploy form, side by side, CPU.

For each model: BatchNorm statistics and affines are randomised (so that folding them is really
exercised), the model is put in eval mode and deep-copied, and the copy is folded with `reparameterize()`.
It reports the max |train-form - deploy-form| on one random fp32 batch, the parameters of both forms, and
the median forward time over interleaved repeats after warm-up. One process, same input, `--threads`
intra-op threads.

    nice .venv/bin/python -m benchmarks.fmvit_reparam      # writes benchmarks/results/cpu/fmvit_reparam.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from apps.fmvit.model import build_fmvit

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (variant, img_size, in_chans, classes, batch)
    ("cpu", 28, 1, 10, 64),
    ("t", 224, 3, 1000, 8),
]


def _randomize_bn(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@torch.no_grad()
def measure(variant: str, size: int, chans: int, classes: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    train_form = build_fmvit(variant, num_classes=classes, in_chans=chans, img_size=size)
    _randomize_bn(train_form)
    train_form.eval()
    deploy = copy.deepcopy(train_form).reparameterize()
    x = torch.randn(batch, chans, size, size)
    want, got = train_form(x), deploy(x)
    times: dict[str, list[float]] = {"train_form": [], "deploy": []}
    for _ in range(repeats):
        for name, model in (("train_form", train_form), ("deploy", deploy)):
            start = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "variant": variant,
        "input": [batch, chans, size, size],
        "max_abs_diff": (got - want).abs().max().item(),
        "max_abs_logit": want.abs().max().item(),
        "params_train_form": sum(p.numel() for p in train_form.parameters()),
        "params_deploy": sum(p.numel() for p in deploy.parameters()),
        "median_ms_train_form": med["train_form"],
        "median_ms_deploy": med["deploy"],
        "speedup": med["train_form"] / med["deploy"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    rows = [measure(*case, repeats=args.repeats) for case in CASES]
    out = ROOT / "benchmarks" / "results" / "cpu" / "fmvit_reparam.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    for r in rows:
        print(
            f"fmvit_{r['variant']} {r['input']}: max|diff| {r['max_abs_diff']:.1e} "
            f"(max|logit| {r['max_abs_logit']:.1f}), "
            f"params {r['params_train_form']:,} -> {r['params_deploy']:,}, "
            f"median {r['median_ms_train_form']:.1f} -> {r['median_ms_deploy']:.1f} ms (x{r['speedup']:.2f})"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
