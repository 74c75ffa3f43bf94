"""Focus-DETR's point is cost: its encoder against the dense (DINO) encoder of the same model, side by side.

    python -m apps.focus_detr.benchmark                      # the default app config's model, 128 px
    python -m apps.focus_detr.benchmark --runs runs/focus_detr/A runs/focus_detr/B   # + their test metrics
    python -m apps.focus_detr.benchmark --paper --size 800 --batch 1 --repeats 1     # the paper's sizes

Same weights, same input: the encoder's FLOPs (torch.utils.flop_counter.FlopCounterMode, with grid_sample
counted as 4 corners x (mul + add) per output value, which the counter does not know) and its wall time
(median of repeats, one thread), then the whole detector's forward. With `--runs`, the test metrics of
trained runs (metrics.json) are printed beside them, e.g. a default run and one with model.dense_encoder=true.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from apps.focus_detr.model import FocusDETR

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "app" / "focus_detr.yaml"


def grid_sample_flops(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """Bilinear sampling: 4 corners, a multiply and an add each, per output value."""
    n, c = input_shape[:2]
    return 8 * n * c * grid_shape[1] * grid_shape[2]


PAPER = dict(
    backbone="resnet50",
    frozen_bn=True,
    hidden_dim=256,
    ffn_dim=2048,
    num_encoder_layers=6,
    num_decoder_layers=6,
    num_queries=900,
    num_dn_queries=100,
    cascade=None,  # the paper's 1, .8, .6, .6, .4, .2
    num_attn_tokens=300,
)


def default_model_kwargs(num_classes: int = 5) -> dict:
    """The app config's model section (interpolations resolved to the shapes set's 128 px)."""
    model = OmegaConf.to_container(OmegaConf.load(CONFIG).model)
    model.pop("_target_")
    model.update(num_classes=num_classes, class_names=None, image_size=128, max_size=213)
    return model


def count_flops(fn) -> int:
    """Forward FLOPs (grad mode on: FlopCounterMode's module tracker needs autograd nodes)."""
    mapping = {torch.ops.aten.grid_sampler_2d: grid_sample_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def median_seconds(fn, repeats: int) -> float:
    times = []
    with torch.no_grad():
        fn()  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(batch: int = 8, size: int = 128, repeats: int = 10, seed: int = 0, paper: bool = False) -> dict:
    torch.manual_seed(seed)
    kwargs = default_model_kwargs(80 if paper else 5) | (PAPER if paper else {})
    model = FocusDETR(**kwargs).eval()
    images = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        tokens = model.tokens(images, None)
    rows = {}
    for name, dense in (("focus", False), ("dense", True)):
        model.encoder.dense = dense

        def encoder():
            return model.encode(tokens)

        rows[name] = {
            "encoder_gflops": count_flops(encoder) / 1e9,
            "encoder_ms": 1e3 * median_seconds(encoder, repeats),
            "detector_gflops": count_flops(lambda: model(images)) / 1e9,
            "detector_ms": 1e3 * median_seconds(lambda: model(images), repeats),
            "kept_per_layer": model.encoder.kept_counts(tokens),
            "tokens": int(tokens.src.shape[1]),
        }
    model.encoder.dense = False
    rows["ratio"] = {
        k: rows["focus"][k] / rows["dense"][k]
        for k in ("encoder_gflops", "encoder_ms", "detector_gflops", "detector_ms")
    }
    rows["setting"] = {
        "model": "paper (R50, 256, 6+6, 900 queries)" if paper else "app default",
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--paper", action="store_true", help="the paper's model sizes (80 classes)")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders whose test metrics to show")
    args = parser.parse_args()
    result = compare(args.batch, args.size, args.repeats, paper=args.paper)
    for run in args.runs:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        result.setdefault("runs", {})[str(run)] = metrics.get("test", {})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
