"""Attention speed and memory: forward+backward time and peak memory of every registered mechanism vs N.

    python -m benchmarks.run attention                      # through the runner (defaults below)
    python -m benchmarks.attention_bench --device cpu       # directly, with options (see --help)

Setting (fixed width, the sequence length N varies): dim 64, 4 heads, batch 1, float32, each mechanism
built with its registry defaults (`common.attention.build(name, 64, 4)`, so non-causal except the
causal-only gla, aaren and lightning), in training mode, N = 256 ... 16384 (powers of two). One call is
forward, then backward of a fixed random output gradient, to the parameters and the input.

The call follows each mechanism's layout (`Capabilities.layout`):
    - "tokens" / "any": `module(x)` with x [1, N, 64];
    - "2d": `module(x, hw=(H, W))` with H * W = N, H = 2^floor(k/2), W = 2^ceil(k/2) for N = 2^k;
    - "multiscale" (deformable_ms, not a token mixer): N queries (reference points uniform in [0, 1]) over
      N value tokens in 4 levels of N/2, N/4, N/8, N/8 tokens (each level an H x W grid as above).

Time: median of `time.perf_counter` over 3-10 calls (as many as fit in about 2 s, at least 3) after one
warm-up call; on CUDA each call ends with `torch.cuda.synchronize()`. CPU runs use one thread by default.
Memory: peak bytes allocated during one separate forward+backward call, above what was allocated before
it (parameters, input and output gradient are allocated before and not counted). On CUDA that is
`torch.cuda.max_memory_allocated()` minus the allocation at the start, after `reset_peak_memory_stats`.
On CPU (tracemalloc does not see torch's allocator) it is the running sum of the allocation and free
records of `torch.profiler.profile(profile_memory=True)` (the "[memory]" events of every tensor allocated
or freed by torch's CPU allocator), in time order; its maximum is the peak.

Caps: a (mechanism, N) is skipped, and recorded as skipped with the reason, when its time or memory
predicted from the two previous N (growth factor between 2x and 4x per doubling; 4x for O(N^2) ones)
exceeds the cap (default 8 s per call, 4 GiB), or when a smaller N was already skipped or failed. A call
that still runs over the time cap is recorded as over the cap (its one measured time in the reason).

Outputs, in benchmarks/results/<device>/: attention.json (raw records, setting, crossovers),
attention.md (tables) and attention_time.png (log-log time vs N).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks.machine import cpu_name
from common.attention import MECHANISMS, build, capabilities

RESULTS = Path(__file__).resolve().parent / "results"
NS = [2**k for k in range(8, 15)]  # 256 ... 16384
DIM, HEADS, BATCH = 64, 4, 1
TIME_CAP_S = 8.0
MEM_CAP_BYTES = 4 * 2**30
DS_LEVEL_FRACTIONS = (2, 4, 8, 8)  # deformable_ms: level l holds N / fraction tokens (sums to N)
REPEAT_BUDGET_S = 2.0
MIN_REPEATS, MAX_REPEATS = 3, 10


def grid(n: int) -> tuple[int, int]:
    """A square-ish (H, W) with H * W = n for n a power of two (H <= W)."""
    k = int(math.log2(n))
    if 2**k != n:
        raise ValueError(f"n must be a power of two, got {n}")
    return 2 ** (k // 2), 2 ** (k - k // 2)


def _inputs(name: str, n: int, dim: int, batch: int, device: torch.device, generator: torch.Generator):
    """(args, kwargs, tensors that get gradients) for one call of mechanism `name` at length n."""

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    layout = capabilities(name).layout
    x = randn(batch, n, dim).requires_grad_(True)
    if layout == "2d":
        return (x,), {"hw": grid(n)}, [x], {"hw": list(grid(n))}
    if layout == "multiscale":
        shapes = [grid(n // f) for f in DS_LEVEL_FRACTIONS]
        spatial = torch.tensor(shapes, dtype=torch.long, device=device)
        sizes = spatial.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        value = randn(batch, int(sizes.sum()), dim).requires_grad_(True)
        ref = torch.rand(batch, n, len(shapes), 2, generator=generator).to(device)
        return (x, ref, value, spatial, starts), {}, [x, value], {"levels": [list(s) for s in shapes], "queries": n}
    return (x,), {}, [x], {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_peak_bytes(fn) -> int:
    """Peak bytes allocated by torch's CPU allocator while `fn()` runs, above the level at its start."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def measure(
    name: str,
    n: int,
    *,
    device: str | torch.device = "cpu",
    dim: int = DIM,
    heads: int = HEADS,
    batch: int = BATCH,
    seed: int = 0,
    min_repeats: int = MIN_REPEATS,
    max_repeats: int = MAX_REPEATS,
    repeat_budget_s: float = REPEAT_BUDGET_S,
    time_cap_s: float = float("inf"),
) -> dict:
    """Forward+backward time and peak memory of mechanism `name` at sequence length `n`.

    Returns a record: mechanism, n, layout, cost, status ("ok" or "over_cap"), time_s (median), times
    (every timed call), repeats, peak_bytes, shape (layout details), reason (for "over_cap").
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    caps = capabilities(name)
    module = build(name, dim, heads).to(device).train()
    args, kwargs, leaves, shape = _inputs(name, n, dim, batch, device, generator)
    with torch.no_grad():
        out = module(*args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    grad_out = torch.randn(out.shape, generator=generator).to(device)
    del out
    tensors = [*module.parameters(), *leaves]

    def step():
        out = module(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad_out)

    def timed() -> float:
        for t in tensors:
            t.grad = None
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - start

    record = {
        "mechanism": name,
        "n": n,
        "layout": caps.layout,
        "cost": caps.cost,
        "shape": shape,
    }
    warm = timed()
    if warm > time_cap_s:
        return {**record, "status": "over_cap", "reason": f"one call took {warm:.1f} s > cap {time_cap_s:g} s"}
    times = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < repeat_budget_s):
        times.append(timed())

    for t in tensors:
        t.grad = None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _cpu_peak_bytes(step)
    return {
        **record,
        "status": "ok",
        "time_s": statistics.median(times),
        "times": times,
        "repeats": len(times),
        "peak_bytes": int(peak),
    }


def _predict(history: list[dict], key: str, quadratic: bool) -> float | None:
    """Value of `key` at the next N (double the last), from the last one or two measured records."""
    if not history:
        return None
    last = history[-1][key]
    growth = 4.0 if quadratic else 2.0
    if len(history) >= 2 and history[-2][key] > 0:
        growth = max(growth, history[-1][key] / history[-2][key])
    return last * min(growth, 4.0)


def run_benchmark(
    names: list[str],
    ns: list[int],
    *,
    device: str = "cpu",
    time_cap_s: float = TIME_CAP_S,
    mem_cap_bytes: int = MEM_CAP_BYTES,
    log=print,
) -> list[dict]:
    """Every (mechanism, N), with the caps applied; returns the records in order."""
    records = []
    for name in names:
        history: list[dict] = []
        stopped = None  # reason carried to every larger N once one is skipped or fails
        quadratic = capabilities(name).cost == "N^2"
        for n in sorted(ns):
            base = {"mechanism": name, "n": n, "layout": capabilities(name).layout, "cost": capabilities(name).cost}
            if stopped is None and history:
                t_pred = _predict(history, "time_s", quadratic)
                m_pred = _predict(history, "peak_bytes", quadratic)
                prev = history[-1]
                if t_pred > time_cap_s:
                    stopped = (
                        f"predicted {t_pred:.1f} s per call > cap {time_cap_s:g} s "
                        f"(from {prev['time_s']:.2f} s at N={prev['n']})"
                    )
                elif m_pred > mem_cap_bytes:
                    stopped = (
                        f"predicted peak {m_pred / 2**30:.1f} GiB > cap {mem_cap_bytes / 2**30:g} GiB "
                        f"(from {prev['peak_bytes'] / 2**30:.2f} GiB at N={prev['n']})"
                    )
                if stopped is not None:
                    record = {**base, "status": "skipped", "reason": stopped}
                    records.append(record)
                    log(f"{name:16s} N={n:6d}  skipped: {stopped}")
                    continue
            elif stopped is not None:
                record = {**base, "status": "skipped", "reason": f"larger than a skipped N ({stopped})"}
                records.append(record)
                log(f"{name:16s} N={n:6d}  skipped (larger than a skipped N)")
                continue
            try:
                record = measure(name, n, device=device, time_cap_s=time_cap_s)
            except Exception as err:  # recorded, not raised: one mechanism's failure must not stop the rest
                record = {**base, "status": "error", "reason": f"{type(err).__name__}: {err}"[:500]}
            records.append(record)
            if record["status"] == "ok":
                history.append(record)
                log(
                    f"{name:16s} N={n:6d}  {record['time_s'] * 1e3:10.2f} ms  "
                    f"{record['peak_bytes'] / 2**20:10.1f} MiB  ({record['repeats']} repeats)"
                )
            else:
                stopped = record["reason"]
                log(f"{name:16s} N={n:6d}  {record['status']}: {record['reason']}")
            if device == "cuda":
                torch.cuda.empty_cache()
    return records


def crossovers(records: list[dict], reference: str = "softmax") -> dict[str, dict]:
    """For each sub-quadratic mechanism: the smallest grid N from which it is faster than `reference` at
    every larger N where it ran (the reference skipped for time counts as slower), or None.

    Also `interpolated`: the N where the log-log lines cross between that grid N and the one before it.
    """
    by = {(r["mechanism"], r["n"]): r for r in records}
    ns = sorted({r["n"] for r in records})
    mechanisms = list(dict.fromkeys(r["mechanism"] for r in records))
    result = {}
    for name in mechanisms:
        cost = next(r["cost"] for r in records if r["mechanism"] == name)
        if name == reference or cost == "N^2":
            continue
        faster = {}  # n -> bool, where it can be compared
        for n in ns:
            mine, ref = by.get((name, n)), by.get((reference, n))
            if mine is None or mine["status"] != "ok" or ref is None:
                continue
            if ref["status"] == "ok":
                faster[n] = mine["time_s"] < ref["time_s"]
            elif ref["status"] in ("skipped", "over_cap") and "GiB" not in ref.get("reason", ""):
                faster[n] = True  # the reference would take longer than the cap, this one ran under it
        compared = sorted(faster)
        crossover = None
        for i, n in enumerate(compared):
            if all(faster[m] for m in compared[i:]):
                crossover = n
                break
        interpolated = None
        if crossover is not None:
            i = compared.index(crossover)
            if i > 0:
                lo = compared[i - 1]
                a, b = by[(name, lo)], by[(reference, lo)]
                c, d = by[(name, crossover)], by.get((reference, crossover))
                if d is not None and d["status"] == "ok":
                    r0 = math.log(a["time_s"] / b["time_s"])
                    r1 = math.log(c["time_s"] / d["time_s"])
                    frac = r0 / (r0 - r1) if r0 != r1 else 1.0
                    interpolated = int(round(math.exp(math.log(lo) + frac * (math.log(crossover) - math.log(lo)))))
        result[name] = {
            "cost": cost,
            "crossover_n": crossover,
            "faster_from_smallest_n": crossover is not None and crossover == (compared[0] if compared else None),
            "interpolated_n": interpolated,
            "compared_ns": compared,
        }
    return result


def crossover_text(name: str, info: dict, ns: list[int]) -> str:
    if info["crossover_n"] is None:
        return "none in range"
    if info["faster_from_smallest_n"] and info["crossover_n"] == min(ns):
        return f"faster at every N (from N={info['crossover_n']})"
    text = f"N={info['crossover_n']}"
    if info["interpolated_n"]:
        text += f" (log-log interpolation: ~{info['interpolated_n']})"
    return text


def _cell(record: dict | None, key: str) -> str:
    if record is None:
        return ""
    if record["status"] == "ok":
        if key == "time_s":
            t = record["time_s"] * 1e3
            return f"{t:.3g}" if t < 1000 else f"{t:.0f}"
        return f"{record['peak_bytes'] / 2**20:.3g}"
    return {"skipped": "skip", "over_cap": "over cap", "error": "error"}[record["status"]]


def markdown(records: list[dict], meta: dict, cross: dict) -> str:
    ns = meta["ns"]
    names = list(dict.fromkeys(r["mechanism"] for r in records))
    by = {(r["mechanism"], r["n"]): r for r in records}
    head = "| mechanism | cost | " + " | ".join(str(n) for n in ns) + " |\n"
    rule = "|---|---|" + "---:|" * len(ns) + "\n"
    lines = [
        f"Device: {meta['device_name']}; torch {meta['torch']}; threads {meta['threads']}; dim {meta['dim']}, "
        f"{meta['heads']} heads, batch {meta['batch']}, float32; forward+backward; caps {meta['time_cap_s']:g} s per "
        f"call, {meta['mem_cap_bytes'] / 2**30:g} GiB. Run {meta['date']} ({meta['wall_s'] / 60:.1f} min).\n",
        "Forward+backward time (ms, median):\n",
        head
        + rule
        + "".join(
            f"| {m} | {capabilities(m).cost} | " + " | ".join(_cell(by.get((m, n)), "time_s") for n in ns) + " |\n"
            for m in names
        ),
        "Peak memory allocated during forward+backward (MiB):\n",
        head
        + rule
        + "".join(
            f"| {m} | {capabilities(m).cost} | " + " | ".join(_cell(by.get((m, n)), "peak_bytes") for n in ns) + " |\n"
            for m in names
        ),
        f"Crossover with `{meta['reference']}` (the smallest N from which the mechanism is faster at every larger "
        "N it ran at):\n",
        "| mechanism | cost | faster than softmax from |\n|---|---|---|\n"
        + "".join(f"| {m} | {info['cost']} | {crossover_text(m, info, ns)} |\n" for m, info in cross.items()),
    ]
    not_ok = [r for r in records if r["status"] != "ok"]
    if not_ok:
        lines.append(
            "Skipped or failed:\n\n"
            + "".join(f"- {r['mechanism']} N={r['n']}: {r['status']}: {r['reason']}\n" for r in not_ok)
        )
    return "\n".join(lines)


def plot(records: list[dict], meta: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from common.utils.figures import save_figure

    names = list(dict.fromkeys(r["mechanism"] for r in records))
    colors = plt.get_cmap("tab20").colors + plt.get_cmap("Dark2").colors
    fig, ax = plt.subplots(figsize=(10, 7))
    for i, name in enumerate(names):
        ok = sorted((r["n"], r["time_s"]) for r in records if r["mechanism"] == name and r["status"] == "ok")
        if not ok:
            continue
        ns, ts = zip(*ok)
        quadratic = capabilities(name).cost == "N^2"
        style = {"color": "black", "linewidth": 3} if name == meta["reference"] else {"color": colors[i % len(colors)]}
        label = f"{name} ({capabilities(name).cost})"
        ax.plot(ns, ts, "--" if quadratic else "-", marker="o", markersize=3, label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("forward+backward time (s)")
    ax.set_title(
        f"Attention fwd+bwd on {meta['device']} (dim {meta['dim']}, {meta['heads']} heads, batch {meta['batch']}); "
        "dashed: O(N^2)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--mechanisms", default="", help="comma-separated names (default: every registered one)")
    parser.add_argument("--ns", default=",".join(map(str, NS)), help="comma-separated sequence lengths (powers of 2)")
    parser.add_argument("--time-cap", type=float, default=TIME_CAP_S, help="seconds per fwd+bwd call")
    parser.add_argument("--mem-cap-gib", type=float, default=MEM_CAP_BYTES / 2**30)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default="", help="output folder (default benchmarks/results/<device>)")
    args = parser.parse_args(argv or [])

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(args.threads)
    names = [m for m in args.mechanisms.split(",") if m] or list(MECHANISMS)
    ns = sorted(int(n) for n in args.ns.split(","))
    out = Path(args.out) if args.out else RESULTS / device
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    records = run_benchmark(
        names, ns, device=device, time_cap_s=args.time_cap, mem_cap_bytes=int(args.mem_cap_gib * 2**30)
    )
    meta = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "dim": DIM,
        "heads": HEADS,
        "batch": BATCH,
        "dtype": "float32",
        "ns": ns,
        "time_cap_s": args.time_cap,
        "mem_cap_bytes": int(args.mem_cap_gib * 2**30),
        "reference": "softmax",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - start,
        "memory_method": "torch.cuda.max_memory_allocated"
        if device == "cuda"
        else "torch.profiler profile_memory=True allocation records, running sum",
    }
    cross = crossovers(records) if "softmax" in names else {}
    (out / "attention.json").write_text(json.dumps({"meta": meta, "records": records, "crossovers": cross}, indent=1))
    (out / "attention.md").write_text(markdown(records, meta, cross))
    plot(records, meta, out / "attention_time.png")
    for name, info in cross.items():
        print(f"crossover {name:16s} ({info['cost']}): {crossover_text(name, info, ns)}")
    print(f"wrote {out}/attention.{{json,md}} and attention_time.png in {meta['wall_s'] / 60:.1f} min")
    return {"meta": meta, "records": records, "crossovers": cross}


if __name__ == "__main__":
    main(sys.argv[1:])
