"""Training throughput of whole models, side by side in one process: BiFormer-T (ours eager and compiled, and the
official code when its folder is given) with timm's DeiT-Tiny and ResNet-50 for scale.

    python -m benchmarks.app_throughput [--official PATH_TO_BIFORMER_REPO] [--batches 64 128]

Each row: full training steps (bf16 autocast forward, backward, AdamW step) on random 224 px images and labels,
`--warmup` untimed steps (compilation included) then `--steps` timed ones between two synchronisations; images/s,
peak memory (`torch.cuda.max_memory_allocated` over the timed steps and warm-up), parameters and the last step's
loss. Modes: `eager`, `compiled` (`torch.compile(model)`), `reduce-overhead` (inductor's CUDA graphs of forward and
backward), `graphed` (the whole step, optimizer included, captured once as one CUDA graph and replayed: no Python,
autograd engine or kernel launches left on the host) and `compiled-graphed` (both). The official code is
imported from its own folder (never part of this repository); its unused `fairscale` import is satisfied by an
empty module. Writes benchmarks/results/<card>/app_throughput.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import timm
import torch

from benchmarks.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def ours_biformer_tiny() -> torch.nn.Module:
    from apps.biformer.model import VARIANTS, BiFormer

    return BiFormer(**VARIANTS["tiny"], num_classes=1000)


def official_biformer_tiny(repo: Path) -> torch.nn.Module:
    """BiFormer-T from the official repository's folder (`models/biformer.py`, `ops/bra_legacy.py`)."""
    checkpoint = types.ModuleType("fairscale.nn.checkpoint")
    checkpoint.checkpoint_wrapper = lambda module, *args, **kwargs: module  # only used with use_checkpoint_stages
    for name, module in {
        "fairscale": types.ModuleType("fairscale"),
        "fairscale.nn": types.ModuleType("fairscale.nn"),
        "fairscale.nn.checkpoint": checkpoint,
    }.items():
        sys.modules.setdefault(name, module)
    sys.path.insert(0, str(repo))
    from models.biformer import biformer_tiny  # noqa: PLC0415 (the official folder is on the path only now)

    return biformer_tiny(num_classes=1000)


MODES = ("eager", "compiled", "reduce-overhead", "graphed", "compiled-graphed")


def measure(model: torch.nn.Module, batch: int, steps: int, warmup: int, mode: str, profile: bool = False) -> dict:
    model = model.cuda().train()
    params = sum(p.numel() for p in model.parameters())
    compiled, graphed = mode.startswith("compiled") or mode == "reduce-overhead", mode.endswith("graphed")
    trees = mode == "reduce-overhead"  # inductor's own CUDA graphs (cudagraph trees): forward and backward, not AdamW
    step_model = torch.compile(model, mode="reduce-overhead" if trees else None) if compiled else model
    # a captured step must keep the optimizer's step count on the GPU
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=graphed)
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        if trees:
            torch.compiler.cudagraph_mark_step_begin()
        # autocast's weight-cast cache would hold tensors from outside the graph's memory pool
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed):
            loss = torch.nn.functional.cross_entropy(step_model(images), labels)
        loss.backward()
        opt.step()
        if not graphed:  # a graph's backward writes the same .grad buffers at every replay
            opt.zero_grad(set_to_none=True)
        return loss.detach()

    torch.cuda.reset_peak_memory_stats()
    if graphed:  # warmup - 1 eager steps, the capture (which runs nothing), one replay: warmup steps as the others
        step = whole_step_graph(step, opt, warmup - 1)
    for _ in range(1 if graphed else warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values()) if compiled else None
    row = {
        "images_per_s": round(batch * steps / seconds, 1),
        "graph_breaks": breaks,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "params_m": round(params / 1e6, 3),
        # all modes train the same weights on the same fixed batch for as many steps: equal losses (to bf16 noise)
        # show that a captured or compiled step does the same work
        "final_loss": round(float(loss), 4),
    }
    return row | (host_and_gpu(step) if profile else {})


def whole_step_graph(step, opt: torch.optim.Optimizer, warmup: int):
    """`step` (forward, backward, optimizer) captured as one CUDA graph, after `warmup` eager steps on a side stream
    (compilation, Triton autotuning and cuDNN's search happen there, outside the capture); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()

    def replay():
        graph.replay()
        return loss

    return replay


def host_and_gpu(step, steps: int = 5) -> dict:
    """Where a step's time goes, by torch.profiler over `steps` steps: wall ms, GPU busy ms (kernel time summed),
    kernel launches, and the ten aten ops with the most host (self CPU) time, per step."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "profiled_wall_ms": round(wall_ms, 2),
        "gpu_busy_ms": round(sum(e.device_time for e in kernels) / 1e3 / steps, 2),
        "kernels_per_step": round(len(kernels) / steps),
        "top_host_ops_us": {e.key: round(e.self_cpu_time_total / steps) for e in ops[:10]},
    }


def main(argv: list[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="folder of the official BiFormer repository")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["eager", "compiled"])
    parser.add_argument("--models", nargs="+", help="only the models whose names contain one of these words")
    parser.add_argument("--out", type=Path, help="folder for the json and md (default benchmarks/results/<card>)")
    parser.add_argument("--profile", action="store_true", help="also profile 5 steps: host vs GPU time, launches")
    args = parser.parse_args(list(argv))
    if not torch.cuda.is_available():
        print("app_throughput: needs CUDA; skipped")
        return
    torch.backends.cudnn.benchmark = True
    builders = {"biformer_tiny (ours)": ours_biformer_tiny}
    if args.official:
        builders["biformer_tiny (official)"] = lambda: official_biformer_tiny(args.official)
    builders |= {
        "deit_tiny_patch16_224 (timm)": lambda: timm.create_model("deit_tiny_patch16_224", num_classes=1000),
        "resnet50 (timm)": lambda: timm.create_model("resnet50", num_classes=1000),
    }
    if args.models:
        builders = {name: build for name, build in builders.items() if any(word in name for word in args.models)}
    info = machine_info("cuda")
    device = info["device_name"].lower()
    out = args.out or RESULTS / next((card for card in ("h100", "h200") if card in device), device.replace(" ", "_"))
    rows = []
    for batch in args.batches:
        for name, build in builders.items():
            for mode in args.modes:
                torch.manual_seed(0)
                torch._dynamo.reset()
                torch._dynamo.utils.counters.clear()
                try:
                    row = measure(build(), batch, args.steps, args.warmup, mode, args.profile)
                except Exception as exc:  # noqa: BLE001 - OOM or a failed compile: record it, go on
                    row = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                rows.append({"model": name, "batch": batch, "mode": mode} | row)
                print(json.dumps(rows[-1]), flush=True)
                write(out, info, args, rows)  # after every row: a run cut short keeps what it measured
                torch.cuda.empty_cache()
    print((out / "app_throughput.md").read_text())


def write(out: Path, info: dict, args, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    (out / "app_throughput.json").write_text(json.dumps(meta, indent=2) + "\n")
    header = "| model | batch | mode (graph breaks) | images/s | peak GiB | params (M) | final loss |"
    lines = [header, "| --- " * 7 + "|"]
    for r in rows:
        mode = r["mode"] + (f" ({r['graph_breaks']})" if r.get("graph_breaks") is not None else "")
        cells = (r["model"], r["batch"], mode, r.get("images_per_s", r.get("error")))
        more = (r.get(key, "") for key in ("peak_gib", "params_m", "final_loss"))
        lines.append("| " + " | ".join(map(str, (*cells, *more))) + " |")
    (out / "app_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
