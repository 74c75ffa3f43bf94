"""Chunked GLA speed: our Triton kernel vs fla's `chunk_gla` vs our torch reference vs SDPA causal (bf16).

    python -m benchmarks.gla_bench --out benchmarks/results/h200/gla.json              (CUDA)
    python -m benchmarks.gla_bench --shapes B1-T8192-H96-D128 --modes fwd              (a subset)
    python -m benchmarks.gla_bench --dry-run                                           (CPU, torch only)

Shapes: fla's `ci` set (benchmarks/ops/registry.py), layout [B, T, H, D], K = V = D. Inputs randn, gate
g = logsigmoid(randn).clamp_min(-5), bf16; backward with do = randn_like(o). Providers:
    ours  - `common.attention.gla.triton.gla_chunked_triton`
    fla   - `fla.ops.gla.chunk_gla` (skipped when fla is not installed)
    torch - `gla_chunked_torch` (skipped where its estimated memory is too large or one call takes > 2 s)
    sdpa  - softmax attention, causal, FLASH backend pinned, [B, H, T, D] (the cost anchor)
Protocol: every provider is warmed on every selected shape and mode 5 times before anything is timed
(fla autotunes per new shape, for minutes); then `triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])`
(median, p20, p80; grads set to None outside the timed region). Forward runs under no_grad.
Per record: ms, peak extra memory of one call (max_memory_allocated after reset_peak_memory_stats, minus
what was allocated before), bandwidth on ideal bytes (forward: read q, k, v, g and write o = 10*B*H*T*D
bytes; forward+backward: that plus reading q, k, v, g, do and writing dq, dk, dv, dg = 28*B*H*T*D) over
4.8e12 B/s, ours/fla time ratio, and the max abs (and relative RMS) difference of ours vs fla (o in fwd;
dq, dk, dv, dg in fwdbwd). Results merge into an existing --out file (same shape/provider/mode replaced),
so a run split over several calls ends in one JSON; written atomically; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.machine import machine_info
from common.attention.gla import gla_chunked_torch
from common.utils.files import write_json

HBM_BYTES_PER_S = 4.8e12
SHAPES = {  # name: (B, T, H, D)
    "B1-T8192-H96-D128": (1, 8192, 96, 128),
    "B2-T16384-H16-D128": (2, 16384, 16, 128),
    "B4-T2048-H16-D128": (4, 2048, 16, 128),
    "B4-T4096-H64-D128": (4, 4096, 64, 128),
    "B8-T2048-H32-D256": (8, 2048, 32, 256),
    "B8-T1024-H8-D64": (8, 1024, 8, 64),
}
DRY_SHAPES = {"B1-T100-H2-D32": (1, 100, 2, 32)}
MODES = ("fwd", "fwdbwd")
PROVIDERS = ("ours", "fla", "torch", "sdpa")
WARMUP_CALLS = 5
TORCH_MAX_BYTES = 24 * 2**30  # the reference's per-chunk [B, H, C, C, K] fp32 maps, kept for backward
TORCH_MAX_CALL_S = 2.0


def make_inputs(b, t, h, d, device, dtype=torch.bfloat16, seed=0):
    """q, k, v, g [B, T, H, D] (leaves requiring grad) and do [B, T, H, D]."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn():
        return torch.randn(b, t, h, d, generator=gen, device=device, dtype=torch.float32)

    q, k, v = randn(), randn(), randn()
    g = F.logsigmoid(randn()).clamp_min(-5)
    do = randn()
    leaves = [x.to(dtype).requires_grad_() for x in (q, k, v, g)]
    return leaves, do.to(dtype)


def _torch_bytes(b, t, h, d) -> int:
    return 4 * b * h * t * 64 * d * 4  # ~4 saved fp32 maps of [B, H, C, C, K] per chunk


