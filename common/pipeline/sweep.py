"""Hydra callback that ends an Optuna sweep by printing the best trial (the sweeper writes it to
`<multirun folder>/optimization_results.yaml`)."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrintBestTrial(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        results = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if not results.is_file():
            print(f"\nsweep finished; no optimisation results at {results}")
            return
        best = yaml.safe_load(results.read_text())
        print(f"\nbest trial ({config.get('optimized_metric')} = {best.get('best_value')}):")
        for key, value in (best.get("best_params") or {}).items():
            print(f"  {key}={value}")
        print(f"written: {results}", flush=True)
