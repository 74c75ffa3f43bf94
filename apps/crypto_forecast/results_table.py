"""Collect crypto_forecast runs (metrics.json + config.yaml below folders) into the README's results table.

    python -m apps.crypto_forecast.results_table runs/crypto_forecast/multirun/<time> [more folders...]

One block of rows per series: the naive last-value forecast (scored in every run on the same test
windows), then each architecture: test RMSE (and its ratio to the naive RMSE), MAE, MAPE (%), direction
accuracy, and the best val RMSE (the checkpoint selection metric). Several runs of one (series, arch)
(seeds) are shown as mean ± sample std. The best mean test RMSE among the trained models is bold.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

ARCH_ORDER = ("lstm", "bilstm", "transformer", "performer_bilstm")
SERIES_ORDER = ("btc_1d", "eth_1d", "ltc_1d", "btc_1h")


def collect(roots: list[Path]) -> dict[str, dict[str, list[dict]]]:
    """series -> arch -> metrics.json of each run."""
    table: dict[str, dict[str, list[dict]]] = {}
    for root in roots:
        for metrics_file in sorted(root.rglob("metrics.json")):
            config_file = metrics_file.parent / "config.yaml"
            if not config_file.is_file():
                continue
            cfg = yaml.safe_load(config_file.read_text())
            metrics = json.loads(metrics_file.read_text())
            table.setdefault(metrics["dataset"], {}).setdefault(cfg["model"]["arch"], []).append(metrics)
    return table


def _stat(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _row(*cells) -> str:
    return "| " + " | ".join(cells) + " |"


def render(table: dict[str, dict[str, list[dict]]]) -> str:
    header = ("series", "model", "runs", "test RMSE", "RMSE / naive", "test MAE", "test MAPE %", "test dir_acc")
    lines = [_row(*header, "val RMSE"), "| --- | --- | ---: |" + " ---: |" * 6]
    for series in sorted(table, key=lambda s: SERIES_ORDER.index(s) if s in SERIES_ORDER else 99):
        runs = table[series]
        first = next(iter(runs.values()))[0]["test"]  # the naive forecast is identical in every run of a series
        naive = {k: first[f"naive_{k}"] for k in ("rmse", "mae", "mape")}
        means = {a: statistics.mean(r["test"]["rmse"] for r in rs) for a, rs in runs.items()}
        cells = (f"{naive['rmse']:.3f}", "1", f"{naive['mae']:.3f}", f"{naive['mape']:.3f}", "—", "—")
        lines.append(_row(series, "naive (last close)", "—", *cells))
        for arch in sorted(runs, key=lambda a: ARCH_ORDER.index(a) if a in ARCH_ORDER else 99):
            rs = runs[arch]
            test = {k: [r["test"][k] for r in rs] for k in ("rmse", "mae", "mape", "dir_acc")}
            rmse = _stat(test["rmse"], 3)
            rmse = f"**{rmse}**" if means[arch] == min(means.values()) else rmse
            cells = (
                rmse,
                _stat([v / naive["rmse"] for v in test["rmse"]], 4),
                _stat(test["mae"], 3),
                _stat(test["mape"], 3),
                _stat(test["dir_acc"], 3),
                _stat([r["monitor"]["best"] for r in rs], 3),
            )
            lines.append(_row(series, arch, str(len(rs)), *cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    roots = [Path(a) for a in argv]
    if not roots or not all(r.is_dir() for r in roots):
        sys.exit("usage: python -m apps.crypto_forecast.results_table RUN_FOLDER [RUN_FOLDER ...]")
    print(render(collect(roots)))


if __name__ == "__main__":
    main(sys.argv[1:])
