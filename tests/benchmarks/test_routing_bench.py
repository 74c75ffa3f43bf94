"""The routing benchmark's bookkeeping: which reference each provider is compared with, and the CPU dry run."""

from __future__ import annotations

import json

import pytest

from benchmarks.routing_bench import add_ratios, main


def _record(provider, median_ms, gpu_ms, peak):
    return dict(stage="s", batch=2, mode="fwd+bwd", provider=provider, median_ms=median_ms, gpu_ms=gpu_ms,
                peak_bytes_fwd_bwd=peak)  # fmt: skip


def test_graphed_providers_are_compared_with_the_graphed_reference():
    records = [
        _record("triton", 1.0, 0.25, 100),
        _record("torch", 2.0, 2.0, 1000),
        _record("triton-graphed", 0.5, 0.25, 0),
        _record("torch-graphed", 2.5, 2.0, 0),
    ]
    add_ratios(records)
    ours, ref, graphed, _ = records
    assert ours["speedup_vs_ref"] == pytest.approx(2.0) and ours["gpu_speedup_vs_ref"] == pytest.approx(8.0)
    assert ours["mem_ratio_vs_ref"] == pytest.approx(0.1) and ref["speedup_vs_ref"] == pytest.approx(1.0)
    assert graphed["speedup_vs_ref"] == pytest.approx(5.0)  # against torch-graphed, not the eager torch
    assert graphed["mem_ratio_vs_ref"] is None  # a graph's memory lives in its pool: no per-call peak


def test_dry_run_writes_json_and_table(tmp_path):
    out = tmp_path / "routing.json"
    result = main(["--dry-run", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["meta"]["dry_run"] and len(saved["records"]) == len(result["records"]) == 2  # torch: fwd, fwd+bwd
    assert all(r["gpu_ms"] is None and r["median_ms"] > 0 for r in saved["records"])  # no GPU clock on the CPU
    assert "GPU busy ms" in out.with_suffix(".md").read_text()
