"""Multi-scale token layout (valid ratios, reference points) and the deformable encoder."""

from __future__ import annotations

import torch

from common.detection.encoder import DeformableEncoder, LevelDeformableAttention, flatten_levels, valid_ratios


def make_tokens(batch=2, dim=16, shapes=((8, 8), (4, 4)), pad_cols=0):
    """Random levels; image 1 has its right `pad_cols / 8` fraction padded on every level."""
    levels, masks, pos = [], [], []
    for h, w in shapes:
        levels.append(torch.randn(batch, dim, h, w))
        pos.append(torch.randn(batch, dim, h, w))
        m = torch.zeros(batch, h, w, dtype=torch.bool)
        cut = pad_cols * w // shapes[0][1]
        if cut:
            m[1, :, w - cut :] = True
        masks.append(m)
    return flatten_levels(levels, masks, pos)


def test_valid_ratios_hand_computed():
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[:, 3:, :] = True  # last row padded
    mask[:, :, 6:] = True  # last two columns padded
    torch.testing.assert_close(valid_ratios(mask), torch.tensor([[6 / 8, 3 / 4]]))


def test_layout_and_reference_points():
    tokens = make_tokens(pad_cols=4)
    assert tokens.src.shape == (2, 80, 16) and tokens.level_start_index.tolist() == [0, 64]
    assert tokens.token_levels().tolist() == [0] * 64 + [1] * 16
    centres = tokens.token_centres()
    torch.testing.assert_close(centres[0, 0], torch.tensor([1 / 16, 1 / 16]))  # pixel (0, 0) of the 8x8 map
    # image 1 is half padded in x: its first column centre is at 1/16 of the padded map = 1/8 of the image
    torch.testing.assert_close(centres[1, 0], torch.tensor([1 / 8, 1 / 16]))
    ref = tokens.reference_points()
    assert ref.shape == (2, 80, 2, 2)
    # on each level, a reference is the token centre on that level's padded map
    torch.testing.assert_close(ref[1, :, 0], centres[1] * tokens.valid_ratios[1, 0])


def test_encoder_shape_and_padding_does_not_leak():
    torch.manual_seed(0)
    enc = DeformableEncoder(num_layers=2, dim=16, num_heads=2, num_levels=2, num_points=2, ffn_dim=32).eval()
    tokens = make_tokens(pad_cols=4)
    memory, extras = enc(tokens)
    assert memory.shape == tokens.src.shape and extras == {}
    # changing what sits on padding tokens changes nothing on the real tokens
    noisy = tokens.src.clone()
    noisy[tokens.padding] = torch.randn(int(tokens.padding.sum()), 16) * 10
    tokens.src = noisy
    again, _ = enc(tokens)
    real = ~tokens.padding
    torch.testing.assert_close(again[real], memory[real], rtol=1e-5, atol=1e-5)


def test_static_export_path_matches_core():
    """The Python-shape path used under torch.export computes what the core's module computes."""
    torch.manual_seed(0)
    attn = LevelDeformableAttention(16, 2, 2, 3)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)  # non-trivial offsets and weights
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.5)
    tokens = make_tokens(pad_cols=2)
    query = torch.randn(2, 5, 16)
    for ref in (torch.rand(2, 5, 2, 2), torch.rand(2, 5, 2, 4)):
        core = attn(query, ref, tokens.src, tokens, value_mask=~tokens.padding)
        static = attn._static_forward(query, ref, tokens.src, tokens.level_shapes, ~tokens.padding)
        torch.testing.assert_close(static, core, rtol=1e-5, atol=1e-5)
