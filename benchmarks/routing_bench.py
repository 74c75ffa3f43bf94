"""Bi-level routing attention core: the fused Triton kernel vs the gather reference at BiFormer-T's shapes.

    python -m benchmarks.routing_bench --out benchmarks/results/h200/routing_bilevel.json   # on a GPU
    python -m benchmarks.routing_bench --graphed --out FILE.json   # also both providers CUDA-graphed
    python -m benchmarks.routing_bench --dry-run        # the logic on CPU, tiny shape, torch reference only
    python -m benchmarks.run routing_bilevel            # through the runner (skips without CUDA)

Shapes: BiFormer-T's three routed stages at 224x224 input (qk_dim = C, head dim 32, n_win 7):
stage1 56x56, C 64, 2 heads, top-k 1; stage2 28x28, C 128, 4 heads, top-k 4; stage3 14x14, C 256,
8 heads, top-k 16; batch 64 and 128; bf16. Inputs `randn`; q, k, v separate contiguous maps.

Providers: "triton" (`bilevel_routing_attention(..., impl="triton")`) and "torch" (the gather reference
`bilevel_routing_attention_torch`, the official code's algorithm); with --graphed also "triton-graphed" and
"torch-graphed", each captured as CUDA graphs forward and backward (`torch.cuda.make_graphed_callables`) and
compared with each other (a replay skips Python and kernel launches but not the autograd engine).
Modes: "fwd" and "fwd+bwd" (backward of a fixed `randn` output gradient into q, k, v; their grads are set
to None before each call).

Protocol: every provider/shape/mode is called 5 times before timing; time = `triton.testing.do_bench(fn,
quantiles=[0.5, 0.2, 0.8])` (median, p20, p80 in ms). Peak memory: one separate fwd+bwd call after
`reset_peak_memory_stats`, `max_memory_allocated` minus what was allocated before it (inputs, output
gradient). Accuracy: max abs error and relative RMS error of the output (fwd) and of dq, dk, dv (fwd+bwd,
the worst of the three) against the reference run in fp32 on the same inputs, for both providers.
Speedup = reference median / ours; memory ratio = our peak / reference peak. The issue's targets:
fwd+bwd speedup >= 2 and memory ratio <= 0.5. GPU ms: the summed durations of the call's kernels
(`benchmarks.timing.gpu_busy_ms`), without the host's launch cost that do_bench includes once a call is
shorter on the GPU than on the host; GPU speedup = their ratio.

Outputs: the JSON given by --out (written atomically: a temporary file, then a rename) and a markdown table,
printed and written next to it (.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from benchmarks.timing import cuda_graphed, gpu_busy_ms
from common.attention.routing_bilevel import bilevel_routing_attention, bilevel_routing_attention_torch
from common.utils.files import write_text

RESULTS = Path(__file__).resolve().parent / "results"
# name: (H, W, C, heads, n_win, topk)
STAGES = {
    "stage1": (56, 56, 64, 2, 7, 1),
    "stage2": (28, 28, 128, 4, 7, 4),
    "stage3": (14, 14, 256, 8, 7, 16),
}
BATCHES = (64, 128)
DRY_STAGES = {"tiny": (14, 14, 32, 2, 7, 4)}
DRY_BATCHES = (2,)
WARMUP_CALLS = 5
MODES = ("fwd", "fwd+bwd")


def _providers(dry_run: bool, graphed: bool = False) -> dict:
    """name -> fn(q, k, v, heads, n_win, topk) -> out; with `graphed`, also each provider CUDA-graphed."""
    providers = {"torch": bilevel_routing_attention_torch}
    if not dry_run:
        providers = {
            "triton": lambda *a: bilevel_routing_attention(*a, impl="triton"),
            **providers,
        }
    if graphed and not dry_run:
        providers.update({f"{name}-graphed": cuda_graphed(op, (0, 1, 2)) for name, op in list(providers.items())})
    return providers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn, leaves, device: torch.device) -> tuple[float, float, float]:
    """(median, p20, p80) in ms: do_bench on CUDA, perf_counter over 5 calls on CPU (the dry run)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return tuple(do_bench(fn, quantiles=[0.5, 0.2, 0.8], grad_to_none=leaves))
    times = []
    for _ in range(5):
        for t in leaves:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=5)  # 20/40/60/80 percent cut points
    return statistics.median(times), q[0], q[3]


def _peak_bytes(fn, leaves, device: torch.device) -> int | None:
    """Extra bytes allocated at peak during one call (None on CPU)."""
    if device.type != "cuda":
        return None
    for t in leaves:
        t.grad = None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    for t in leaves:
        t.grad = None
    return int(peak)


