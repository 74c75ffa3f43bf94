"""Multi-scale deformable attention: the Triton kernel vs the grid_sample reference, time and peak memory.

    python -m benchmarks.deformable_bench --out benchmarks/results/h200/deformable_ms.json   # on the GPU
    python -m benchmarks.deformable_bench --dry-run --out /tmp/msda.json                   # logic check, CPU
    python -m benchmarks.run deformable                                                    # defaults

Shapes (Deformable-DETR, 8 heads, head dim 32, 4 points, levels 100x150, 50x75, 25x38, 13x19 = 19947
tokens): encoder with every token a query at batch 2 and 8; decoder with 900 queries at batch 8. dtypes
fp32 and bf16; modes "fwd" (under no_grad) and "fwd+bwd" (backward of a fixed random output gradient into
value, sampling locations and attention weights).

Protocol: sampling locations uniform in [0, 1], attention weights softmaxed over levels x points, value and
output gradient standard normal. Every (shape, dtype, provider, mode) is called 5 times before it is timed;
time = `triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])` (median, 20th and 80th percentile, ms;
grads set to None between calls). Peak memory = `torch.cuda.max_memory_allocated()` during one call minus
what was allocated before it (the inputs and output gradient are not counted; the grads are). Error = max
abs difference of the output and of each grad from the reference run in fp32 on the same inputs (for the
bf16 reference too, so its own rounding shows). Targets (issue 4): fwd+bwd at least 10x faster than the
reference and at most a quarter of its peak memory. GPU ms: the summed durations of the call's kernels
(`benchmarks.timing.gpu_busy_ms`), without the host's launch cost that do_bench includes once a call is
shorter on the GPU than on the host; GPU speedup = their ratio.

Outputs: the JSON at --out (written atomically: a temporary file, then renamed) and the same table as
markdown next to it (.md), printed too. --dry-run runs the same logic on the CPU at a tiny shape with the
reference only (perf_counter timing, torch.profiler memory); without CUDA the runner does that. --sweep adds
the kernel's times under a few launch configs (block size, warps) at encoder-B2, under "sweep" in the JSON.
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
from common.attention.deformable_ms import deformable_ms_torch
from common.utils.files import write_text

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = [(100, 150), (50, 75), (25, 38), (13, 19)]
HEADS, POINTS, HEAD_DIM = 8, 4, 32
SHAPES = {"encoder-B2": (2, None), "encoder-B8": (8, None), "decoder-B8-Q900": (8, 900)}  # (batch, queries)
DRY_LEVELS, DRY_HEADS, DRY_POINTS, DRY_HEAD_DIM = [(6, 8), (3, 5)], 2, 2, 8
DRY_SHAPES = {"tiny-encoder-B1": (1, None), "tiny-decoder-B2-Q7": (2, 7)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("fwd", "fwd+bwd")
WARMUP_CALLS = 5
TARGET_SPEEDUP, TARGET_MEMORY_RATIO = 10.0, 0.25


def providers(dry_run: bool, graphed: bool = False) -> dict:
    """name -> op; with `graphed`, also the kernel CUDA-graphed (the reference syncs with the host: no graph)."""
    if dry_run:
        return {"reference": deformable_ms_torch}
    from common.attention.deformable_ms.triton import deformable_ms_triton

    ops = {"triton": deformable_ms_triton, "reference": deformable_ms_torch}
    if graphed:  # over value, locations, weights; the level tensors are baked into the graph
        ops["triton-graphed"] = cuda_graphed(deformable_ms_triton, (0, 3, 4))
    return ops


def make_inputs(batch, queries, levels, heads, points, head_dim, dtype, device, seed=0):
    """value [B, Nv, H, D], spatial_shapes [L, 2], level starts [L], locations [B, Nq, H, L, P, 2] in [0, 1],
    weights [B, Nq, H, L, P] (softmax over L * P), output gradient [B, Nq, H * D]; queries None = all tokens."""
    g = torch.Generator(device=device).manual_seed(seed)
    spatial = torch.tensor(levels, dtype=torch.long, device=device)
    sizes = spatial.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_values = int(sizes.sum())
    queries = num_values if queries is None else queries
    nl = len(levels)
    kw = dict(generator=g, device=device)
    value = torch.randn(batch, num_values, heads, head_dim, **kw)
    loc = torch.rand(batch, queries, heads, nl, points, 2, **kw)
    weights = torch.randn(batch, queries, heads, nl * points, **kw).softmax(-1).view(batch, queries, heads, nl, points)
    grad_out = torch.randn(batch, queries, heads * head_dim, **kw)
    value, loc, weights, grad_out = (t.to(dtype) for t in (value, loc, weights, grad_out))
    return value, spatial, starts, loc, weights, grad_out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, leaves) -> dict:
    """Median, 20th and 80th percentile of fn's time in ms (do_bench on CUDA; perf_counter on the CPU)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        med, lo, hi = do_bench(fn, quantiles=[0.5, 0.2, 0.8], grad_to_none=leaves)
        return {"ms": med, "ms_p20": lo, "ms_p80": hi}
    times = []
    for _ in range(7):
        for t in leaves:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=10)
    return {"ms": statistics.median(times), "ms_p20": q[1], "ms_p80": q[7]}


