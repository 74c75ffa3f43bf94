"""NestedMorph: deformable 3-D registration with nested attention fusion (Marthi et al., WACV 2025, arXiv 2410.02550).

A MiT-style transformer encoder (dual spatial/channel attention blocks), multi-scale gated attention on the skips,
a large-kernel-attention decoder and a displacement head; MONAI's Warp resamples the moving volume. See
apps/nestedmorph/README.md.
"""
