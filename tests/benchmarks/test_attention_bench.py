"""The attention benchmark's core: one (mechanism, N) record, the layouts, caps and crossovers."""

from __future__ import annotations

import pytest

from benchmarks.attention_bench import crossovers, grid, measure, run_benchmark


@pytest.mark.parametrize("name", ["softmax", "linear"])
def test_measure_record_fields(name):
    record = measure(name, 64, min_repeats=2, max_repeats=2)
    assert record["status"] == "ok"
    assert record["mechanism"] == name and record["n"] == 64
    assert record["time_s"] > 0 and all(t > 0 for t in record["times"]) and record["repeats"] == 2
    assert isinstance(record["peak_bytes"], int) and record["peak_bytes"] >= 0
    assert record["cost"] in ("N^2", "N") and record["layout"] == "tokens"


def test_memory_is_measured_not_zero():
    # softmax's forward+backward allocates at least q, k, v and their gradients: [1, 4, 64, 16] floats each
    record = measure("softmax", 64, min_repeats=1, max_repeats=1)
    assert record["peak_bytes"] >= 6 * 64 * 64 * 4


def test_2d_and_multiscale_layouts():
    assert grid(256) == (16, 16) and grid(512) == (16, 32)
    bra = measure("routing_bilevel", 64, min_repeats=1, max_repeats=1)
    assert bra["status"] == "ok" and bra["shape"]["hw"] == [8, 8]
    msda = measure("deformable_ms", 64, min_repeats=1, max_repeats=1)
    assert msda["status"] == "ok" and msda["shape"]["queries"] == 64
    assert sum(h * w for h, w in msda["shape"]["levels"]) == 64


def test_caps_skip_and_crossover():
    records = run_benchmark(["softmax", "linear"], [32, 64, 128], time_cap_s=1e-9, log=lambda *_: None)
    # every first N runs (nothing to predict from), then "over_cap" stops the larger ones
    assert [r["status"] for r in records if r["n"] == 32] == ["over_cap", "over_cap"]
    assert all(r["status"] == "skipped" and r["reason"] for r in records if r["n"] > 32)
    fake = [
        {"mechanism": "softmax", "n": n, "cost": "N^2", "status": "ok", "time_s": t}
        for n, t in [(256, 1.0), (512, 4.0), (1024, 16.0)]
    ] + [
        {"mechanism": "linear", "n": n, "cost": "N", "status": "ok", "time_s": t}
        for n, t in [(256, 2.0), (512, 4.0), (1024, 8.0)]
    ]
    info = crossovers(fake)["linear"]
    assert info["crossover_n"] == 1024 and 256 < info["interpolated_n"] < 1024
    fake[-1]["time_s"] = 20.0
    assert crossovers(fake)["linear"]["crossover_n"] is None
