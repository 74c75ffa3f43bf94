"""The entry points fail with clear messages, not stack traces."""

from __future__ import annotations

import functools

from common.pipeline.runs import known_apps
from tests.conftest import side_by_side


def test_missing_app_lists_the_apps(cli, tmp_path):
    proc = cli("train", root=tmp_path, check=False)
    assert proc.returncode != 0
    assert "You must specify 'app'" in proc.stderr
    for app in known_apps():
        assert app in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_app_lists_the_apps(cli, tmp_path):
    modules = ("train", "evaluate", "export", "predict")
    procs = side_by_side(*(functools.partial(cli, m, "app=no_such_app", root=tmp_path, check=False) for m in modules))
    for proc in procs:
        assert proc.returncode == 2
        assert "unknown app 'no_such_app'" in proc.stderr
        assert all(app in proc.stderr for app in known_apps())
        assert "Traceback" not in proc.stderr
