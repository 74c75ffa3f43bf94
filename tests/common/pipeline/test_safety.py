"""No file makes the pipeline run code: crafted checkpoints, exports and configs are refused before anything runs."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import save_file

from common.errors import ManyheadsError, UnsafeFileError
from common.pipeline.app_config import app_config
from common.pipeline.build import build_datamodule, build_model
from common.pipeline.checkpoint_config import load_run
from common.pipeline.checkpoints import AtomicCheckpointIO
from common.pipeline.export import export, load
from common.pipeline.predict import predict
from common.pipeline.runs import CONFIG_DIR
from common.pipeline.safety import (
    APP_TARGETS,
    TRAIN_TARGETS,
    check_stored,
    check_targets,
    is_allowed,
    load_checkpoint,
    safe_instantiate,
)
from tests.conftest import side_by_side

# A file writer of the project's own (the other helpers' move puts it under common.utils).
WRITE_TEXT = (
    "common.utils.files.write_text"
    if importlib.util.find_spec("common.utils") and importlib.util.find_spec("common.utils.files")
    else "common.pipeline.files.write_text"
)
DANGEROUS = [
    "os.system",
    "os.popen",
    "posix.system",
    "subprocess.run",
    "subprocess.Popen",
    "builtins.exec",
    "builtins.eval",
    "builtins.open",
    "torch.utils.collect_env.run",
    "torch.hub.load",
    "torch.save",
    "torch.load",
    "torch.serialization.save",
    "torch.ops.load_library",
    "common.utils.files.write_text",
    "common.pipeline.files.write_text",
    "common.pipeline.files.write_json",
    "common.pipeline.export.export",
    "common.pipeline.train.train",
    "common.detection.shapes.write_split",
    "importlib.import_module",
    "pickle.loads",
    "numpy.save",
    "numpy.load",
    "pathlib.Path.write_text",
    "shutil.rmtree",
    "shutil.copy",
    "lightning.pytorch.callbacks.ModelCheckpoint.to_yaml",  # a method writing a file
    "lightning.fabric.utilities.cloud_io._atomic_save",
    # names of dangerous code seen through an allowed module's imports
    "apps.scgc.model.torch.save",
    "apps.scgc.data.np.save",
    "apps.scgc.data.Path",
    "apps.crypto_forecast.data.pd.read_pickle",
    "torch.optim.lr_scheduler.torch.save",
    "torch.optim.adam.torch.load",
    "common.vision.data.torch.hub.load",
    "common.detection.coco.json.loads",
    "lightning.pytorch.callbacks.model_checkpoint.os.remove",
    "lightning.pytorch.loggers.csv_logs.os.system",
    "lightning.pytorch.callbacks.model_checkpoint.fs",
    # scripts and builders next to the apps' classes
    "apps.crypto_forecast.results_table.main",
    "apps.relation_detr.convergence.main",
    "apps.scgc.data.build_cora",
    "apps.scgc.model",
    "torch.optim",
]
DANGEROUS_MODULES = ("os", "posix", "subprocess", "builtins", "importlib", "pickle", "shutil", "pathlib", "io", "sys")


@pytest.mark.parametrize("allowed", [TRAIN_TARGETS, APP_TARGETS], ids=["train", "app"])
def test_no_allowed_name_reaches_code_that_runs_commands_or_writes_files(allowed):
    reached = [name for name in DANGEROUS if is_allowed(name, allowed)]
    assert reached == []
    for name in DANGEROUS:
        with pytest.raises(UnsafeFileError, match=re.escape(name)):
            check_targets({"x": {"_target_": name}}, allowed, "config")


def test_every_name_below_a_wildcard_is_a_class_of_the_allowed_namespaces():
    """Walk each wildcard pattern's module: what it admits is a class defined there, never a function, module or
    anything imported from the standard library's process, file or import machinery."""
    walked = 0
    for pattern in TRAIN_TARGETS:
        if not pattern.endswith(".*") or importlib.util.find_spec(pattern[:-2]) is None:  # an app without criterion
            continue
        module = importlib.import_module(pattern[:-2])
        for attr in dir(module):
            name = f"{pattern[:-2]}.{attr}"
            if name in TRAIN_TARGETS or not is_allowed(name, TRAIN_TARGETS):  # exact entries: reviewed by name
                continue
            walked += 1
            obj = getattr(module, attr)
            assert isinstance(obj, type), name
            assert obj.__module__.split(".")[0] not in DANGEROUS_MODULES, name
            assert any(f"{obj.__module__}.{obj.__qualname__}".startswith(p[:-1]) for p in TRAIN_TARGETS), name
    assert walked > 50  # the walk saw the optimisers, callbacks, loggers and the apps' classes


