"""`make export app=NAME [ckpt=PATH] [out=DIR]`: the export folder, and `load(dir)` to rebuild its model.

An export folder holds `model.safetensors` (weights), `model.yaml` (the model config that rebuilds the
module), `export.json` (app, metrics, dataset, input/output spec, versions, commit, graph format),
`README.md` (a model card) and a portable graph: `model.onnx` checked against PyTorch with
onnxruntime, or `model.pt2` from torch.export when ONNX export fails (export.json says why).
Loading never unpickles and runs only the code of the app that `export.json` names: `model.yaml`
supplies values, its `_target_`s must be the repository's for that app.
"""

from __future__ import annotations

import sys

from common.pipeline.runs import refuse_unknown_app

if __name__ == "__main__":  # before torch and Lightning load: a mistyped app= is answered at once
    refuse_unknown_app(sys.argv[1:])

import json
import re
import traceback
from pathlib import Path

import hydra
import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from common.errors import ManyheadsError, UnsafeFileError
from common.pipeline.app_config import app_config, check_app
from common.pipeline.build import build_model
from common.pipeline.checkpoint_config import load_run, model_state
from common.pipeline.model_card import write_model_card
from common.pipeline.runs import CONFIG_DIR, resolve_checkpoint, user_errors, versions
from common.pipeline.safety import APP_TARGETS, check_stored, hydra_whitelist, is_allowed, refuse_interpolations
from common.pipeline.weights import load_weights
from common.utils.files import atomic_dir

ONNX_RTOL, ONNX_ATOL = 1e-4, 1e-5  # fp32 graph vs eager PyTorch


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _dynamic_shapes(spec: dict) -> dict:
    """torch.export dynamic dims from the spec's string dims (e.g. "N"), at least an input's optional
    `min` for that dim (e.g. {"H": 65}), else 2."""
    dims = {}
    shapes = {}
    for name, io in spec["inputs"].items():
        low = io.get("min", {})
        shapes[name] = {
            i: dims.setdefault(d, torch.export.Dim(d, min=low.get(d, 2)))
            for i, d in enumerate(io["shape"])
            if isinstance(d, str)
        } or None
    return shapes


