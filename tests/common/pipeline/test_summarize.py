from __future__ import annotations

import json

import yaml

from common.pipeline.summarize import collect, table


def _run(folder, dataset, seed, acc):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"dataset": dataset}}))
    (folder / "metrics.json").write_text(json.dumps({"test": {"acc": acc}}))


def test_mean_and_std_per_group(tmp_path):
    _run(tmp_path / "a", "cora", 1, 0.6)
    _run(tmp_path / "b", "cora", 2, 0.8)
    _run(tmp_path / "c", "digits", 1, 0.9)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"test": {"acc": 0.0}}))  # no config: ignored
    groups = collect(tmp_path, "test", ["data.dataset"])
    assert {k: len(v) for k, v in groups.items()} == {("cora",): 2, ("digits",): 1}
    text = table(groups, ["data.dataset"])
    assert "| cora | 2 | 0.7000 ± 0.1414 |" in text and "| digits | 1 | 0.9000 ± 0.0000 |" in text
