"""DetectionModule: one training step, logged terms, param groups, clipping, exact resume, evaluation, plots.

A tiny detector and criterion that satisfy the detection interfaces stand in for the apps' real ones, so this
tests the module's plumbing alone.
"""

from __future__ import annotations

import functools
import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from common.detection.coco import COCODetectionDataModule
from common.detection.module import DetectionModule, loss_group
from common.detection.predict import predict
from common.errors import InputError


class TinyDetector(nn.Module):
    """A conv `backbone` pooled to a vector, heads predicting `num_queries` (class logits, cxcywh boxes)."""

    def __init__(self, num_classes: int = 5, num_queries: int = 6, class_names=None):
        super().__init__()
        self.num_classes, self.num_queries, self.class_names = num_classes, num_queries, class_names
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.class_head = nn.Linear(16, num_queries * num_classes)
        self.box_head = nn.Linear(16, num_queries * 4)
        self.aux_box_head = nn.Linear(16, num_queries * 4)

    def _features(self, images, masks):
        feats = self.backbone(images)
        keep = (~F.interpolate(masks[:, None].float(), size=feats.shape[-2:]).bool()).float()
        return (feats * keep).sum((2, 3)) / keep.sum((2, 3)).clamp(min=1)  # mean over the unpadded area

    def _heads(self, f, box_head):
        b = f.shape[0]
        return self.class_head(f).view(b, self.num_queries, self.num_classes), box_head(f).view(b, -1, 4).sigmoid()

    def forward(self, images, masks=None):
        masks = torch.zeros_like(images[:, 0], dtype=torch.bool) if masks is None else masks
        return self._heads(self._features(images, masks), self.box_head)

    def forward_train(self, images, masks, targets):
        f = self._features(images, masks)
        logits, boxes = self._heads(f, self.box_head)
        aux_logits, aux_boxes = self._heads(f, self.aux_box_head)
        aux = [{"pred_logits": aux_logits, "pred_boxes": aux_boxes}]
        return {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": aux}


class TinyCriterion(nn.Module):
    """Query i answers target i (no matching): BCE on classes, L1 on boxes, for the last and the aux output."""

    def _terms(self, out, targets, suffix=""):
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        cls_target = torch.zeros_like(logits)
        l1 = logits.new_zeros(())
        for i, t in enumerate(targets):
            n = min(len(t["labels"]), logits.shape[1])
            cls_target[i, torch.arange(n), t["labels"][:n]] = 1.0
            l1 = l1 + (boxes[i, :n] - t["boxes"][:n]).abs().sum()
        num = max(1, sum(len(t["labels"]) for t in targets))
        return {
            f"loss_class{suffix}": F.binary_cross_entropy_with_logits(logits, cls_target),
            f"loss_bbox{suffix}": 5 * l1 / num,
        }

    def forward(self, outputs, targets):
        losses = self._terms(outputs, targets)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses |= self._terms(aux, targets, f"_{i}")
        return losses


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    make_datamodule(root).prepare_data()
    return root


def make_datamodule(root, **kw) -> COCODetectionDataModule:
    options = dict(data_dir=str(root), num_train=8, num_val=4, num_test=4, batch_size=2, eval_batch_size=4, seed=0)
    return COCODetectionDataModule(**(options | kw))


def make_module(clip: float = 0.1, lr: float = 1e-3) -> DetectionModule:
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=1e-4)
    return DetectionModule(TinyDetector(), TinyCriterion(), optimizer, clip_max_norm=clip, plot_images=4)


def trainer(tmp_path, **kw) -> L.Trainer:
    options = dict(
        accelerator="cpu", logger=False, enable_checkpointing="callbacks" in kw, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path),
    )  # fmt: skip
    return L.Trainer(**(options | kw))


def test_loss_group_names():
    assert loss_group("loss_class") == "loss_class"
    assert loss_group("loss_select") == "loss_select"
    assert loss_group("loss_bbox_3") == "loss_aux"
    assert loss_group("loss_giou_enc") == "loss_enc"
    assert loss_group("loss_class_dn") == loss_group("loss_bbox_dn_2") == "loss_dn"
    assert loss_group("loss_class_hybrid_1") == "loss_hybrid"


def test_param_groups_backbone_lr():
    module = make_module()
    groups = module.param_groups(1e-4)
    by_mult = {g["lr_mult"]: g for g in groups}
    backbone = {id(p) for p in module.model.backbone.parameters()}
    assert {id(p) for p in by_mult[0.1]["params"]} == backbone
    assert by_mult[0.1]["lr"] == pytest.approx(1e-5) and by_mult[1.0]["lr"] == pytest.approx(1e-4)
    assert sum(len(g["params"]) for g in groups) == len(list(module.model.parameters()))


