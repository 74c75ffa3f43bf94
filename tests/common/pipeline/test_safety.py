"""Nothing unpickles: crafted checkpoints and exports that would run code are refused."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from common.errors import UnsafeFileError
from common.pipeline.checkpoints import AtomicCheckpointIO
from common.pipeline.export import load
from common.pipeline.safety import check_targets, load_checkpoint


class _RunsCode:
    """Pickles to a call of os.system: what a malicious checkpoint looks like."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, ckpt)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        load_checkpoint(ckpt)
    with pytest.raises(UnsafeFileError, match=str(ckpt)):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_plain_checkpoint_loads(tmp_path):
    ckpt = tmp_path / "ok.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 2, "cfg": {"a": [1, "b"]}}, ckpt)
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and torch.equal(state["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.ckpt"]  # no temporary file left behind


def test_export_naming_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "model.yaml").write_text(f"_target_: os.system\ncommand: touch {marker}\n")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UnsafeFileError, match="os.system"):
        load(tmp_path)
    assert not marker.exists()


def test_nested_foreign_target_is_refused():
    cfg = {"_target_": "apps.scgc.model.SCGC", "head": {"_target_": "subprocess.run", "args": ["ls"]}}
    with pytest.raises(UnsafeFileError, match="subprocess.run"):
        check_targets(cfg, ("apps.", "common."), "model.yaml")
    check_targets({"_target_": "common.x", "items": [{"_target_": "apps.y"}]}, ("apps.", "common."), "ok")