def test_every_target_in_the_repository_configs_is_allowed():
    names = set()
    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        names |= set(re.findall(r"^[^#]*_target_: *([\w.]+)", path.read_text(), flags=re.M))
    names -= {"common.pipeline.sweep.PrintBestTrial"}  # a Hydra callback, which Hydra instantiates itself
    assert len(names) > 30
    assert sorted(n for n in names if not is_allowed(n, TRAIN_TARGETS)) == []


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


def _checkpoint(tmp_path: Path, config: dict) -> Path:
    """A checkpoint that loads safely (tensors and plain containers) and carries `config` as its run config."""
    ckpt = tmp_path / "crafted.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "manyheads": {"config": config}}, ckpt)
    return ckpt


def _scgc_model() -> dict:
    return {"_target_": "apps.scgc.model.SCGC", "in_dim": 8, "n_clusters": 3}


def test_eval_of_a_checkpoint_whose_data_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = {"_target_": "torch.utils.collect_env.run", "command": f"touch {marker}"}
    ckpt = _checkpoint(tmp_path, {"app_name": "scgc", "data": data, "model": _scgc_model(), "module": {}})
    with pytest.raises(UnsafeFileError, match=r"crafted\.ckpt: refused data\._target_='torch\.utils\.collect_env\.run"):
        _, run_cfg = load_run(ckpt)  # what `make eval` does, then builds the data
        build_datamodule(run_cfg, stage="test")
    assert not marker.exists()


def test_export_of_a_checkpoint_whose_model_writes_a_file_is_refused(tmp_path):
    target = tmp_path / "site-packages" / "evil.pth"
    target.parent.mkdir()
    model = _scgc_model() | {"hook": {"_target_": WRITE_TEXT, "path": str(target), "text": "import os\n"}}
    ckpt = _checkpoint(tmp_path, {"app_name": "scgc", "model": model})
    with pytest.raises(UnsafeFileError, match=rf"refused model\.hook\._target_='{re.escape(WRITE_TEXT)}'"):
        export(ckpt, tmp_path / "export")
    assert not target.exists() and not (tmp_path / "export").exists()


def test_a_checkpoint_naming_another_app_or_none_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path, {"app_name": "../evil", "model": _scgc_model()})
    with pytest.raises(Exception, match=r"app=.*\.\./evil.* is not one of"):
        load_run(ckpt)


def _export_folder(tmp_path: Path, model_yaml: str, app: str = "scgc") -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "export.json").write_text(json.dumps({"app": app}))
    (folder / "model.yaml").write_text(model_yaml)
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


def test_predict_on_an_export_whose_model_yaml_writes_a_file_is_refused(tmp_path):
    target = tmp_path / "site-packages" / "evil.pth"
    target.parent.mkdir()
    folder = _export_folder(
        tmp_path,
        f"_target_: apps.scgc.model.SCGC\nin_dim: 8\nn_clusters: 3\n"
        f"hook: {{_target_: {WRITE_TEXT}, path: {target}, text: 'import os'}}\n",
    )
    (tmp_path / "input.csv").write_text("a\n1\n")
    with pytest.raises(UnsafeFileError, match=r"model\.yaml: refused hook\._target_"):
        predict(folder, tmp_path / "input.csv", tmp_path / "out")
    assert not target.exists()


def test_export_naming_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = _export_folder(tmp_path, f"_target_: os.system\ncommand: touch {marker}\n")
    with pytest.raises(UnsafeFileError, match="os.system"):
        load(folder)
    assert not marker.exists()