def test_training_step_logs_terms_and_evaluates(shapes_root, tmp_path):
    """One epoch of 2 training steps and a validation: losses logged per group, COCOeval metrics in range."""
    module, dm = make_module(), make_datamodule(shapes_root)
    before = [p.detach().clone() for p in module.model.parameters()]
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    t.fit(module, datamodule=dm)
    logged = t.callback_metrics
    for key in ("train/loss", "train/loss_class", "train/loss_bbox", "train/loss_aux"):
        assert key in logged and torch.isfinite(logged[key])
    total = logged["train/loss_class"] + logged["train/loss_bbox"] + logged["train/loss_aux"]
    assert logged["train/loss_epoch"] == pytest.approx(float(total), rel=1e-5)
    for key in ("val/map", "val/map_50", "val/map_75", "val/map_small", "val/map_medium"):
        assert 0.0 <= float(logged[key]) <= 1.0
    assert "val/map_large" not in logged  # undefined: no object of the 128-px set reaches 96² pixels
    assert all(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))


def test_gradients_are_clipped(shapes_root, tmp_path):
    norms = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            def record(optimizer, *_):
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

            trainer.optimizers[0].register_step_post_hook(record)  # grads as the step used them

    t = trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[Spy()])
    t.fit(make_module(clip=0.01), datamodule=make_datamodule(shapes_root))
    assert len(norms) == 2 and max(norms) <= 0.01 * (1 + 1e-4)


def test_resume_is_exact(shapes_root, tmp_path):
    """2 epochs straight == 1 epoch, its last.ckpt, 1 more, with the random augmentation on (its draws are seeded
    per (seed, epoch, image), so the resumed epoch flips and crops exactly as the uninterrupted one)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = {}

    def fit(name, epochs, ckpt_path=None):
        module = make_module()
        save = ModelCheckpoint(dirpath=tmp_path / name, save_last=True)
        run = trainer(tmp_path / name, max_epochs=epochs, limit_train_batches=2, limit_val_batches=0, callbacks=[save])
        run.fit(module, datamodule=make_datamodule(shapes_root, **data), ckpt_path=ckpt_path)
        return module

    straight = fit("straight", 2)
    fit("first", 1)
    resumed = fit("resumed", 2, ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_test_split_without_datamodule_and_plots(shapes_root, tmp_path):
    """Evaluation from the batch targets alone (no datamodule) gives the same AP as against the COCO json."""
    module, dm = make_module(), make_datamodule(shapes_root)
    dm.prepare_data()
    dm.setup("test")
    with_dm = trainer(tmp_path).test(module, datamodule=dm, verbose=False)[0]
    without = trainer(tmp_path).test(module, dataloaders=dm.test_dataloader(), verbose=False)[0]
    assert without["test/map"] == pytest.approx(with_dm["test/map"], abs=1e-6)
    assert without["test/map_50"] == pytest.approx(with_dm["test/map_50"], abs=1e-6)
    paths = module.make_plots(tmp_path / "plots", dm)
    assert len(paths) == 1 and paths[0].stat().st_size > 0


# ---- predict on an exported-style model ------------------------------------------------------------
def test_predict_writes_boxes_in_original_pixels(shapes_root, tmp_path):
    """A detector whose one confident query is the centred half of the image: the JSON box is that half of the
    original (non-square) image, whatever resize the model saw."""

    class Fixed(TinyDetector):
        def forward(self, images, masks=None):
            logits = torch.full((len(images), 2, 5), -10.0)
            logits[:, 0, 3] = 5.0
            boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]]).expand(len(images), 2, 4)
            return logits, boxes

    path = tmp_path / "in.png"
    Image.new("RGB", (200, 100), (90, 120, 30)).save(path)
    names = ["circle", "square", "triangle", "star", "cross"]
    spec = {"spec": {"class_names": names, "preprocess": {"eval_size": 64, "max_size": 128}}}
    written = predict(Fixed(), path, tmp_path / "out", spec)
    result = json.loads(written["predictions"].read_text())
    assert result["image_size"] == [200, 100]
    [det] = result["detections"]
    assert det["class"] == "star" and det["label"] == 3 and det["score"] > 0.99
    assert det["bbox"] == pytest.approx([50, 25, 100, 50], abs=0.01)
    assert written["picture"].stat().st_size > 0


def test_predict_rejects_files_that_are_not_images(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        predict(TinyDetector(), bad, tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        predict(TinyDetector(), tmp_path / "missing.jpg", tmp_path / "out")