def _errors(ref: list[torch.Tensor], out: list[torch.Tensor]) -> tuple[float, float]:
    """(max abs error, relative RMS error), the worst over the pairs."""
    max_abs = rel = 0.0
    for r, o in zip(ref, out):
        diff = o.double() - r.double()
        max_abs = max(max_abs, diff.abs().max().item())
        rel = max(rel, (diff.norm() / r.double().norm().clamp_min(1e-30)).item())
    return max_abs, rel


def measure_shape(
    name: str, batch: int, shape: tuple, dtype: torch.dtype, device: torch.device, providers: dict, log=print
) -> list[dict]:
    """Records of every provider and mode at one shape."""
    height, width, channels, heads, n_win, topk = shape
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(batch, height, width, channels, generator=g).to(device, dtype) for _ in range(4))
    leaves = [t.requires_grad_(True) for t in (q, k, v)]

    # fp32 reference on the same (rounded) inputs: output and grads
    ref_leaves = [t.detach().float().requires_grad_(True) for t in leaves]
    ref_out = bilevel_routing_attention_torch(*ref_leaves, heads, n_win, topk)
    ref_out.backward(do.float())
    ref_grads = [t.grad for t in ref_leaves]
    ref_out = ref_out.detach()
    del ref_leaves

    tokens = batch * height * width * channels
    ideal = {"fwd": 8 * tokens, "fwd+bwd": 24 * tokens}  # 2-byte q,k,v,o (+ o,do,q,k,v read, dq,dk,dv written)
    records = []
    for provider, op in providers.items():

        def fwd(op=op):
            with torch.no_grad():
                return op(q, k, v, heads, n_win, topk)

        def fwd_bwd(op=op):
            op(q, k, v, heads, n_win, topk).backward(do)

        # accuracy, once
        out = fwd()
        err_fwd = _errors([ref_out], [out])
        for t in leaves:
            t.grad = None
        fwd_bwd()
        err_bwd = _errors(ref_grads, [t.grad for t in leaves])
        del out
        peak = _peak_bytes(fwd_bwd, leaves, device)
        for mode, fn, err in (("fwd", fwd, err_fwd), ("fwd+bwd", fwd_bwd, err_bwd)):
            for _ in range(WARMUP_CALLS):
                fn()
                for t in leaves:
                    t.grad = None
            _sync(device)
            median, p20, p80 = _time_ms(fn, leaves if mode == "fwd+bwd" else [], device)
            gpu_ms = gpu_busy_ms(fn, leaves if mode == "fwd+bwd" else []) if device.type == "cuda" else None
            record = {
                "stage": name,
                "batch": batch,
                "H": height,
                "W": width,
                "C": channels,
                "heads": heads,
                "n_win": n_win,
                "topk": topk,
                "dtype": str(dtype).removeprefix("torch."),
                "provider": provider,
                "mode": mode,
                "median_ms": median,
                "p20_ms": p20,
                "p80_ms": p80,
                "gpu_ms": gpu_ms,
                "bytes_ideal": ideal[mode],
                "gb_per_s_ideal": ideal[mode] / (median * 1e-3) / 1e9,
                "peak_bytes_fwd_bwd": peak,
                "max_abs_err_vs_fp32_ref": err[0],
                "rel_rmse_vs_fp32_ref": err[1],
            }
            records.append(record)
            log(
                f"{name} B{batch} {provider:6s} {mode:7s} {median:8.3f} ms  "
                f"gpu {'-' if gpu_ms is None else f'{gpu_ms:.3f}'} ms  "
                f"peak {'-' if peak is None else f'{peak / 2**20:.0f} MiB'}  max_abs {err[0]:.2e}"
            )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return records


def add_ratios(records: list[dict]) -> None:
    """speedup (reference time / ours) and memory ratio (our peak / reference peak), in place. The reference
    is "torch", or "torch-graphed" for a graphed provider (whose peak lives in its graph pool: no memory ratio)."""
    by = {(r["stage"], r["batch"], r["mode"], r["provider"]): r for r in records}
    for r in records:
        graphed = r["provider"].endswith("-graphed")
        ref = by.get((r["stage"], r["batch"], r["mode"], "torch-graphed" if graphed else "torch"))
        r["speedup_vs_ref"] = ref["median_ms"] / r["median_ms"] if ref else None
        gpu_both = ref and ref["gpu_ms"] and r["gpu_ms"]
        r["gpu_speedup_vs_ref"] = ref["gpu_ms"] / r["gpu_ms"] if gpu_both else None
        both = ref and ref["peak_bytes_fwd_bwd"] and r["peak_bytes_fwd_bwd"] is not None and not graphed
        r["mem_ratio_vs_ref"] = r["peak_bytes_fwd_bwd"] / ref["peak_bytes_fwd_bwd"] if both else None


