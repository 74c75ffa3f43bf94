"""Start a BiViT stage from an earlier stage's checkpoint, and find the full-precision teacher.

Cross-layer binarisation trains in stages, each initialised from the previous checkpoint (a Lightning
checkpoint written by `make train app=bivit`, read with `weights_only=True`):
full precision -> binary attention -> binary attention and MLP.

Key fitting between stages:
- the softmax teacher's `attn.q` + `attn.kv` are fused into `binary_sab`'s `attn.qkv` (same row order:
  q, then k, then v, heads inside each);
- a `BinaryLinear` absent from the source (its `scale`) gets the scale of the loaded weights;
- anything else missing, unexpected or of another shape is refused with a `ConfigError` naming the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from apps.bivit.binary import BinaryLinear
from common.errors import ConfigError
from common.pipeline.app_config import app_config
from common.pipeline.checkpoint_config import model_state
from common.pipeline.safety import check_stored, load_checkpoint, refuse_interpolations

KEY = "model.init_from"
TEACHER_KEY = "bivit_teacher"  # extra entry of a BiViT checkpoint: {"config": model config, "state_dict": ...}
_SHOW = 6  # keys named in an error


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path` (weights only); a missing file or one without weights is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(KEY, str(path), "an existing .ckpt written by `make train app=bivit` (file not found)")
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(KEY, str(path), "a Lightning checkpoint with a state_dict (written by `make train`)")
    return checkpoint


def fuse_qkv(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename softmax attention's `X.attn.q.*` + `X.attn.kv.*` into `X.attn.qkv.*` where the target has qkv."""
    out = dict(state)
    for key in list(state):
        prefix, sep, kind = key.rpartition(".q.")
        if not sep or kind not in ("weight", "bias"):
            continue
        fused, kv = f"{prefix}.qkv.{kind}", f"{prefix}.kv.{kind}"
        if fused in target_keys and kv in state:
            out[fused] = torch.cat([out.pop(key), out.pop(kv)], dim=0)
    return out


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> tuple[dict, list[str]]:
    """(state ready for `load_state_dict(strict=False)`, names of BinaryLinears whose scale must be reset).

    Raises ConfigError naming the keys when `state` does not fit `model`.
    """
    target = model.state_dict()
    state = fuse_qkv(state, set(target))
    binary = {f"{n}.scale": n for n, m in model.named_modules() if isinstance(m, BinaryLinear)}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    problems = [k for k in missing if k not in binary]
    if problems or unexpected or wrong:
        parts = []
        if problems:
            parts.append(f"missing {problems[:_SHOW]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:_SHOW]}")
        if wrong:
            parts.append(
                "other shapes "
                + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:_SHOW])
            )
        raise ConfigError(
            KEY,
            source,
            "a checkpoint of the same architecture (variant, embed_dim, depth, heads, patch/img size, classes); "
            + "; ".join(parts),
        )
    return state, [binary[k] for k in missing]


def load_init(model: nn.Module, path: str | Path) -> dict:
    """Load the `model.*` weights of checkpoint `path` into `model`; returns {"path", "loaded", "scales_reset"}."""
    checkpoint = read_checkpoint(path)
    state, reset = fit_state(model, model_state(checkpoint), str(path))
    model.load_state_dict(state, strict=False)
    for name in reset:
        model.get_submodule(name).reset_scale()  # channel scale of the binarised pretrained weights
    return {"path": str(path), "loaded": len(state), "scales_reset": reset}


def teacher_source(checkpoint: dict, path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model config, weights) of the distillation teacher an init checkpoint stands for.

    A checkpoint that itself carries a teacher (a binary stage trained with distillation) passes it on, so
    stage 2 distils from the same full-precision model as stage 1; otherwise the checkpoint's own model is
    the teacher (stage 1 from the full-precision run).
    """
    if TEACHER_KEY in checkpoint:
        teacher = checkpoint[TEACHER_KEY]
        config, state = dict(teacher["config"]), dict(teacher["state_dict"])
    else:
        config, state = checkpoint.get("manyheads", {}).get("config", {}).get("model"), None
        if not isinstance(config, dict):
            raise ConfigError(KEY, str(path), "a checkpoint written by `make train` (its run config names the teacher)")
        config, state = dict(config), model_state(checkpoint)
    # a received file: its teacher config supplies values, the model class is the repository's
    refuse_interpolations(config, str(path))
    check_stored(config, app_config("bivit", str(path)).model, str(path), "teacher")
    return config, state
