"""Focus-DETR app: the detector (model.py), its criterion with the foreground select loss (criterion.py)."""
