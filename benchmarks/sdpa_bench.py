"""Which SDPA backend serves the core's `softmax` at the apps' shapes, and how close it gets to the H200's peak.

    python -m benchmarks.sdpa_bench --out benchmarks/results/h200/sdpa.json      (CUDA only)

For each shape: the backend torch's dispatcher picks (`torch._fused_sdp_choice`, the choice `softmax` gets),
then each backend pinned with `sdpa_kernel`, forward and forward+backward, bf16, median of
`triton.testing.do_bench`. TFLOP/s by the FlashAttention convention (forward 4*B*H*Nq*Nk*d, halved when
causal; backward 2.5x forward) over 989 (H100/H200 dense bf16 peak). A backend that cannot serve a shape
(flash with an additive bias) is recorded as unsupported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.machine import machine_info
from common.utils.files import write_json

PEAK_TFLOPS = 989.0
BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# (name, B, H, N, d, causal, additive bias): where each app calls softmax attention.
SHAPES = [
    ("bivit deit_tiny 224", 128, 3, 197, 64, False, False),
    ("bivit deit_small 224", 128, 6, 197, 64, False, False),
    ("biformer_tiny stage4 (global)", 128, 16, 49, 32, False, False),
    ("relation_detr decoder self-attn + relation bias", 8, 8, 900, 32, False, True),
    ("focus_detr decoder self-attn", 8, 8, 900, 32, False, False),
    ("lina_speech causal", 8, 16, 2048, 64, True, False),
    ("FA reference d128", 4, 16, 4096, 128, False, False),
]


def _flops(b, h, n, d, causal):
    fwd = 4 * b * h * n * n * d / (2 if causal else 1)
    return fwd, 3.5 * fwd


def _bench(fn):
    from triton.testing import do_bench

    for _ in range(5):
        fn()
    return do_bench(fn, quantiles=[0.5, 0.2, 0.8])


def run_shape(name, b, h, n, d, causal, bias):
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.randn(b, h, n, n, device="cuda", dtype=torch.bfloat16) if bias else None
    do = torch.randn_like(q)
    choice = SDPBackend(torch._fused_sdp_choice(q, k, v, mask, 0.0, causal)).name
    fwd_flops, total_flops = _flops(b, h, n, d, causal)
    rows = []
    for backend in BACKENDS:
        call = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # noqa: B023
        row = dict(shape=name, B=b, H=h, N=n, d=d, causal=causal, bias=bias, backend=backend.name, default=choice)
        try:
            with sdpa_kernel([backend]):
                fwd = _bench(call)
                both = _bench(lambda: call().backward(do))  # noqa: B023
        except RuntimeError as exc:  # this backend cannot serve the shape
            rows.append(row | dict(supported=False, why=str(exc).splitlines()[0][:160]))
            continue
        rows.append(
            row
            | dict(
                supported=True,
                fwd_ms=fwd[0],
                fwd_p20_p80=fwd[1:],
                fwdbwd_ms=both[0],
                fwdbwd_p20_p80=both[1:],
                fwd_tflops=fwd_flops / fwd[0] / 1e9,
                fwdbwd_tflops=total_flops / both[0] / 1e9,
            )
        )
        rows[-1]["fwd_frac_peak"] = rows[-1]["fwd_tflops"] / PEAK_TFLOPS
        rows[-1]["fwdbwd_frac_peak"] = rows[-1]["fwdbwd_tflops"] / PEAK_TFLOPS
    return rows


def table(rows) -> str:
    lines = [
        "| shape | B-H-N-d | default | backend | fwd ms | fwd TFLOP/s (/989) | fwd+bwd ms | fwd+bwd TFLOP/s (/989) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dims = f"{r['B']}-{r['H']}-{r['N']}-{r['d']}"
        if not r["supported"]:
            lines.append(f"| {r['shape']} | {dims} | {r['default']} | {r['backend']} | unsupported | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {dims} | {r['default']} | {r['backend']} | {r['fwd_ms']:.3f} | "
            f"{r['fwd_tflops']:.0f} ({r['fwd_frac_peak']:.0%}) | {r['fwdbwd_ms']:.3f} | "
            f"{r['fwdbwd_tflops']:.0f} ({r['fwdbwd_frac_peak']:.0%}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/h200/sdpa.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("sdpa_bench needs CUDA (it measures the GPU's SDPA backends)")
    rows = [r for shape in SHAPES for r in run_shape(*shape)]
    write_json(args.out, dict(machine=machine_info("cuda"), peak_tflops=PEAK_TFLOPS, rows=rows))
    print(table(rows))


if __name__ == "__main__":
    main()