def markdown(records: list[dict], meta: dict) -> str:
    def num(x, fmt):
        return "" if x is None else format(x, fmt)

    lines = [
        f"Device: {meta['device_name']}; torch {meta['torch']}, CUDA {meta['cuda']}, triton {meta['triton']}; "
        f"{meta['date']}. Times: median (p20-p80) ms; peak: extra MiB during one fwd+bwd; errors vs the fp32 "
        "reference (output for fwd, worst of dq/dk/dv for fwd+bwd).\n",
        "| stage | batch | provider | mode | median ms | p20-p80 | GPU busy ms | GB/s ideal | peak MiB | speedup "
        "| GPU speedup | mem ratio | max abs err | rel RMSE |",
        "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        peak = None if r["peak_bytes_fwd_bwd"] is None else r["peak_bytes_fwd_bwd"] / 2**20
        lines.append(
            f"| {r['stage']} | {r['batch']} | {r['provider']} | {r['mode']} | {r['median_ms']:.3f} | "
            f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f} | {num(r['gpu_ms'], '.3f')} | {r['gb_per_s_ideal']:.0f} | "
            f"{num(peak, '.0f')} | {num(r['speedup_vs_ref'], '.2f')} | {num(r['gpu_speedup_vs_ref'], '.2f')} | "
            f"{num(r['mem_ratio_vs_ref'], '.3f')} | "
            f"{r['max_abs_err_vs_fp32_ref']:.2e} | {r['rel_rmse_vs_fp32_ref']:.2e} |"
        )
    targets = [
        r for r in records if r["provider"] == "triton" and r["mode"] == "fwd+bwd" and r["speedup_vs_ref"] is not None
    ]
    if targets:
        lines.append("\nTargets (fwd+bwd speedup >= 2, memory ratio <= 0.5):\n")
        for r in targets:
            ok_t = r["speedup_vs_ref"] >= 2
            ok_m = r["mem_ratio_vs_ref"] is not None and r["mem_ratio_vs_ref"] <= 0.5
            lines.append(
                f"- {r['stage']} B{r['batch']}: speedup {r['speedup_vs_ref']:.2f} ({'met' if ok_t else 'MISSED'}), "
                f"memory ratio {num(r['mem_ratio_vs_ref'], '.3f')} ({'met' if ok_m else 'MISSED'})"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routing_bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="", help="JSON path (default benchmarks/results/<device>/routing_bilevel.json)"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, a tiny shape, the torch reference only")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument(
        "--graphed", action="store_true", help="also time both providers CUDA-graphed (make_graphed_callables)"
    )
    args = parser.parse_args(argv or [])

    if args.dry_run:
        device, stages, batches, dtype = torch.device("cpu"), DRY_STAGES, DRY_BATCHES, torch.bfloat16
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("routing_bilevel: skipped, needs CUDA (run with --dry-run to check the logic on the CPU)")
            return None
        device, dtype = torch.device("cuda"), torch.bfloat16
        stages = {s: STAGES[s] for s in args.stages.split(",") if s}
        batches = tuple(int(b) for b in args.batches.split(",") if b)
    default_name = "routing_bilevel_dry.json" if args.dry_run else "routing_bilevel.json"
    out = Path(args.out) if args.out else RESULTS / device.type / default_name

    providers = _providers(args.dry_run, args.graphed)
    start = time.perf_counter()
    records = []
    for name, shape in stages.items():
        for batch in batches:
            records += measure_shape(name, batch, shape, dtype, device, providers)
    add_ratios(records)
    meta = {
        **machine_info(device),
        "dry_run": args.dry_run,
        "protocol": f"{WARMUP_CALLS} warm-up calls, then triton.testing.do_bench quantiles [0.5, 0.2, 0.8]"
        if device.type == "cuda"
        else f"{WARMUP_CALLS} warm-up calls, then perf_counter over 5 calls (dry run)",
        "memory_method": "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated "
        "before the call"
        if device.type == "cuda"
        else None,
        "wall_s": time.perf_counter() - start,
    }
    table = markdown(records, meta)
    write_text(out, json.dumps({"meta": meta, "records": records}, indent=1))
    write_text(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md').name} in {meta['wall_s']:.1f} s")
    return {"meta": meta, "records": records}


if __name__ == "__main__":
    main(sys.argv[1:])
