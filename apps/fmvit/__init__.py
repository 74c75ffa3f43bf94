"""FMViT: A multiple-frequency mixing Vision Transformer (Tan, Geng, Xie; arXiv 2311.05707).

Importing the package registers the variants with timm (`timm.create_model("fmvit_cpu", num_classes=10)`).
See apps/fmvit/README.md.
"""

from apps.fmvit import model as _model  # noqa: F401  (registers fmvit_* with timm)