def test_export_naming_another_app_s_model_is_refused(tmp_path):
    """Even an allowed class is refused where the repository's config for the export's app has another one."""
    folder = _export_folder(tmp_path, "_target_: apps.crypto_forecast.model.CryptoForecaster\n")
    with pytest.raises(UnsafeFileError, match=r"the repository's config for this app has 'apps\.scgc\.model\.SCGC'"):
        load(folder)


def test_interpolations_in_a_model_yaml_are_refused(tmp_path):
    folder = _export_folder(tmp_path, "_target_: apps.scgc.model.SCGC\nin_dim: '${oc.decode:\"{_target_: x}\"}'\n")
    with pytest.raises(UnsafeFileError, match="in_dim=.*no interpolations"):
        load(folder)


def test_stored_targets_must_be_the_repository_s_at_the_same_key():
    repo = app_config("relation_detr", "test")
    stored = OmegaConf.to_container(repo.module, resolve=False)
    check_stored(stored, repo.module, "crafted.ckpt", "module")  # the repository's own targets: accepted
    stored["optimizer"] = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}  # an experiment's choice
    check_stored(stored, repo.module, "crafted.ckpt", "module")
    stored["criterion"]["matcher"]["_target_"] = "apps.relation_detr.criterion.HybridSetCriterion"
    with pytest.raises(UnsafeFileError, match=r"refused module\.criterion\.matcher\._target_="):
        check_stored(stored, repo.module, "crafted.ckpt", "module")


def test_a_command_line_callback_that_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    override = f"+callbacks.x={{_target_:torch.utils.collect_env.run,command:'touch {marker}'}}"
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=["app=scgc", override])
    with pytest.raises(UnsafeFileError, match=r"refused to instantiate callbacks\.x\._target_"):
        safe_instantiate(cfg.callbacks.x, section="callbacks.x")  # as train() instantiates each callback
    assert not marker.exists()


def test_a_model_class_of_the_apps_still_builds():
    model = build_model(OmegaConf.create(_scgc_model()))
    assert type(model).__name__ == "SCGC"


def test_an_allowed_target_whose_package_is_missing_names_the_package(tmp_path, monkeypatch):
    """A machine without a dependency (the GPU device has no pycocotools) gets its name, not a refusal."""
    module = tmp_path / "apps" / "fakeapp"
    module.mkdir(parents=True)
    (module / "data.py").write_text("import not_a_package_here\n\nclass Data:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "apps"))
    monkeypatch.setattr("apps.__path__", [*importlib.import_module("apps").__path__, str(tmp_path / "apps")])
    with pytest.raises(ManyheadsError, match="needs the package 'not_a_package_here'"):
        is_allowed("apps.fakeapp.data.Data", ("apps.fakeapp.data.*",))
    assert not is_allowed("apps.fakeapp.nothing.Data", ("apps.fakeapp.nothing.*",))  # unknown: refused as before


def test_the_commands_refuse_files_and_overrides_that_run_code(cli, tmp_path):
    """`make eval` on a crafted checkpoint: one clean error; a Hydra callback set by an override (or a shared sweep
    file) is refused by Hydra's own allow-list around each entry point."""
    marker, hydra_marker = tmp_path / "pwned", tmp_path / "pwned_by_hydra"
    data = {"_target_": "torch.utils.collect_env.run", "command": f"touch {marker}"}
    ckpt = _checkpoint(tmp_path, {"app_name": "scgc", "data": data, "model": _scgc_model(), "module": {}})
    callback = f"+hydra.callbacks.x={{_target_:torch.utils.collect_env.run,command:'touch {hydra_marker}'}}"
    evaluate, predict_, train_ = side_by_side(
        functools.partial(cli, "evaluate", "app=scgc", f"ckpt={ckpt}", root=tmp_path, check=False),
        functools.partial(cli, "predict", "app=scgc", f"input={ckpt}", callback, root=tmp_path, check=False),
        functools.partial(cli, "train", "app=scgc", callback, root=tmp_path, check=False),
    )
    assert evaluate.returncode == 2 and "Traceback" not in evaluate.stderr
    assert f"{ckpt}: refused data._target_='torch.utils.collect_env.run'" in evaluate.stderr
    for refused in (predict_, train_):
        assert refused.returncode != 0 and "not in the Hydra execution whitelist" in refused.stderr
    assert not marker.exists() and not hydra_marker.exists()