def peak_bytes(fn, device, leaves) -> int:
    """Bytes allocated during one call of fn above what was allocated before it."""
    for t in leaves:
        t.grad = None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from benchmarks.attention_bench import _cpu_peak_bytes

    return int(_cpu_peak_bytes(fn))


def run_case(op, inputs, fp32_ref, mode, device) -> dict:
    """Time, peak memory and error of one provider in one mode."""
    value, spatial, starts, loc, weights, grad_out = inputs
    leaves = [t.requires_grad_(mode == "fwd+bwd") for t in (value, loc, weights)]

    def call():
        if mode == "fwd":
            with torch.no_grad():
                return op(value, spatial, starts, loc, weights)
        op(value, spatial, starts, loc, weights).backward(grad_out)

    for _ in range(WARMUP_CALLS):
        call()
    _sync(device)
    record = time_ms(call, device, leaves if mode == "fwd+bwd" else [])
    if device.type == "cuda":
        record["gpu_ms"] = gpu_busy_ms(call, leaves if mode == "fwd+bwd" else [])
    record["peak_bytes"] = peak_bytes(call, device, leaves)
    # error vs the fp32 reference, from one more call
    for t in leaves:
        t.grad = None
    if mode == "fwd":
        out = call()
        record["max_abs_err"] = {"out": (out.float() - fp32_ref["out"]).abs().max().item()}
    else:
        call()
        names = ("grad_value", "grad_locations", "grad_weights")
        record["max_abs_err"] = {n: (t.grad.float() - fp32_ref[n]).abs().max().item() for n, t in zip(names, leaves)}
    for t in leaves:
        t.grad = None
    return record


def fp32_reference(inputs) -> dict:
    value, spatial, starts, loc, weights, grad_out = inputs
    ins = [t.detach().float().requires_grad_(True) for t in (value, loc, weights)]
    out = deformable_ms_torch(ins[0], spatial, starts, ins[1], ins[2])
    out.backward(grad_out.float())
    ref = {"out": out.detach(), "grad_value": ins[0].grad, "grad_locations": ins[1].grad, "grad_weights": ins[2].grad}
    return ref


