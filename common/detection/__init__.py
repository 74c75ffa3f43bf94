"""Shared DETR components of the detection apps (focus_detr, relation_detr).

Data and evaluation: `shapes` (the embedded shapes set), `coco` (COCO-format dataset and datamodule),
`voc` (Pascal-VOC / DeepForest conversion), `transforms` (DETR augmentation and the padding collate),
`postprocess`, `evaluator` (COCOeval), `module` (the LightningModule), `plots`, `predict`.
Model: `backbone`, `position`, `encoder`, `decoder`, `query_selection`, `detector`.
Training targets: `matcher`, `losses`, `criterion`, `denoising`.
Conventions (boxes, batches, model and criterion interfaces): see the module docstrings of `transforms` and
`module`; boxes inside models are normalised cxcywh, in files and pictures absolute xywh pixels.
"""
