"""Stage initialisation: a full-precision checkpoint loads into the binary model; bad files fail clearly."""

from __future__ import annotations

import pytest
import torch

from apps.bivit.init import TEACHER_KEY, load_init, teacher_source
from apps.bivit.model import create
from common.errors import ConfigError, UnsafeFileError

ARCH = dict(num_classes=10, in_chans=1, img_size=28, embed_dim=32, depth=2, num_heads=2, patch_size=7)
MODEL_CFG = {"_target_": "apps.bivit.model.create", "variant": "micro", **ARCH, "attention": "softmax"}


def save_run_checkpoint(model, path, config=MODEL_CFG, **extra):
    """A checkpoint shaped like the pipeline's: Lightning state_dict under `model.` and the run config."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "manyheads": {"config": {"model": config}}, **extra}, path)
    return path


@pytest.fixture
def fp_checkpoint(tmp_path):
    torch.manual_seed(1)
    teacher = create("micro", **ARCH, attention="softmax")
    return teacher, save_run_checkpoint(teacher, tmp_path / "fp.ckpt")


def test_full_precision_checkpoint_loads_into_binary_attention(fp_checkpoint):
    teacher, path = fp_checkpoint
    student = create("micro", **ARCH, attention="binary_sab", binary="attention")
    report = load_init(student, path)
    attn_t, attn_s = teacher.net.blocks[1].attn, student.net.blocks[1].attn
    # softmax's q and kv rows become binary_sab's qkv rows (q, then k, then v)
    torch.testing.assert_close(attn_s.qkv.weight, torch.cat([attn_t.q.weight, attn_t.kv.weight]))
    torch.testing.assert_close(attn_s.qkv.bias, torch.cat([attn_t.q.bias, attn_t.kv.bias]))
    torch.testing.assert_close(attn_s.proj.weight, attn_t.proj.weight)
    torch.testing.assert_close(student.net.blocks[0].mlp.fc1.weight, teacher.net.blocks[0].mlp.fc1.weight)
    torch.testing.assert_close(student.net.head.weight, teacher.net.head.weight)
    # scales of the binarised pretrained weights
    centred = attn_s.qkv.weight - attn_s.qkv.weight.mean(1, keepdim=True)
    torch.testing.assert_close(attn_s.qkv.scale, centred.abs().mean(1, keepdim=True))
    assert set(report["scales_reset"]) == {f"net.blocks.{i}.attn.{n}" for i in (0, 1) for n in ("qkv", "proj")}


def test_stage_two_keeps_learned_attention_scales(tmp_path):
    stage1 = create("micro", **ARCH, attention="binary_sab", binary="attention")
    with torch.no_grad():
        stage1.net.blocks[0].attn.qkv.scale.fill_(0.123)  # a "learned" scale
    path = save_run_checkpoint(stage1, tmp_path / "stage1.ckpt")
    stage2 = create("micro", **ARCH, attention="binary_sab", binary="all")
    report = load_init(stage2, path)
    assert torch.all(stage2.net.blocks[0].attn.qkv.scale == 0.123)
    assert set(report["scales_reset"]) == {f"net.blocks.{i}.mlp.{n}" for i in (0, 1) for n in ("fc1", "fc2")}


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    model = create("micro", **ARCH)
    with pytest.raises(ConfigError) as info:
        load_init(model, tmp_path / "nope.ckpt")
    assert info.value.key == "model.init_from" and "not found" in str(info.value)


def test_other_architecture_is_refused_with_keys(fp_checkpoint):
    _, path = fp_checkpoint
    wider = create("micro", **{**ARCH, "embed_dim": 48})
    with pytest.raises(ConfigError, match=r"other shapes net.blocks.0.attn.kv.bias: \(64,\) vs \(96,\)"):
        load_init(wider, path)
    deeper = create("micro", **{**ARCH, "depth": 3})
    with pytest.raises(ConfigError, match=r"missing \['net.blocks.2"):
        load_init(deeper, path)


def test_not_a_lightning_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match="state_dict"):
        load_init(create("micro", **ARCH), tmp_path / "plain.ckpt")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {}, "obj": torch.nn.Linear(2, 2)}, tmp_path / "pickled.ckpt")
    with pytest.raises(UnsafeFileError):
        load_init(create("micro", **ARCH), tmp_path / "pickled.ckpt")


def test_teacher_source_passes_on_the_full_precision_teacher(fp_checkpoint, tmp_path):
    teacher, path = fp_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    config, state = teacher_source(checkpoint, path)
    assert config["attention"] == "softmax" and "net.head.weight" in state
    # a stage-1 checkpoint that carries the teacher hands that one on, not its own binary model
    stage1 = create("micro", **ARCH, attention="binary_sab", binary="attention")
    carried = {"config": config, "state_dict": state}
    path1 = save_run_checkpoint(
        stage1, tmp_path / "s1.ckpt", {**MODEL_CFG, "binary": "attention"}, **{TEACHER_KEY: carried}
    )
    config1, state1 = teacher_source(torch.load(path1, weights_only=True), path1)
    assert config1["attention"] == "softmax"
    torch.testing.assert_close(state1["net.head.weight"], teacher.net.head.weight)


@pytest.mark.parametrize("carried", [False, True], ids=["run-config", "carried-teacher"])
def test_teacher_config_names_no_code_of_its_own(fp_checkpoint, tmp_path, carried):
    """The teacher is rebuilt from a received checkpoint: a target other than the app's model class is refused."""
    teacher, _ = fp_checkpoint
    bad = {**MODEL_CFG, "norm": {"_target_": "common.utils.files.write_text", "path": str(tmp_path / "x")}}
    if carried:
        path = save_run_checkpoint(teacher, tmp_path / "c.ckpt", **{TEACHER_KEY: {"config": bad, "state_dict": {}}})
    else:
        path = save_run_checkpoint(teacher, tmp_path / "c.ckpt", bad)
    with pytest.raises(UnsafeFileError, match="common.utils.files.write_text"):
        teacher_source(torch.load(path, weights_only=True), path)
    assert not (tmp_path / "x").exists()
