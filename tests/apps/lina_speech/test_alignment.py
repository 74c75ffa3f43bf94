"""The two answers to the GPU model's babble (README, "Why the GPU model babbles"): the guided-attention loss
that teaches the cross-attention to read the text, and generation's length window from the text's length."""

import math

import pytest
import torch

from apps.lina_speech.layers import guided_attention_loss
from apps.lina_speech.module import LinaSpeechModule
from apps.lina_speech.tokens import NUM_SPECIALS, STOP
from common.errors import ConfigError
from tests.apps.lina_speech.conftest import N_Q, tiny


def test_guide_is_zero_on_the_diagonal_and_large_off_it():
    """One utterance of 20 frames over 10 text tokens (4 padded, 5 frames of delay tail): an alignment on the
    diagonal costs < 0.02 (its only cost: rounding t/T down to a token, 0.05 off half the time), a uniform
    one 0.58 (the mean penalty over the square) and an anti-diagonal one more, whatever sits in the padding."""
    frames, text_len = torch.tensor([20]), torch.tensor([10])
    t = torch.arange(25)
    diagonal = torch.zeros(1, 25, 14)
    diagonal[0, t, (t * 10 // 20).clamp(max=9)] = 1.0
    anti = torch.zeros(1, 25, 14)
    anti[0, t, (9 - t * 10 // 20).clamp(min=0)] = 1.0
    uniform = torch.zeros(1, 25, 14)
    uniform[..., :10] = 0.1
    costs = [float(guided_attention_loss(a, text_len, frames)) for a in (diagonal, uniform, anti)]
    assert costs[0] < 0.02 and 0.5 < costs[1] < 0.65 < costs[2]
    padded = uniform.clone()
    padded[0, 20:] = 5.0  # the delay tail and the padding are not scored
    padded[0, :, 10:] = 5.0
    assert math.isclose(float(guided_attention_loss(padded, text_len, frames)), costs[1], rel_tol=1e-6)


def test_weights_are_the_attention_used_and_the_guide_trains_it(batch):
    """`weights=True` changes nothing in the logits and returns both attentions (rows summing to 1 over the real
    text); the module's guided step costs more than the plain loss, and the position attention's guide alone
    reaches the content attention's query and key through the position network (the path that reads the text)."""
    model = tiny()
    text, audio_in, target, _ = batch
    logits, att = model.logits(text, audio_in, weights=True)
    torch.testing.assert_close(logits, model.logits(text, audio_in), rtol=1e-12, atol=1e-12)
    assert att.shape == (2, 2, audio_in.shape[1], text.shape[1]) and (att[1, :, :, -2:] == 0).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, audio_in.shape[1], dtype=att.dtype))
    module = LinaSpeechModule(model.train(), optimizer=None, guide=1.0)
    module.log = lambda *args, **kwargs: None
    guided = module.training_step({"text": text, "audio_in": audio_in, "target": target}, 0)
    assert float(guided) > float(model.loss(logits, target))  # dropout 0: the same CE plus a positive guide
    frames = (target[..., 0] >= NUM_SPECIALS).sum(1)
    guided_attention_loss(model.logits(text, audio_in, weights=True)[1][:, 1], (text != 0).sum(1), frames).backward()
    for layer in (model.cross_att.q, model.cross_att.k, model.cross_att.pos_net.ffn.p_out):
        assert float(layer.weight.grad.norm()) > 0


def test_bad_guide():
    with pytest.raises(ConfigError):
        LinaSpeechModule(tiny(), optimizer=None, guide=-1.0)


def _biased(token: int, **overrides):
    model = tiny(**overrides)
    with torch.no_grad():
        model.head.bias.view(N_Q, -1)[0, token] += 50.0
    return model


def test_length_window(batch):
    """frames_per_token (1, 1.5) on texts of 6 and 4 tokens: a model that wants to stop at once speaks 6 and 4
    frames, one that never stops is cut at 9 and 6; unguarded, the official rule (stop token or max_frames 12)."""
    text = batch[0]
    eager, endless = _biased(STOP, frames_per_token=(1.0, 1.5)), _biased(NUM_SPECIALS + 5, frames_per_token=(1.0, 1.5))
    assert eager.length_window(text)[0].tolist() == [6, 4] and eager.length_window(text)[1].tolist() == [9, 6]
    assert [c.shape[0] for c in eager.generate(text)] == [6, 4]
    assert [c.shape[0] for c in endless.generate(text)] == [9, 6]
    assert [c.shape[0] for c in eager.generate(text, guard=False)] == [0, 0]
    assert [c.shape[0] for c in endless.generate(text, guard=False)] == [12, 12]
    assert [c.shape[0] for c in _biased(NUM_SPECIALS + 5, frames_per_token=(1.0, 5.0)).generate(text)] == [12, 12]
