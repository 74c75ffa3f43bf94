"""Relation-DETR (Hou et al., ECCV 2024): position relation prior for DETR, on common/detection."""
