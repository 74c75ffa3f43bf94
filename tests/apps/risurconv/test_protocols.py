"""The protocol table: the right test column of the right run lands in each protocol's cell."""

from __future__ import annotations

import json

import yaml

from apps.risurconv.protocols import table


def test_table_reads_each_run_into_its_protocols(tmp_path):
    runs = {
        ("risurconv", "z"): {"acc_z": 0.95, "acc_so3": 0.94},
        ("risurconv", "so3"): {"acc_z": 0.93, "acc_so3": 0.96},
        ("pointnet", "z"): {"acc_z": 0.99, "acc_so3": 0.40},
        ("pointnet", "so3"): {"acc_z": 0.70, "acc_so3": 0.72},
    }
    for (arch, rotation), test in runs.items():
        job = tmp_path / f"{arch}_{rotation}"
        job.mkdir()
        config = {"model": {"arch": arch}, "data": {"task": "cls", "train_rotation": rotation}}
        (job / "config.yaml").write_text(yaml.safe_dump(config))
        (job / "metrics.json").write_text(json.dumps({"test": test}))
    rows, markdown = table(tmp_path)
    assert rows["risurconv"] == {"z/z": 0.95, "z/SO3": 0.94, "SO3/SO3": 0.96}
    assert rows["pointnet"] == {"z/z": 0.99, "z/SO3": 0.40, "SO3/SO3": 0.72}
    assert "| pointnet | 0.9900 | 0.4000 | 0.7200 | +0.5900 |" in markdown