def run(dry_run: bool, device: torch.device, shapes=None, dtypes=None, log=print, graphed: bool = False) -> list[dict]:
    levels, heads, points, head_dim = (
        (DRY_LEVELS, DRY_HEADS, DRY_POINTS, DRY_HEAD_DIM) if dry_run else (LEVELS, HEADS, POINTS, HEAD_DIM)
    )
    all_shapes = DRY_SHAPES if dry_run else SHAPES
    shapes = shapes or list(all_shapes)
    dtypes = dtypes or list(DTYPES)
    ops = providers(dry_run, graphed)
    records = []
    for shape in shapes:
        batch, queries = all_shapes[shape]
        for dtype_name in dtypes:
            inputs = make_inputs(batch, queries, levels, heads, points, head_dim, DTYPES[dtype_name], device)
            nq = inputs[3].shape[1]
            samples = batch * nq * heads * len(levels) * points
            elem = inputs[0].element_size()
            unique_bytes = (inputs[0].numel() + 3 * samples + batch * nq * heads * head_dim) * elem
            fp32_ref = fp32_reference(inputs)
            base = dict(shape=shape, dtype=dtype_name, batch=batch, queries=nq, values=inputs[0].shape[1])
            base.update(levels=levels, heads=heads, points=points, head_dim=head_dim, samples=samples)
            for mode in MODES:
                for name, op in ops.items():
                    record = {**base, "provider": name, "mode": mode}
                    try:
                        record.update(run_case(op, inputs, fp32_ref, mode, device), status="ok")
                        record["samples_per_s"] = samples / (record["ms"] * 1e-3)
                        if mode == "fwd":
                            record["unique_bytes"] = unique_bytes
                            record["unique_GBps"] = unique_bytes / (record["ms"] * 1e-3) / 1e9
                        log(f"{shape:18s} {dtype_name} {mode:7s} {name:9s} {record['ms']:9.3f} ms  "
                            f"{record['peak_bytes'] / 2**20:9.1f} MiB")  # fmt: skip
                    except Exception as err:  # recorded, not raised: a failing provider must not stop the rest
                        record.update(status="error", reason=f"{type(err).__name__}: {err}"[:800])
                        log(f"{shape:18s} {dtype_name} {mode:7s} {name:9s} error: {record['reason'][:200]}")
                    records.append(record)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            del inputs, fp32_ref
    add_ratios(records)
    return records


SWEEP = [(512, 4), (1024, 4), (2048, 4), (1024, 2), (2048, 8)]  # (BLOCK_Q * BLOCK_D, num_warps)


def sweep(device: torch.device, shape: str = "encoder-B2", log=print) -> list[dict]:
    """Time the Triton kernel under a few launch configs (both kernels get the same one) at one shape."""
    from common.attention.deformable_ms import triton as msda

    saved = (msda.FWD_ELEMS, msda.BWD_ELEMS, msda.NUM_WARPS)
    batch, queries = SHAPES[shape]
    records = []
    try:
        for dtype_name, dtype in DTYPES.items():
            inputs = make_inputs(batch, queries, LEVELS, HEADS, POINTS, HEAD_DIM, dtype, device)
            fp32_ref = fp32_reference(inputs)
            for elems, warps in SWEEP:
                msda.FWD_ELEMS, msda.BWD_ELEMS, msda.NUM_WARPS = elems, elems, warps
                for mode in MODES:
                    record = {"shape": shape, "dtype": dtype_name, "mode": mode, "elems": elems, "num_warps": warps,
                              "block_q": msda._blocks(HEAD_DIM, elems)[0]}  # fmt: skip
                    label = f"{shape} {dtype_name} {mode:7s} elems {elems:5d} warps {warps}"
                    try:
                        record.update(run_case(msda.deformable_ms_triton, inputs, fp32_ref, mode, device), status="ok")
                        log(f"sweep {label}: {record['ms']:.3f} ms")
                    except Exception as err:
                        record.update(status="error", reason=f"{type(err).__name__}: {err}"[:800])
                        log(f"sweep {label}: error {record['reason'][:200]}")
                    records.append(record)
            del inputs, fp32_ref
    finally:
        msda.FWD_ELEMS, msda.BWD_ELEMS, msda.NUM_WARPS = saved
    return records


def add_ratios(records: list[dict]) -> None:
    """speedup (reference time / ours) and memory_ratio (ours / reference) on every ok non-reference record."""
    refs = {(r["shape"], r["dtype"], r["mode"]): r for r in records if r["provider"] == "reference"}
    for r in records:
        ref = refs.get((r["shape"], r["dtype"], r["mode"]))
        if r["provider"] == "reference" or r["status"] != "ok" or ref is None or ref["status"] != "ok":
            continue
        r["speedup"] = ref["ms"] / r["ms"]
        if r.get("gpu_ms") and ref.get("gpu_ms"):
            r["gpu_speedup"] = ref["gpu_ms"] / r["gpu_ms"]
        r["memory_ratio"] = r["peak_bytes"] / max(ref["peak_bytes"], 1)
        if r["mode"] == "fwd+bwd":
            r["meets_targets"] = r["speedup"] >= TARGET_SPEEDUP and r["memory_ratio"] <= TARGET_MEMORY_RATIO


