"""(slow) The embedded route end to end at a tiny size: corpus (espeak-ng + flite) -> codec -> token table -> train
through Hydra -> export (the codec inside: predict runs with the data folder moved away) -> predict a text file to a
wav -> tune a held-out voice -> predict with it -> the judge (WER, IST similarity). Minutes on 2 CPU cores: the
corpus and the codec are built for real."""

from __future__ import annotations

import json
import shutil

import pytest

from apps.lina_speech.ist import main as ist_main
from apps.lina_speech.judge import main as judge_main
from apps.lina_speech.predict import predict
from common.audio.io import load_audio
from common.pipeline.export import load
from tests.conftest import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="espeak-ng/flite missing"),
]

CORPUS = [
    "+data.corpus.n_sentences=16",
    "+data.corpus.n_val=2",
    "+data.corpus.n_test=2",
    "+data.corpus.voices=[flite:slt,espeak:en-us+f5]",
    "+data.corpus.heldout_voices=[flite:rms]",
    "+data.codec.steps=30",
    "+data.codec.max_utterances=40",
]
TINY = ["model.dim=32", "model.n_layer=1", "model.text_layers=1", "model.d_blind=16", "model.max_frames=60"]


def test_embedded_train_export_predict_ist(tmp_path):
    run_cli("train", "app=lina_speech", *CORPUS, *TINY, "max_epochs=1", "trainer=cpu", root=tmp_path)
    run = (tmp_path / "runs" / "lina_speech" / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "espeak_fortunes" and "unigram_loss" in metrics["test"]
    run_cli("export", "app=lina_speech", root=tmp_path)
    export_dir = tmp_path / "exports" / "lina_speech"
    model = load(export_dir)
    assert model.codec_dir and model.n_q >= 1 and model.codec is not None  # the codec rides in the export

    text = tmp_path / "in.txt"
    text.write_text("Hello world, this is a test.")
    (tmp_path / "data").rename(tmp_path / "elsewhere")  # predict needs the export only, not the data folder
    written = predict(model, text, tmp_path / "out", spec={})
    (tmp_path / "elsewhere").rename(tmp_path / "data")
    wave = load_audio(written["wav"], 16000)
    assert written["spectrogram"].is_file() and len(wave) >= 0

    voice = tmp_path / "voice.safetensors"
    ist_main(["--export", str(export_dir), "--voice", "flite:rms", "--out", str(voice), "--steps", "3"])
    assert voice.stat().st_size < 100_000
    with_voice = predict(model, text, tmp_path / "out_voice", spec={}, voice=str(voice))
    assert with_voice["wav"].is_file()

    report = tmp_path / "judge.json"
    judge_main(["--export", str(export_dir), "--sentences", "2", "--ist-steps", "2", "--out", str(report)])
    result = json.loads(report.read_text())
    assert result["wer"]["sentences"] == 2 and {"original_flite", "codec_flite"} <= set(result["wer"])
    assert -1 <= result["ist"]["similarity_tuned"] <= 1 and result["ist"]["voice"] == "flite:rms"
