"""Text to speech with a trained Lina-Speech: a text file in, `speech.wav` and its spectrogram picture out.

Input: a UTF-8 text file (`.txt` or any extension) of at most MAX_CHARS characters once normalised
(`common.audio.text.normalize`: numbers and symbols read out, lower-case ASCII). Empty text, text with
nothing speakable (e.g. only emoji or another script), or undecodable bytes raise InputError.
Optional `voice`: a voice file of initial-state tuning (ist.py) for a held-out voice.
Output under `out_dir`: `speech.wav` (the codec's sample rate), `spectrogram.png` (log-magnitude STFT),
`codes.npy` ([frames, n_q], the generated codec codes) and `text.txt` (the normalised text read).
The codec is the one the model's tokens came from: inside the model (the embedded codec, whose weights the
checkpoint and the export carry), or the folder `model.codec_dir`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from apps.lina_speech.ist import load_voice
from apps.lina_speech.model import LinaSpeech
from common.audio.io import write_wav
from common.audio.phonemes import text_ids
from common.audio.text import normalize
from common.errors import ConfigError, InputError

MAX_CHARS = 400
EXPECTED = f"a UTF-8 text file of English text, 1 to {MAX_CHARS} characters once normalised"


def read_text(path: Path | str) -> str:
    """The normalised text of a user's file, or of literal text given as a string (`make predict input="Hello."`);
    InputError for empty, unspeakable or unreadable text."""
    if isinstance(path, str):
        raw = path
    else:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(path, EXPECTED, problem=f"cannot read text ({type(e).__name__})") from None
    if not raw.strip():
        raise InputError(path, EXPECTED, problem="empty text")
    text = normalize(raw)
    if not any(c.isalpha() for c in text):
        raise InputError(path, EXPECTED, problem="no speakable English words in the text")
    if len(text) > MAX_CHARS:
        raise InputError(path, EXPECTED, problem=f"{len(text)} characters after normalisation")
    return text


def load_model_codec(model: LinaSpeech):
    """The model's own codec (trained on the embedded corpus: in its weights), else the one at `codec_dir`."""
    if model.codec is not None:
        return model.codec.eval()
    if model.codec_dir is None:
        raise ConfigError("model.codec_dir", None, "the codec folder of the model's tokens, to turn codes into sound")
    from common.audio.codec_train import load_codec

    return load_codec(model.codec_dir)


def synthesize(model: LinaSpeech, text: str, codec, voice=None, generator=None) -> tuple[np.ndarray, torch.Tensor]:
    """Normalised text -> (wave [T] float32 at codec.sample_rate, codes [frames, n_q])."""
    device = next(model.parameters()).device
    ids = torch.tensor([text_ids(text, model.text_units)], device=device)
    codes = model.generate(ids, voice=voice, generator=generator)[0]
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.float32), codes
    with torch.no_grad():
        wave = codec.decode(codes[None].cpu())
    return np.asarray(wave, dtype=np.float32).reshape(-1), codes


def spectrogram_figure(wave: np.ndarray, sample_rate: int, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from common.utils.figures import save_figure

    n_fft = 512
    signal = torch.from_numpy(wave) if len(wave) >= n_fft else torch.zeros(n_fft)
    spec = torch.stft(signal, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
    fig, ax = plt.subplots(figsize=(8, 3))
    extent = [0, len(wave) / sample_rate, 0, sample_rate / 2000]
    ax.imshow(db.numpy(), origin="lower", aspect="auto", extent=extent, vmin=float(db.max()) - 80, cmap="magma")
    ax.set(xlabel="time (s)", ylabel="frequency (kHz)", title=title[:90])
    return save_figure(fig, path)


def predict(model: LinaSpeech, input_path: Path | str, out_dir: Path, spec: dict, voice: str | None = None) -> dict:
    text = read_text(input_path)
    codec = load_model_codec(model)
    tuned = load_voice(voice, model) if voice else None
    wave, codes = synthesize(model.eval(), text, codec, tuned, torch.Generator().manual_seed(0))
    out_dir = Path(out_dir)
    written = {
        "wav": out_dir / "speech.wav",
        "spectrogram": out_dir / "spectrogram.png",
        "codes": out_dir / "codes.npy",
        "text": out_dir / "text.txt",
    }
    write_wav(written["wav"], wave, codec.sample_rate)
    spectrogram_figure(wave, codec.sample_rate, text, written["spectrogram"])
    np.save(written["codes"], codes.cpu().numpy(), allow_pickle=False)
    written["text"].write_text(text + "\n")
    print(f"{codes.shape[0]} frames, {len(wave) / codec.sample_rate:.2f} s of speech for: {text}")
    return written
