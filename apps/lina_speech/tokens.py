"""Codec tokens as the language model sees them: the official specials and the delay pattern.

Token ids are codec codes shifted by 3 for the specials (Lina-Speech's convention): 0 pad (input padding,
zero embedding), 1 BOS / ignore (the loss ignores targets equal to 1), 2 stop. With n_q quantizers the
delay pattern shifts quantizer q right by q frames, so the model predicts quantizer q of frame t after
quantizers < q of the same frame (MusicGen / Lina's `delay_rvq`). A sentence of L frames becomes L + n_q
delayed steps, quantizer q holding q BOS, its L tokens, the stop token, then BOS:

    q0:  c0  c1  ..  cL-1  stop  BOS ...
    q1:  BOS c0  c1  ..    cL-1  stop ...

The model reads BOS followed by this sequence minus its last step and predicts the sequence (targets = 1
are ignored, so the delay's leading BOS are never a target).
"""

from __future__ import annotations

import torch

PAD, BOS, STOP = 0, 1, 2
NUM_SPECIALS = 3


def delay(codes: torch.Tensor) -> torch.Tensor:
    """codes [L, n_q] (0 .. codebook_size - 1) -> delayed token ids [L + n_q, n_q] with BOS and stop."""
    length, n_q = codes.shape
    out = torch.full((length + n_q, n_q), BOS, dtype=torch.long)
    for q in range(n_q):
        out[q : q + length, q] = codes[:, q].long() + NUM_SPECIALS
        out[q + length, q] = STOP
    return out


def undelay(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Delayed token ids [>= length + n_q - 1, n_q] -> codes [length, n_q]; specials where a code should be
    (a model's slip) become code 0."""
    n_q = tokens.shape[1]
    codes = torch.stack([tokens[q : q + length, q] for q in range(n_q)], dim=1) - NUM_SPECIALS
    return codes.clamp(min=0)


def training_pair(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [L, n_q] -> (input, target), each [L + n_q, n_q]: target = delay(codes), input = BOS, target[:-1]."""
    target = delay(codes)
    bos = torch.full_like(target[:1], BOS)
    return torch.cat([bos, target[:-1]]), target


def pad_batch(seqs: list[torch.Tensor], value: int) -> torch.Tensor:
    """[L_i, ...] tensors -> [B, max L, ...], padded at the end with `value`."""
    longest = max(s.shape[0] for s in seqs)
    out = torch.full((len(seqs), longest, *seqs[0].shape[1:]), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out


def collate_codes(codes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of codes [L_i, n_q] -> audio_in [B, D, n_q] padded with PAD and target [B, D, n_q] padded
    with BOS (ignored), D = max L_i + n_q."""
    pairs = [training_pair(c) for c in codes]
    return pad_batch([p[0] for p in pairs], PAD), pad_batch([p[1] for p in pairs], BOS)