def provider_fn(name: str, b, t, h, d):
    """A callable (q, k, v, g) -> o for `name`, or a string saying why it is skipped."""
    if name == "ours":
        from common.attention.gla.triton import gla_chunked_triton

        return lambda q, k, v, g: gla_chunked_triton(q, k, v, g)[0]
    if name == "fla":
        try:
            from fla.ops.gla import chunk_gla
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
            return f"fla not importable ({type(exc).__name__}: {exc})"[:160]
        return lambda q, k, v, g: chunk_gla(q, k, v, g)[0]
    if name == "torch":
        if _torch_bytes(b, t, h, d) > TORCH_MAX_BYTES:
            return f"estimated {_torch_bytes(b, t, h, d) / 2**30:.0f} GiB > {TORCH_MAX_BYTES / 2**30:.0f} GiB"
        return lambda q, k, v, g: gla_chunked_torch(q, k, v, g)[0]
    if name == "sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(q, k, v, g):
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                o = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=True)
            return o.transpose(1, 2)

        return sdpa
    raise ValueError(f"unknown provider {name}")


def _call(fn, leaves, do, mode):
    """One forward (no_grad) or forward+backward call."""
    if mode == "fwd":
        with torch.no_grad():
            return fn(*leaves)
    o = fn(*leaves)
    o.backward(do)
    return o


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _time_ms(fn, leaves, do, mode, device) -> list[float]:
    """[median, p20, p80] ms: do_bench on CUDA; on the CPU (dry run) 3 perf_counter calls."""

    def step():
        _call(fn, leaves, do, mode)

    if device.type == "cuda":
        from triton.testing import do_bench

        return list(do_bench(step, quantiles=[0.5, 0.2, 0.8], grad_to_none=leaves))
    times = []
    for _ in range(3):
        for x in leaves:
            x.grad = None
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return [times[1], times[0], times[2]]


def _peak_bytes(fn, leaves, do, mode, device) -> int | None:
    if device.type != "cuda":
        return None
    for x in leaves:
        x.grad = None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    _call(fn, leaves, do, mode)
    _sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def _outputs(fn, leaves, do, mode):
    """o (fwd) or the grads dq, dk, dv, dg (fwdbwd), float32, for the error columns."""
    for x in leaves:
        x.grad = None
    o = _call(fn, leaves, do, mode)
    if mode == "fwd":
        return [o.float()]
    return [x.grad.float() for x in leaves]


def _errors(ours, ref) -> dict:
    max_abs = max((a - b).abs().max().item() for a, b in zip(ours, ref))
    rel = max(((a - b).norm() / b.norm().clamp_min(1e-12)).item() for a, b in zip(ours, ref))
    return dict(max_abs_err_vs_fla=max_abs, rel_rms_err_vs_fla=rel)


def run(shapes: dict, modes, providers, device: torch.device) -> list[dict]:
    fns = {s: {p: provider_fn(p, *dims) for p in providers} for s, dims in shapes.items()}
    skipped = {}  # (shape, provider, mode) -> why
    # 1) warm every provider on every shape and mode (fla autotunes here), and drop what cannot run
    for s, dims in shapes.items():
        leaves, do = make_inputs(*dims, device)
        for p, fn in fns[s].items():
            for mode in modes:
                if isinstance(fn, str):
                    skipped[s, p, mode] = fn
                    continue
                try:
                    start = time.perf_counter()
                    for _ in range(WARMUP_CALLS):
                        _call(fn, leaves, do, mode)
                        _sync(device)
                        if p == "torch" and time.perf_counter() - start > TORCH_MAX_CALL_S * WARMUP_CALLS:
                            raise TimeoutError(f"warm-up calls took > {TORCH_MAX_CALL_S:g} s each")
                except Exception as exc:  # noqa: BLE001 - OOM, too slow, or a failed compile: record, go on
                    skipped[s, p, mode] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                for x in leaves:
                    x.grad = None
                _free(device)
        print(f"warmed {s}", flush=True)
    # 2) time, memory, errors
    records = []
    for s, (b, t, h, d) in shapes.items():
        leaves, do = make_inputs(b, t, h, d, device)
        for mode in modes:
            ideal = (10 if mode == "fwd" else 28) * b * h * t * d
            outs, row_ms = {}, {}
            for p in providers:
                rec = dict(shape=s, B=b, T=t, H=h, D=d, provider=p, mode=mode, dtype="bf16")
                if (s, p, mode) in skipped:
                    records.append(rec | dict(status="skipped", why=skipped[s, p, mode]))
                    continue
                fn = fns[s][p]
                ms = _time_ms(fn, leaves, do, mode, device)
                row_ms[p] = ms[0]
                rec |= dict(
                    status="ok",
                    ms=ms[0],
                    p20_p80_ms=ms[1:],
                    peak_bytes=_peak_bytes(fn, leaves, do, mode, device),
                    ideal_bytes=ideal,
                    bandwidth_frac=ideal / (ms[0] * 1e-3) / HBM_BYTES_PER_S,
                )
                if p in ("ours", "fla"):
                    outs[p] = _outputs(fn, leaves, do, mode)
                records.append(rec)
            for rec in records[-len(providers) :]:
                if rec["provider"] == "ours" and "fla" in row_ms and "ours" in row_ms:
                    rec |= dict(ours_over_fla=row_ms["ours"] / row_ms["fla"], **_errors(outs["ours"], outs["fla"]))
            print(f"timed {s} {mode}", flush=True)
        del leaves, do
        _free(device)
    return records


