"""Shared medical-imaging code: NIfTI volumes, the embedded brains, and what the segmentation and registration
apps have in common."""
