"""The entry points fail with clear messages, not stack traces."""

from __future__ import annotations

from common.pipeline.runs import known_apps


def test_missing_app_lists_the_apps(cli, tmp_path):
    proc = cli("train", root=tmp_path, check=False)
    assert proc.returncode != 0
    assert "You must specify 'app'" in proc.stderr
    for app in known_apps():
        assert app in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_app_lists_the_apps(cli, tmp_path):
    for module in ("train", "evaluate", "export", "predict"):
        proc = cli(module, "app=no_such_app", root=tmp_path, check=False)
        assert proc.returncode == 2
        assert "unknown app 'no_such_app'" in proc.stderr
        assert all(app in proc.stderr for app in known_apps())
        assert "Traceback" not in proc.stderr
