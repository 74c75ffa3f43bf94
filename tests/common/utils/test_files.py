from __future__ import annotations

import pytest

from common.utils.files import atomic_dir, atomic_write, point_link, write_json


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def broken(tmp):
        tmp.write_text('{"a": ')  # half a file, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    out = tmp_path / "export"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("export failed half-way")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_point_link_moves_latest(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    point_link(tmp_path / "latest", tmp_path / "r1")
    point_link(tmp_path / "latest", tmp_path / "r2")
    assert (tmp_path / "latest").resolve() == (tmp_path / "r2").resolve()


def test_point_link_creates_the_link_folder(tmp_path):
    """A run folder placed outside runs/<app> (hydra.run.dir=...) still gets its runs/<app>/latest link."""
    (tmp_path / "elsewhere").mkdir()
    point_link(tmp_path / "runs" / "app" / "latest", tmp_path / "elsewhere")
    assert (tmp_path / "runs" / "app" / "latest").resolve() == (tmp_path / "elsewhere").resolve()


def test_atomic_write_creates_nothing_when_the_first_write_fails(tmp_path):
    def broken(tmp):
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "out" / "metrics.json", broken)
    assert list((tmp_path / "out").iterdir()) == []
