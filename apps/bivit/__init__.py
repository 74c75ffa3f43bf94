"""BiViT: Extremely Compressed Binary Vision Transformers (He et al., ICCV 2023, arXiv 2211.07091).

A DeiT-style ViT on the attention core (any token mixer in full precision; softmax-aware binarised
attention for the binary model), 1-bit weights with learnable channel scales and 1-bit activations,
trained by cross-layer binarisation from a full-precision checkpoint. See apps/bivit/README.md.
"""