def onnx_failure_reason(exc: Exception) -> str:
    """The line of an ONNX export error that names what failed: the first line of the exporter's "Exception
    summary" (e.g. "No ONNX function found for aten._linalg_eigh"), else the last line that is not boilerplate."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(traceback.format_exception_only(type(exc), exc)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines and lines.index("## Exception summary") + 1 < len(lines):
        return lines[lines.index("## Exception summary") + 1][:500]
    meaningful = [line for line in lines if not line.startswith("(Refer to")]
    return (meaningful or lines or [type(exc).__name__])[-1][:500]


def export_onnx(
    model, inputs: tuple, spec: dict, path: Path, opset: int | None = None, check_inputs: list[tuple] = ()
) -> dict:
    """Write `model.onnx` (traced on `inputs`) and check it with onnxruntime against eager PyTorch on `inputs`
    and on each of `check_inputs` (other sizes of the dynamic dims than traced)."""
    import onnxruntime as ort

    torch.onnx.export(
        model,
        inputs,
        str(path),
        input_names=list(spec["inputs"]),
        output_names=list(spec["outputs"]),
        dynamic_shapes=_dynamic_shapes(spec),
        dynamo=True,
        external_data=False,
        opset_version=opset,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checks, max_diff = [inputs, *check_inputs], 0.0
    for check in checks:
        got = session.run(None, {name: t.numpy() for name, t in zip(spec["inputs"], check)})
        with torch.no_grad():
            want = [t.numpy() for t in _as_tuple(model(*check))]
        for name, g, w in zip(spec["outputs"], got, want):
            if g.shape != w.shape or not np.allclose(g, w, rtol=ONNX_RTOL, atol=ONNX_ATOL):
                shapes = [list(t.shape) for t in check]
                raise RuntimeError(f"onnxruntime output {name!r} on {shapes} differs from PyTorch (rtol={ONNX_RTOL})")
            max_diff = max(max_diff, float(np.abs(g - w).max()))
    checked = [[list(t.shape) for t in check] for check in checks]
    return {
        "format": "onnx",
        "file": "model.onnx",
        "checked_with": "onnxruntime",
        "checked_on": checked,
        "max_abs_diff": max_diff,
    }


def export_pt2(model, inputs: tuple, spec: dict, path: Path) -> dict:
    program = torch.export.export(model, inputs, dynamic_shapes=_dynamic_shapes(spec))
    torch.export.save(program, str(path))
    return {"format": "pt2", "file": "model.pt2"}


def deploy_form(model: torch.nn.Module, model_cfg: DictConfig) -> tuple[torch.nn.Module, DictConfig]:
    """The model and model config to export.

    A model with `reparameterize()` (structural re-parameterisation: training-time branches and
    BatchNorms folded into single layers) is folded in place, in eval mode, and its config gets
    `deploy: true`, so that `load()` rebuilds the deploy form that the weights belong to. Such a model's
    config target must therefore accept `deploy=True`. Other models pass through unchanged.
    """
    if not callable(getattr(model, "reparameterize", None)):
        return model, model_cfg
    model.eval()
    model.reparameterize()
    deploy_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))  # a copy, never in struct mode
    deploy_cfg.deploy = True
    return model, deploy_cfg


def export(ckpt: Path, out: Path) -> Path:
    """Write the export folder for checkpoint `ckpt` to `out` (atomically, as a whole)."""
    checkpoint, run_cfg = load_run(ckpt)
    model = build_model(run_cfg.model)
    state = model_state(checkpoint)
    model.load_state_dict(state)
    model.eval()
    model, model_cfg = deploy_form(model, run_cfg.model)
    spec = model.export_spec()
    inputs = model.example_inputs()
    check_inputs = model.export_check_inputs() if hasattr(model, "export_check_inputs") else []

    run_metrics_file = ckpt.parent.parent / "metrics.json"
    run_metrics = json.loads(run_metrics_file.read_text()) if run_metrics_file.is_file() else {}
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "model.yaml").write_text(OmegaConf.to_yaml(model_cfg))
        try:
            opset = run_cfg.get("export", {}).get("opset")
            graph = export_onnx(model, inputs, spec, tmp / "model.onnx", opset, check_inputs)
        except Exception as exc:  # any ONNX failure falls back to torch.export, and says why
            (tmp / "model.onnx").unlink(missing_ok=True)
            why = onnx_failure_reason(exc)
            graph = export_pt2(model, inputs, spec, tmp / "model.pt2") | {"why_not_onnx": why}
        info = {
            "app": run_cfg.app_name,
            "dataset": run_metrics.get("dataset"),
            "data_card": getattr(_datamodule_class(run_cfg), "DATASETS", {}).get(run_metrics.get("dataset")),
            "metrics": {k: run_metrics.get(k) for k in ("val", "test", "monitor") if k in run_metrics},
            "checkpoint": str(ckpt),
            "spec": spec,
            "graph": graph,
            "versions": versions(),
        }
        (tmp / "export.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_model_card(tmp, info, run_cfg)
    return out


def _datamodule_class(run_cfg: DictConfig):
    from hydra.utils import get_class

    return get_class(run_cfg.data._target_) if is_allowed(run_cfg.data._target_, APP_TARGETS) else None


def _export_file(export_dir: Path, name: str) -> Path:
    path = export_dir / name
    if not path.is_file():
        raise ManyheadsError(f"not an export folder: {path} is missing (make one with `make export`)")
    return path


def read_info(export_dir: str | Path) -> dict:
    """`export.json` of an export folder; it must name one of the apps (whose code alone will run on it)."""
    info_file = _export_file(Path(export_dir), "export.json")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManyheadsError(f"{info_file}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ManyheadsError(f"{info_file}: expected a JSON object with the app's name under 'app'")
    check_app(info.get("app"), str(info_file))
    return info


def load(export_dir: str | Path) -> torch.nn.Module:
    """Rebuild the model of an export folder through the model class of the app its `export.json` names, with
    the values of `model.yaml` and the weights of `model.safetensors`; never unpickles."""
    export_dir = Path(export_dir)
    app = read_info(export_dir)["app"]
    yaml_file, weights = _export_file(export_dir, "model.yaml"), _export_file(export_dir, "model.safetensors")
    try:
        model_cfg = yaml.safe_load(yaml_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManyheadsError(f"{yaml_file}: not valid YAML ({exc})") from None
    if not isinstance(model_cfg, dict) or "_target_" not in model_cfg:
        raise UnsafeFileError(f"{yaml_file}: expected a mapping with a _target_ naming the model class")
    refuse_interpolations(model_cfg, str(yaml_file))
    check_stored(model_cfg, app_config(app, str(export_dir / "export.json")).model, str(yaml_file))
    model = build_model(OmegaConf.create(model_cfg), source=str(yaml_file))
    load_weights(model, weights)
    return model.eval()


@hydra.main(config_path=CONFIG_DIR, config_name="export")
@user_errors
def main(cfg: DictConfig) -> None:
    ckpt = resolve_checkpoint(cfg.paths.runs_dir, cfg.app_name, cfg.ckpt, which=cfg.get("test_ckpt", "best"))
    out = Path(cfg.out or Path(cfg.paths.exports_dir) / cfg.app_name)
    export(ckpt, out)
    info = json.loads((out / "export.json").read_text())
    print(f"\nexported {ckpt}\n  to {out}  (graph: {info['graph']['format']})", flush=True)


if __name__ == "__main__":
    with hydra_whitelist():
        main()
