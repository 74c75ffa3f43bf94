import json

import numpy as np
import pytest
import torch

from common.audio import codec_train
from common.audio.codec import Codec
from common.audio.codec_eval import DB, log_mel_distance, mean_spectrum_baseline
from common.audio.codec_train import CONFIG, load_codec, train_codec
from common.audio.io import load_audio
from common.audio.speech import read_manifest
from common.errors import DatasetError, WeightsError
from tests.common.audio.test_speech import corpus  # noqa: F401 (the shared tiny corpus fixture)

SMALL = dict(channels=48, dim=16, n_q=3, codebook_size=32)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("codec")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: a second thread only adds synchronisation, ruinous on a busy machine
    try:
        train_codec(corpus, out, steps=150, batch_size=8, segment_seconds=0.5, lr=3e-3, **SMALL)
    finally:
        torch.set_num_threads(threads)
    return out


def test_encode_decode_shapes():
    torch.manual_seed(0)
    codec = Codec(**SMALL).eval()
    wave = torch.randn(2, 8000) * 0.1
    codes = codec.encode(wave)
    assert codes.shape == (2, codec.frames_of(8000), 3) == (2, 21, 3) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < 32 and codec.frame_rate == 40.0
    assert torch.equal(codec.encode(wave[1])[0], codes[1])  # a batch encodes each wave as alone
    out = codec.decode(codes)
    assert out.shape[0] == 2 and abs(out.shape[1] - 8000) <= codec.hop_length * codec.stride
    assert codec.decode(codes[..., :1]).shape == out.shape  # the first codebooks alone decode too
    with pytest.raises(ValueError, match="codes must be"):
        codec.decode(codes + 32)


def _spectral_errors(codec, waves):
    """Log-mel L1 (dB) of the codec's decoded spectrum and of the trivial baseline, against the true spectrum."""
    codec_db, baseline_db = [], []
    for wave in waves:
        _, log_magnitude = codec.log_spectra(codec.as_batch(wave))
        true = codec.log_mel(log_magnitude.exp())
        decoded = codec.log_mel(codec.decode_spectrum(codec.encode(wave)).exp())
        constant = codec.log_mel(log_magnitude.exp().mean(-1, keepdim=True))
        codec_db.append(float((decoded - true).abs().mean()) * DB)
        baseline_db.append(float((constant - true).abs().mean()) * DB)
    return np.mean(codec_db), np.mean(baseline_db)


def test_codec_learns_beyond_the_mean_spectrum(corpus, trained):  # noqa: F811
    # Unseen sentences. The baseline is each utterance's own average spectrum (its voice's timbre, no content):
    # a codec that beats it by half has learnt to code what changes in time, not only who speaks.
    codec = load_codec(trained)
    waves = [load_audio(u.path, codec.sample_rate) for u in read_manifest(corpus, "test")]
    codec_db, baseline_db = _spectral_errors(codec, waves)
    assert codec_db < 0.5 * baseline_db


def test_griffin_lim_inverts_a_true_spectrum(corpus):  # noqa: F811
    # Griffin-Lim recovers a phase for the true magnitude: its wave's log-mel stays within 2 dB of the original's
    # (measured about 1 dB on the corpus, codec card), far from the constant-spectrum baseline's 10+ dB.
    codec = Codec(**SMALL)
    wave = load_audio(read_manifest(corpus, "val")[0].path, codec.sample_rate)
    _, log_magnitude = codec.log_spectra(codec.as_batch(wave))
    vocoded = codec.spectrum_to_wave(log_magnitude)[0]
    assert log_mel_distance(codec, wave, vocoded) < 2.0
    assert log_mel_distance(codec, wave, mean_spectrum_baseline(codec, wave)) > 5.0


def test_save_load_round_trip_and_named_errors(trained, tmp_path):
    codec = load_codec(trained)
    wave = torch.randn(4000) * 0.1
    assert torch.equal(load_codec(trained).encode(wave), codec.encode(wave))
    with pytest.raises(DatasetError, match="lina_codec"):
        load_codec(tmp_path)
    (tmp_path / "codec.safetensors").write_bytes((trained / "codec.safetensors").read_bytes())
    config = json.loads((trained / CONFIG).read_text())
    config["codec"]["channels"] = 64
    (tmp_path / CONFIG).write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="encoder.0.weight"):
        load_codec(tmp_path)


def test_predicted_magnitudes_are_capped_where_exp_would_overflow():
    codec = Codec(**SMALL)
    cap = float(codec.window.sum())  # the largest STFT magnitude of a wave in [-1, 1]
    log_magnitude = torch.tensor([[[0.0, 200.0]]])  # exp(200) is inf in float32, and its mel NaN
    assert torch.allclose(codec.magnitude(log_magnitude), torch.tensor([[[1.0, cap]]]))
    assert torch.isfinite(codec.log_mel(codec.magnitude(torch.full((1, codec.n_fft // 2 + 1, 2), 200.0)))).all()


def test_diverged_training_stops_before_saving(corpus, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(codec_train, "codec_loss", lambda *a: (torch.tensor(float("nan")), {}))
    with pytest.raises(RuntimeError, match="diverged at step 1"):
        train_codec(corpus, tmp_path / "codec", steps=2, max_utterances=4, **SMALL)
    assert not (tmp_path / "codec").exists()
