"""`make bench`: run the benchmarks; each writes JSON (and a markdown table) under benchmarks/results/.

python -m benchmarks.run              # all of them
python -m benchmarks.run attention    # one
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "scgc_speed": "benchmarks.scgc_speed",
    "attention": "benchmarks.attention_bench",
    "deformable": "benchmarks.deformable_bench",  # the Triton kernel needs CUDA (a CPU dry run without it)
    "routing_bilevel": "benchmarks.routing_bench",  # needs CUDA (prints a skip without it)
    "gla": "benchmarks.gla_bench",  # needs CUDA (a CPU dry run of the torch reference without it)
    "sdpa": "benchmarks.sdpa_bench",  # needs CUDA: which SDPA backend serves `softmax` at the apps' shapes
    "fmvit_reparam": "benchmarks.fmvit_reparam",  # FMViT training form vs deploy form, CPU
    "app_throughput": "benchmarks.app_throughput",  # needs CUDA: BiFormer-T training images/s beside timm models
}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"error: unknown benchmark(s) {unknown}; the benchmarks are: {', '.join(BENCHMARKS)}")
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(BENCHMARKS[name]).main()


if __name__ == "__main__":
    main(sys.argv[1:])
