"""The embedded codec rides in the model: frozen and left out of the optimiser, its weights in the state dict (so in
the checkpoint and the export's model.safetensors), and predict speaks through it once the codec folder is gone."""

import shutil

import lightning as L
import numpy as np
import soundfile
import torch
from safetensors.torch import save_file

from apps.lina_speech.module import LinaSpeechModule
from apps.lina_speech.predict import predict
from common.audio.codec import Codec
from common.audio.codec_train import codec_config, load_codec, save_codec
from common.audio.text import CharTokenizer
from common.pipeline.weights import load_weights
from tests.apps.lina_speech.conftest import CODEBOOK, N_Q, tiny


def test_codec_rides_in_the_weights(tmp_path):
    torch.manual_seed(0)
    codec = Codec(n_fft=256, win_length=200, hop_length=50, n_mels=16, channels=16, dim=8, n_q=N_Q,
                  codebook_size=CODEBOOK, griffin_lim_iters=2)  # fmt: skip
    codec.quantizer.codebooks.normal_()  # trained codebooks are not the init's
    folder = save_codec(codec, tmp_path / "codec")
    kwargs = dict(text_vocab=CharTokenizer().vocab_size, codec=codec_config(folder), codec_dir=str(folder))
    model = tiny(**kwargs).float()
    model.load_codec_weights()
    module = LinaSpeechModule(model, optimizer=lambda p: torch.optim.AdamW(p))
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trained = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert not any(id(p) in trained or p.requires_grad for p in model.codec.parameters())
    assert len(trained) == sum(1 for n, _ in model.named_parameters() if not n.startswith("codec."))

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    original = load_codec(folder)
    shutil.rmtree(folder)  # an export moved to another machine: only model.yaml's values and the weights
    again = tiny(**kwargs).float()
    load_weights(again, tmp_path / "model.safetensors")
    codes = torch.randint(0, CODEBOOK, (1, 9, N_Q))
    assert torch.equal(again.codec.decode(codes), original.decode(codes))

    written = predict(again, "Hello there.", tmp_path / "out", spec={})
    frames = len(np.load(written["codes"]))
    info = soundfile.info(str(written["wav"]))
    assert info.samplerate == codec.sample_rate and frames > 0
    assert info.frames == (frames * codec.stride - 1) * codec.hop_length  # Griffin-Lim's length of those frames