def merge(path: Path, records: list[dict]) -> list[dict]:
    """Records of an earlier (partial) run at `path`, with those of this run replacing the same keys."""
    if not path.exists():
        return records
    key = lambda r: (r["shape"], r["provider"], r["mode"])  # noqa: E731
    new = {key(r) for r in records}
    old = json.loads(path.read_text()).get("records", [])
    return [r for r in old if key(r) not in new] + records


def table(records: list[dict]) -> str:
    lines = [
        "| shape | mode | provider | ms (p20-p80) | ours/fla | GB/s ideal (/4.8 TB/s) | peak MiB "
        "| max abs err vs fla |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        head = f"| {r['shape']} | {r['mode']} | {r['provider']} "
        if r["status"] != "ok":
            lines.append(head + f"| skipped: {r['why']} | | | | |")
            continue
        peak = "" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        ratio = f"{r['ours_over_fla']:.2f}" if "ours_over_fla" in r else ""
        err = f"{r['max_abs_err_vs_fla']:.2e}" if "max_abs_err_vs_fla" in r else ""
        lines.append(
            head + f"| {r['ms']:.3f} ({r['p20_p80_ms'][0]:.3f}-{r['p20_p80_ms'][1]:.3f}) | {ratio} | "
            f"{r['ideal_bytes'] / (r['ms'] * 1e-3) / 1e9:.0f} ({r['bandwidth_frac']:.1%}) | {peak} | {err} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gla_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/h200/gla.json)")
    parser.add_argument("--shapes", nargs="+", default=None, help=f"subset of {list(SHAPES)}")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--dry-run", action="store_true", help="CPU, a tiny shape, the torch reference only")
    args = parser.parse_args(argv or [])
    if not args.dry_run and not torch.cuda.is_available():
        print("gla_bench needs CUDA: running the CPU dry run (torch reference, tiny shape) instead")
        args.dry_run = True
    if args.dry_run:
        shapes, providers, device = DRY_SHAPES, ["torch"], torch.device("cpu")
        out = args.out or Path("benchmarks/results/cpu/gla_dryrun.json")
    else:
        unknown = set(args.shapes or []) - set(SHAPES)
        if unknown:
            raise SystemExit(f"unknown shapes {sorted(unknown)}; the shapes are {list(SHAPES)}")
        shapes = {s: SHAPES[s] for s in (args.shapes or SHAPES)}
        providers, device = args.providers, torch.device("cuda")
        out = args.out or Path("benchmarks/results/h200/gla.json")
    records = run(shapes, args.modes, providers, device)
    machine = machine_info(device)
    if device.type == "cuda":
        try:
            import fla

            machine["fla"] = getattr(fla, "__version__", "unknown")
        except ImportError:
            machine["fla"] = None
    records = merge(out, records)
    write_json(out, dict(machine=machine, hbm_bytes_per_s=HBM_BYTES_PER_S, records=records))
    print(table(records))
    print(f"wrote {out}")
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
