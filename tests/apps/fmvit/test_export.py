"""The export hook on FMViT: `deploy_form` folds the model and marks its config `deploy: true`, and that config
rebuilds a model that takes the folded weights. (ONNX of the deploy form: tests/apps/fmvit/test_pipeline.py.)"""

from __future__ import annotations

from omegaconf import OmegaConf

from apps.fmvit.model import create
from common.pipeline.build import build_model
from common.pipeline.export import deploy_form

CFG = {"_target_": "apps.fmvit.model.create", "variant": "cpu", "num_classes": 10, "in_chans": 1, "img_size": 28}


def test_deploy_form_folds_and_marks_the_config():
    model = create(**{k: v for k, v in CFG.items() if k != "_target_"})
    n_train = sum(p.numel() for p in model.parameters())
    model, cfg = deploy_form(model, OmegaConf.create(CFG))
    assert model.net.deploy and not model.training and cfg.deploy is True
    assert sum(p.numel() for p in model.parameters()) < n_train
    rebuilt = build_model(cfg)  # what export.load() does with model.yaml
    rebuilt.load_state_dict(model.state_dict())
