"""Initial-state tuning: it changes only the initial states (the model's weights stay bit for bit), it lowers the
held-out voice's loss, and a voice file round-trips (a bad one is a named InputError)."""

import pytest
import torch

from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.ist import VoiceStates, load_voice, tune_voice
from common.errors import ConfigError, InputError
from tests.apps.lina_speech.conftest import tiny


def _loss(model, batches, voice=None):
    with torch.no_grad():
        states = voice.states() if voice is not None else None
        return sum(float(model.loss(model.logits(b["text"], b["audio_in"], states), b["target"])) for b in batches)


def test_ist_changes_only_the_states_and_fits_the_voice(table_dir, tmp_path):
    dm = LinaSpeechDataModule(source="tokens", root=str(table_dir))
    dm.setup("fit")
    model = tiny().float()
    tune = dm.loader(dm.utterances("ist_train", "c"), shuffle=False, batch_size=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    voice, losses = tune_voice(model, tune, steps=15, grad_accumulation=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards
    # Held-out sentences of the voice (not the ones tuned on): the states carry what the voice shares.
    held_out = list(dm.loader(dm.utterances("ist_test", "c"), shuffle=False, batch_size=4))
    assert _loss(model, held_out, voice) < _loss(model, held_out)
    path = tmp_path / "voice.safetensors"
    voice.save(path)
    again = load_voice(path, model)
    for a, b in zip(again.states(), voice.states()):
        torch.testing.assert_close(a, b)
    assert path.stat().st_size < 50_000


def test_voice_shapes_and_errors(tmp_path):
    model = tiny()
    voice = VoiceStates.for_model(model, rank=2)
    assert [s.shape[1:] for s in voice.states()] == [layer.state_shape()[1:] for layer in model.gla_layers()]
    with pytest.raises(ConfigError, match="arch"):
        VoiceStates.for_model(tiny("transformer"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="voice file"):
        load_voice(bad, model)
    other = tiny(dim=48)  # another model's voice: shapes do not match
    voice.save(tmp_path / "v.safetensors")
    with pytest.raises(InputError, match="voice file"):
        load_voice(tmp_path / "v.safetensors", other)
