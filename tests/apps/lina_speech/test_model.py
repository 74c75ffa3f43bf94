"""Lina-Speech's model: chunked (training) == recurrent (generation), the ignore and stop conventions, shapes,
gradients, causality, the exported step, and the softmax baseline's KV cache."""

import pytest
import torch

from apps.lina_speech.tokens import BOS, NUM_SPECIALS, STOP
from common.errors import ConfigError
from tests.apps.lina_speech.conftest import CODEBOOK, N_Q, tiny

# float64 throughout: the chunked and recurrent forms sum the same terms in a different order, so they agree to
# a few ulps of the largest partial sum; 1e-9 leaves 6 orders of magnitude of room and still catches any
# real difference (a wrong decay or a dropped state is O(1e-2) or more).
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ["gla", "transformer"])
def test_teacher_forced_equals_step_by_step(arch, batch):
    """Training form (GLA chunked, chunk 4 over 11 steps; softmax full) == generation form (recurrent / KV cache)."""
    model = tiny(arch)
    text, audio_in, _, _ = batch
    memory, mask = model.text_encoder(text)
    full, final = model.decode(audio_in, memory, mask)
    states, steps = None, []
    for t in range(audio_in.shape[1]):
        logits, states = model.decode(audio_in[:, t : t + 1], memory, mask, states, t, step=True)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    if arch == "gla":
        for got, want in zip(states, final):
            torch.testing.assert_close(got, want, **TOL)


def test_shapes_causality_and_text_padding(batch):
    model = tiny()
    text, audio_in, _, _ = batch
    logits = model.logits(text, audio_in)
    assert logits.shape == (2, 11, N_Q, CODEBOOK + NUM_SPECIALS)
    future = audio_in.clone()
    future[:, 6:] = NUM_SPECIALS  # change the future: the past's logits stay
    torch.testing.assert_close(model.logits(text, future)[:, :6], logits[:, :6], **TOL)
    padded = torch.cat([text, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # more text padding changes nothing
    torch.testing.assert_close(model.logits(padded, audio_in), logits, **TOL)


def test_loss_ignores_bos_targets_and_matches_manual_cross_entropy(batch):
    model = tiny()
    text, audio_in, target, _ = batch
    logits = model.logits(text, audio_in)
    ignored = target == BOS
    assert ignored.any() and (~ignored).any()
    changed = logits.clone()
    changed[ignored] = torch.randn_like(changed[ignored]) * 10  # logits where the target is ignored: no effect
    torch.testing.assert_close(model.loss(changed, target), model.loss(logits, target), **TOL)
    log_p = logits.log_softmax(-1).gather(-1, target[..., None])[..., 0]
    torch.testing.assert_close(model.loss(logits, target), -log_p[~ignored].mean(), **TOL)


@pytest.mark.parametrize("arch", ["gla", "transformer"])
def test_gradients_reach_every_parameter(arch, batch):
    model = tiny(arch).train()
    text, audio_in, target, _ = batch
    model.loss(model.logits(text, audio_in), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _biased(token: int, quantizer: int = 0):
    """A model whose heads always prefer `token` on `quantizer` (head bias +50)."""
    model = tiny()
    with torch.no_grad():
        model.head.bias.view(N_Q, -1)[quantizer, token] += 50.0
    return model


def test_generation_stops_on_the_stop_token(batch):
    text = batch[0]
    assert [c.shape[0] for c in _biased(STOP).generate(text)] == [0, 0]  # stop first: empty speech
    codes = _biased(NUM_SPECIALS + 5).generate(text)  # never stops: the cap forces the stop
    assert [c.shape for c in codes] == [(12, N_Q)] * 2
    assert (codes[0][:, 0] == 5).all() and codes[0].max() < CODEBOOK


def test_delay_pattern_in_generation(batch):
    """Quantizer 0 decides the end; the delayed quantizer 1 emits its stop one step later, BOS before its start."""
    model = tiny()
    gen = torch.Generator().manual_seed(0)
    stop_at = torch.tensor([-1, -1])
    steps = []
    memory, mask = model.text_encoder(batch[0])
    logits = torch.zeros(2, N_Q, CODEBOOK + NUM_SPECIALS, dtype=torch.float64)
    for t in range(4):
        logits[:, 0, STOP] = 100.0 if t == 2 else -100.0
        steps.append(model.sample(logits, t, stop_at, top_k=5, temperature=1.0, generator=gen))
    steps = torch.stack(steps, dim=1)  # [B, 4, n_q]
    assert stop_at.tolist() == [2, 2]
    assert (steps[:, 0, 1] == BOS).all() and (steps[:, 2, 0] == STOP).all() and (steps[:, 3, 1] == STOP).all()
    assert (steps[:, :2, 0] >= NUM_SPECIALS).all() and (steps[:, 1:3, 1] >= NUM_SPECIALS).all()


def test_streaming_matches_generate_and_sampling_is_seeded(batch):
    model = _biased(STOP)
    with torch.no_grad():
        model.head.bias.view(N_Q, -1)[0, STOP] -= 100.0  # never stops by itself: 12 sampled frames
    text = batch[0][:1]
    whole = model.generate(text, generator=torch.Generator().manual_seed(3))[0]
    frames = [c for c, ok in model.stream(text, generator=torch.Generator().manual_seed(3)) if ok.all()]
    torch.testing.assert_close(torch.cat(frames), whole)
    assert whole.shape == (12, N_Q) and len(set(whole[:, 0].tolist())) > 1  # sampled, not constant


@pytest.mark.parametrize("arch", ["gla", "transformer"])
def test_exported_step_equals_decode(arch):
    """The exported graph is one decoding step with the states stacked: same logits and states as `decode`."""
    model = tiny(arch).float()
    token, memory, mask, t, state, pos_state = model.example_inputs()
    states = model._unpack(state, pos_state)
    want, new = model.decode(token, memory, mask, states, int(t), step=True)
    logits, next_state, next_pos = model(token, memory, mask, t, state, pos_state)
    torch.testing.assert_close(logits, want[:, 0])
    for got, expected in zip(model._unpack(next_state, next_pos), new):
        torch.testing.assert_close(got, expected)
    if arch == "transformer":
        assert next_state.shape[-2] == state.shape[-2] + 1  # the cache grew by the step


def test_bad_arguments():
    with pytest.raises(ConfigError, match="arch"):
        tiny("mamba")
    with pytest.raises(ConfigError, match="temperature"):
        tiny(temperature=0.0)
