"""Where the time of one GLA forward+backward goes, per GPU kernel: ours against fla's chunk_gla.

python -m benchmarks.gla_profile [--shapes B4-T2048-H16-D128 B8-T1024-H8-D64] [--providers ours fla] [--out FILE.json]

torch.profiler's CUDA time per kernel name (mean over the profiled steps, after warm-up), so the kernels that
miss fla's speed can be named; then our forward+backward under other launch configs (warps and stages per
kernel from `LAUNCH`, block sizes from `_blocks`) than the defaults, timed with `triton.testing.do_bench` and
checked against the default config's output.
Needs CUDA (and fla-core for the fla column).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.gla_bench import SHAPES, make_inputs, provider_fn

STEPS = 5
# launch-config changes tried on top of the defaults: kernel name -> (warps, stages) as in `LAUNCH`, or a
# block key of `_blocks` -> its size (the list measured on the H200 on 2026-11-29, see benchmarks/README.md)
VARIANTS = [
    {"BK_A": 32},
    {"BK_A": 64},
    {"fwd_a": (2, 1)},
    {"fwd_a": (8, 1)},
    {"fwd_a_diag": (1, 1)},
    {"fwd_a_diag": (4, 1)},
    {"BK_D": 64},
    {"BK_D": 64, "fwd_a_diag": (1, 1)},
    {"BK_D": 64, "fwd_a_diag": (4, 1)},
    {"BK_D": 32},
    {"BK_D": 32, "fwd_a_diag": (4, 1)},
    {"fwd_o": (4, 3)},
    {"bwd_intra": (2, 1)},
    {"bwd_intra": (8, 1)},
    {"bwd_dv": (8, 2)},
    {"bwd_inter": (8, 2)},
    {"bwd_da": (4, 2)},
    {"fwd_h": (4, 3), "bwd_dh": (4, 3)},
    {"BK": 32},
    {"BV": 32},
    {"BV_H": 32},
    {"BK_H": 32},
    {"fwd_h": (8, 2)},
]


def kernel_times(fn, leaves, do) -> dict[str, float]:
    """{kernel name: mean CUDA ms per forward+backward}, warm-up first (fla autotunes on a new shape)."""
    for _ in range(3):
        fn(*leaves).backward(do)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            fn(*leaves).backward(do)
        torch.cuda.synchronize()
    times = defaultdict(float)
    for event in prof.key_averages():
        if event.device_time_total > 0:
            times[event.key[:80]] += event.device_time_total / 1e3 / STEPS
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def config_sweep(leaves, do) -> list[dict]:
    """Our forward+backward ms under each of VARIANTS (default first), with the max |dq| change."""
    from triton.testing import do_bench

    import common.attention.gla.triton as ours

    default_launch, default_blocks = dict(ours.LAUNCH), ours._blocks
    rows = []
    reference = None
    for change in [{}] + VARIANTS:
        blocks = {key: size for key, size in change.items() if key not in ours.LAUNCH}
        ours.LAUNCH.update({key: cfg for key, cfg in change.items() if key in ours.LAUNCH})
        ours._blocks = lambda *a, blocks=blocks: {**default_blocks(*a), **blocks}
        try:
            fn = lambda: ours.gla_chunked_triton(*leaves)[0].backward(do)  # noqa: E731
            for leaf in leaves:
                leaf.grad = None
            fn()
            dq = leaves[0].grad.float().clone()
            reference = dq if reference is None else reference
            ms = do_bench(fn, warmup=25, rep=100)
            rows.append({"change": str(change), "ms": ms, "dq_max_diff": (dq - reference).abs().max().item()})
        except Exception as exc:  # noqa: BLE001 - a config the kernels reject is a result too
            rows.append({"change": str(change), "error": f"{type(exc).__name__}: {exc}"[:200]})
        finally:
            ours.LAUNCH.clear()
            ours.LAUNCH.update(default_launch)
            ours._blocks = default_blocks
        print("  config", rows[-1])
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gla_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["B4-T2048-H16-D128", "B8-T1024-H8-D64"])
    parser.add_argument("--providers", nargs="+", default=["ours", "fla"], choices=["ours", "fla"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {}
    for name in args.shapes:
        b, t, h, d = SHAPES[name]
        leaves, do = make_inputs(b, t, h, d, torch.device("cuda"))
        for provider in args.providers:
            fn = provider_fn(provider, b, t, h, d)
            if isinstance(fn, str):
                print(f"{name} {provider}: skipped, {fn}")
                continue
            times = kernel_times(fn, leaves, do)
            results[f"{name}/{provider}"] = times
            print(f"\n{name} {provider}: total {sum(times.values()):.3f} ms per forward+backward")
            for kernel, ms in list(times.items())[:12]:
                print(f"  {ms:8.3f} ms  {kernel}")
        results[f"{name}/configs"] = config_sweep(leaves, do)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
