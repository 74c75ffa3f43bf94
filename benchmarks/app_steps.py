"""Training throughput of an app as its users run it: Lightning training steps of the app's own config (data
module, model, loss, optimizer, precision), eager against `compile=true` (and `compile=reduce-overhead`, inductor's
CUDA graphs), in one process.

    python -m benchmarks.app_steps --app nestedmorph --overrides experiment=nestedmorph_paper trainer.precision=32
    python -m benchmarks.app_steps --app risurconv --compile no      # eager only
    python -m benchmarks.app_steps --app lina_speech --pack-frames 4096 --overrides ...   # 4k-frame sequences
    python -m benchmarks.app_steps --app biformer --cached-batches 4 --overrides ...      # the loader out of the steps

The config is `configs/train.yaml` composed for the app with `trainer=gpu` (or `--trainer`) and the overrides;
validation, checkpoints and loggers are off. `--warmup` batches run untimed (compilation happens there), then
`--steps` batches are timed between two CUDA synchronisations: samples/s (the batch's first dimension, as the
pipeline's own throughput callback counts it), peak memory and graph breaks. The data loader is inside the timed
steps, as in training, unless `--cached-batches N`: then N batches are drawn once and replayed, so that a
host-bound loader (224 px JPEG decoding) does not hide the model's step. Rows are appended to
<out>/app_steps.json and .md (default benchmarks/results/<card>/).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from benchmarks.machine import machine_info
from benchmarks.packing import pack_train_split
from common.pipeline.build import build_datamodule, build_model, build_module, build_trainer
from common.pipeline.callbacks import batch_size
from common.pipeline.runs import CONFIG_DIR

RESULTS = Path(__file__).resolve().parent / "results"
# --compile: the `compile` values measured, in order (the new mode before compile=true: a cut run keeps it)
MODES = {
    "both": (False, True),
    "no": (False,),
    "yes": (True,),
    "reduce-overhead": ("reduce-overhead",),
    "all": (False, "reduce-overhead", True),
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Times the training batches after the first `warmup` ones (CUDA synchronised at both ends)."""

    def __init__(self, warmup: int):
        self.warmup, self.seen, self.samples, self.start, self.seconds = warmup, 0, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.warmup:
            _sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.start is not None:
            self.samples += batch_size(batch)

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def dynamo_counts() -> dict:
    """Graph breaks and graphs captured since the counters were last cleared (dynamo's own bookkeeping): one
    graph per compiled forward means no break and no recompilation (a new input shape is one more graph)."""
    counters = torch._dynamo.utils.counters
    return {"graph_breaks": sum(counters["graph_break"].values()), "graphs": counters["stats"]["unique_graphs"]}


def replay_train_batches(datamodule, count: int, total: int) -> None:
    """Draw `count` training batches once; the datamodule's training loader then replays them, `total` in all."""
    datamodule.setup("fit")
    batches = list(itertools.islice(datamodule.train_dataloader(), count))
    if not batches:
        raise ValueError("the training loader yields no batch")
    replay = _Replay([batches[i % len(batches)] for i in range(total)])
    datamodule.train_dataloader = lambda: replay


class _Replay:
    """An iterable of batches (Lightning reads a plain list as a list of loaders)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def measure(
    app: str, overrides: list[str], trainer: str, compiled, steps: int, warmup: int, pack: int = 0, cached: int = 0
) -> dict:
    """One row; `compiled` is the config's `compile` (False, True or a mode), `pack` > 0 packs the training
    utterances into sequences of that many frames (benchmarks/packing.py), `cached` > 0 replays that many
    batches drawn once."""
    mode = str(compiled).lower() if isinstance(compiled, bool) else compiled
    fixed = [f"app={app}", f"trainer={trainer}", f"compile={mode}", f"paths.root_dir={os.getcwd()}"]
    run = ["+trainer.limit_val_batches=0", f"+trainer.max_steps={steps + warmup}", "trainer.max_epochs=-1"]
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=fixed + list(overrides) + run)
    L.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    if pack:
        pack_train_split(datamodule, pack)
    if cached:
        replay_train_batches(datamodule, cached, steps + warmup)
    model = build_model(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    module = build_module(cfg, model)
    timer = StepTimer(warmup)
    pl_trainer = build_trainer(
        cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    pl_trainer.fit(module, datamodule=datamodule)
    if timer.seconds is None:
        raise RuntimeError(f"{app}: fewer than {warmup + 1} training batches ran")
    return {
        "samples_per_s": round(timer.samples / timer.seconds, 2),
        "step_ms": round(timer.seconds / max(timer.seen - warmup, 1) * 1e3, 2),
        **(dynamo_counts() if compiled else {"graph_breaks": None, "graphs": None}),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "params_m": round(params / 1e6, 3),
        "precision": str(cfg.trainer.get("precision")),
    }


def main(argv: list[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of the app's config")
    parser.add_argument("--trainer", default="gpu", help="the trainer config (cpu for a check without a GPU)")
    parser.add_argument("--compile", choices=tuple(MODES), default="both", help="all: eager, reduce-overhead, true")
    parser.add_argument("--pack-frames", type=int, default=0, help="train on utterances packed to this many frames")
    parser.add_argument("--cached-batches", type=int, default=0, help="replay this many batches drawn once")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, help="folder of app_steps.json/.md (default benchmarks/results/<card>)")
    args = parser.parse_args(list(argv))
    info = machine_info("cuda" if torch.cuda.is_available() else "cpu")
    device = info["device_name"].lower()
    out = args.out or RESULTS / next((c for c in ("h100", "h200") if c in device), device.replace(" ", "_"))
    overrides = " ".join(args.overrides) + (f" (packed to {args.pack_frames} frames)" if args.pack_frames else "")
    overrides += f" ({args.cached_batches} cached batches)" if args.cached_batches else ""
    data = {"pack": args.pack_frames, "cached": args.cached_batches}
    for compiled in MODES[args.compile]:
        row = {"app": args.app, "overrides": overrides.strip(), "compiled": compiled, "steps": args.steps}
        try:
            row |= measure(args.app, args.overrides, args.trainer, compiled, args.steps, args.warmup, **data)
        except Exception as exc:  # noqa: BLE001 - a failed compile or OOM is a result too: record it, go on
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        print(json.dumps(row), flush=True)
        append(out, info, row)
        torch.cuda.empty_cache()


def append(out: Path, info: dict, row: dict) -> None:
    """Add `row` to the json and rewrite the table (a run cut short keeps what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "app_steps.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rows.append(row)
    path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    lines = [
        "| app | overrides | compiled (breaks, graphs) | samples/s | ms/step | peak GiB | params (M) | precision |",
        "| --- " * 8 + "|",
    ]
    for r in rows:
        mode = {True: "yes", False: "no"}.get(r["compiled"], r["compiled"])
        graphs = f", {r['graphs']} graphs" if r.get("graphs") is not None else ""
        compiled = f"{mode} ({r.get('graph_breaks')}{graphs})" if r["compiled"] else "no"
        cells = (r["app"], r["overrides"] or "-", compiled, r.get("samples_per_s", r.get("error")))
        cells += tuple(r.get(key) for key in ("step_ms", "peak_gib", "params_m", "precision"))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    (out / "app_steps.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
