"""The convergence script reads val/map_50 per step from two runs' CSV logs, tabulates and plots it."""

from __future__ import annotations

import pandas as pd
import pytest

from apps.relation_detr.convergence import convergence_table, main, metric_by_step


def _run(root, name, values):
    csv = root / name / "logs" / "csv"
    csv.mkdir(parents=True)
    rows = [{"epoch": 0, "step": s, "train/loss_step": 1.0} for s in range(0, 10, 3)]
    rows += [{"epoch": 0, "step": s, "val/map_50": v} for s, v in values.items()]
    pd.DataFrame(rows).to_csv(csv / "metrics.csv", index=False)
    return root / name


def test_metric_by_step_and_table(tmp_path, capsys):
    a = _run(tmp_path, "a", {4: 0.1, 9: 0.3})
    b = _run(tmp_path, "b", {4: 0.05, 9: 0.2})
    series = metric_by_step(a)
    assert series.to_dict() == {4: 0.1, 9: 0.3}  # train rows without the metric are dropped
    table = convergence_table({"with": series, "without": metric_by_step(b)})
    assert table.splitlines()[2] == "| 4 | 0.100 | 0.050 |"
    main([str(a), str(b), "--labels", "with", "without", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 0 and "| 9 | 0.300 | 0.200 |" in capsys.readouterr().out


def test_missing_log_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CSV log"):
        metric_by_step(tmp_path / "nowhere")