def markdown(records: list[dict], meta: dict) -> str:
    lines = [
        f"Multi-scale deformable attention on {meta['device_name']} (torch {meta['torch']}, triton {meta['triton']}); "
        f"H{meta['heads']} D{meta['head_dim']} P{meta['points']}, levels {meta['levels']}; {meta['date']}"
        + (" — DRY RUN (CPU, tiny shape, reference only)" if meta["dry_run"] else ""),
        "",
        "| shape | dtype | mode | provider | ms (p20-p80) | GPU busy ms | samples/s | peak MiB | speedup "
        "| GPU speedup | mem ratio | max abs err |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['shape']} | {r['dtype']} | {r['mode']} | {r['provider']} | error | | | | | | | |")
            continue
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else ""
        mem = f"{r['memory_ratio']:.3f}" if "memory_ratio" in r else ""
        if r.get("meets_targets") is not None:
            speed += " ✓" if r["speedup"] >= TARGET_SPEEDUP else " ✗"
            mem += " ✓" if r["memory_ratio"] <= TARGET_MEMORY_RATIO else " ✗"
        err = max(r["max_abs_err"].values())
        gpu = f"{r['gpu_ms']:.3f}" if r.get("gpu_ms") else ""
        gpu_speed = f"{r['gpu_speedup']:.1f}x" if "gpu_speedup" in r else ""
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['mode']} | {r['provider']} | {r['ms']:.3f} ({r['ms_p20']:.3f}-"
            f"{r['ms_p80']:.3f}) | {gpu} | {r['samples_per_s']:.3g} | {r['peak_bytes'] / 2**20:.1f} | {speed} "
            f"| {gpu_speed} | {mem} | {err:.2e} |"
        )
    errors = [r for r in records if r["status"] != "ok"]
    if errors:
        lines += [
            "",
            "Errors:",
            *(f"- {r['shape']} {r['dtype']} {r['mode']} {r['provider']}: {r['reason']}" for r in errors),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deformable_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="", help="JSON path (default benchmarks/results/<device>/deformable_ms.json)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, reference only: checks the logic")
    parser.add_argument("--shapes", default="", help="comma-separated subset of " + ", ".join(SHAPES))
    parser.add_argument("--dtypes", default="", help="comma-separated subset of " + ", ".join(DTYPES))
    parser.add_argument("--sweep", action="store_true", help="also time the kernel's launch configs at encoder-B2")
    parser.add_argument("--graphed", action="store_true", help="also time the kernel CUDA-graphed (triton-graphed)")
    args = parser.parse_args(argv or [])
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: running --dry-run instead (CPU, tiny shape, reference only)")
        args.dry_run = True
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        torch.set_num_threads(1)
    out = Path(args.out) if args.out else RESULTS / device.type / "deformable_ms.json"
    shapes = [s for s in args.shapes.split(",") if s] or None
    dtypes = [d for d in args.dtypes.split(",") if d] or None

    start = time.perf_counter()
    records = run(args.dry_run, device, shapes, dtypes, graphed=args.graphed)
    swept = sweep(device) if args.sweep and not args.dry_run else []
    meta = {
        **machine_info(device),
        "dry_run": args.dry_run,
        "levels": DRY_LEVELS if args.dry_run else LEVELS,
        "heads": DRY_HEADS if args.dry_run else HEADS,
        "points": DRY_POINTS if args.dry_run else POINTS,
        "head_dim": DRY_HEAD_DIM if args.dry_run else HEAD_DIM,
        "protocol": f"{WARMUP_CALLS} warm-up calls; "
        + ("triton.testing.do_bench quantiles [0.5, 0.2, 0.8]" if device.type == "cuda" else "perf_counter, 7 calls")
        + "; peak = max allocated during one call minus allocated before it",
        "targets": {"fwd+bwd speedup >=": TARGET_SPEEDUP, "fwd+bwd memory ratio <=": TARGET_MEMORY_RATIO},
        "wall_s": time.perf_counter() - start,
    }
    table = markdown(records, meta)
    result = {"meta": meta, "records": records, **({"sweep": swept} if swept else {})}
    write_text(out, json.dumps(result, indent=1))
    write_text(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md').name} in {meta['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
