"""Collect crypto_forecast runs (metrics.json + config.yaml below folders) into the README's results table.

    python -m apps.crypto_forecast.results_table runs/crypto_forecast/multirun/<time> [more folders...]

One block of rows per series: the naive last-value forecast (scored in every run on the same test
windows), then each architecture: test RMSE (and its ratio to the naive RMSE), MAE, MAPE (%), direction
accuracy, and the best val RMSE (the checkpoint selection metric). Several runs of one (series, arch)
(seeds) are shown as mean ± sample std. The best mean test RMSE among the trained models is bold.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common.utils.results import collect_runs, mean_std

ARCH_ORDER = ("lstm", "bilstm", "transformer", "performer_bilstm")
SERIES_ORDER = ("btc_1d", "eth_1d", "ltc_1d", "btc_1h")


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
            rmse = mean_std(test["rmse"], 3)
            rmse = f"**{rmse}**" if means[arch] == min(means.values()) else rmse
            cells = (
                rmse,
                mean_std([v / naive["rmse"] for v in test["rmse"]], 4),
                mean_std(test["mae"], 3),
                mean_std(test["mape"], 3),
                mean_std(test["dir_acc"], 3),
                mean_std([r["monitor"]["best"] for r in rs], 3),
            )
            lines.append(_row(series, arch, str(len(rs)), *cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    roots = [Path(a) for a in argv]
    if not roots or not all(r.is_dir() for r in roots):
        sys.exit("usage: python -m apps.crypto_forecast.results_table RUN_FOLDER [RUN_FOLDER ...]")
    print(render(collect_runs(roots)))


if __name__ == "__main__":
    main(sys.argv[1:])
