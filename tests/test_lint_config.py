"""The pre-commit hook and `make lint` run the same ruff: one pin, in pyproject.toml."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_pre_commit_ruff_matches_the_pinned_ruff():
    pinned = re.search(r'"ruff==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"]
    ruff = next(r for r in hooks if r["repo"].endswith("/ruff-pre-commit"))
    assert ruff["rev"] == f"v{pinned}"
    assert {h["id"] for h in ruff["hooks"]} == {"ruff-check", "ruff-format"}


def test_ci_runs_lint_before_tests():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert lines.index("make lint") < lines.index("make test")
