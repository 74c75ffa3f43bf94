"""dmer through the real Hydra CLI with tiny sizes: train (building a five-piece embedded set) -> run folder,
metrics with the mean-predictor and personalisation scores -> evaluate + export (ONNX checked by onnxruntime)
-> predict a rendered piece, plain and personalised from an annotated CSV. Unsupported, unreadable, short and
silent audio fail by name (in process)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from common.audio.io import write_wav
from common.pipeline.export import load
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=dmer",
    "max_epochs=1",
    "data.num_pieces=5",
    "data.num_val=1",
    "data.num_test=2",
    "data.num_annotators=6",
    "data.test_annotators=2",
    "data.raters_per_piece=2",
    "data.steps=12",
    "data.n_mels=16",
    "data.batch_size=4",
    "model.dim=16",
    "model.ffn_dim=16",
    "model.lstm_hidden=8",
    "model.head_hidden=8",
    "model.clip_channels=8",
    "model.local_width=2",
    "model.global_width=6",
    "module.adapt_steps=2",
    "module.personal_supports=1",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


def test_train_eval_export_predict(tmp_path):
    run_cli("train", *TINY, root=tmp_path)
    run = (tmp_path / "runs" / "dmer" / "latest").resolve()
    for rel in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/emotion_curves.png", "config.yaml"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "music21_rendered" and metrics["monitor"]["name"] == "val/score"
    test = metrics["test"]
    for key in ("arousal_ccc", "valence_ccc", "arousal_ccc_pooled", "mean_arousal_ccc", "personal_rmse_adapted"):
        assert np.isfinite(test[key]), key
    assert all(-1 <= test[k] <= 1 for k in test if "ccc" in k or "pcc" in k)

    proc, _ = side_by_side(
        lambda: run_cli("evaluate", "app=dmer", root=tmp_path),
        lambda: run_cli("export", "app=dmer", root=tmp_path),
    )
    assert "test:" in proc.stdout
    export_dir = tmp_path / "exports" / "dmer"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]  # the band-masked attention and the BiLSTM export
    model = load(export_dir)
    assert model.steps == 12 and model.hop_seconds == 0.2

    import onnxruntime as ort

    windows, clip = model.example_inputs()
    windows, clip = torch.cat([windows, windows + 5]), torch.cat([clip, clip - 5])  # batch 4: dynamic
    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(
        None, {"windows": windows.numpy(), "clip": clip.numpy()}
    )
    with torch.no_grad():
        np.testing.assert_allclose(got[0], model(windows, clip).numpy(), rtol=1e-4, atol=1e-4)

    data = next((tmp_path / "data" / "dmer").glob("music21_rendered-*"))
    piece = data / "audio" / "piece_000.flac"
    steps = np.arange(12)
    annotated = pd.DataFrame({"audio": "../" + str(piece.relative_to(tmp_path)), "time": (steps + 0.5) / 2,
                              "arousal": np.linspace(-0.5, 0.5, 12), "valence": 0.3})  # fmt: skip
    (tmp_path / "mine").mkdir()
    annotated.to_csv(tmp_path / "mine" / "annotated.csv", index=False)
    export = f"export_dir={export_dir}"
    plain, personal = side_by_side(
        lambda: run_cli("predict", "app=dmer", f"input={piece}", export, f"out={tmp_path / 'p1'}", root=tmp_path),
        lambda: run_cli(
            "predict",
            "app=dmer",
            f"input={piece}",
            export,
            f"out={tmp_path / 'p2'}",
            f"adapt={tmp_path / 'mine' / 'annotated.csv'}",
            root=tmp_path,
        ),  # fmt: skip
    )
    curves = [pd.read_csv(tmp_path / p / "emotion.csv") for p in ("p1", "p2")]
    assert list(curves[0].columns) == ["time_s", "arousal", "valence"] and len(curves[0]) == 12
    assert (tmp_path / "p1" / "emotion.png").is_file() and "personalised" in personal.stdout
    assert not np.allclose(curves[0][["arousal", "valence"]], curves[1][["arousal", "valence"]])


BAD_FILES = {
    "x.txt": (b"", "unsupported format"),
    "bad.wav": (b"RIFF not really", "unreadable audio"),
    "short.wav": (0.1 * np.ones(22050), "only 1.00 s"),
    "silent.wav": (np.zeros(22050 * 8), "silent"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_predictor_names_unsupported_unreadable_short_and_silent_files(tmp_path, name):
    """The predictor's input check, in process (the CLI's InputError -> exit status 2 is shared by every app and
    checked by their CLI tests)."""
    from apps.dmer.predict import read_recording
    from common.errors import InputError

    content, problem = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_wav(path, content, 22050)
    with pytest.raises(InputError, match=problem):
        read_recording(path, 22050, 0.2)


def test_predict_personalises_as_the_module_does():
    """`predict adapt=` (an export carries no module config) adapts with constants that must be the module's
    defaults in configs/app/dmer.yaml, or a user's personalisation differs from the one the README measures."""
    from omegaconf import OmegaConf

    from apps.dmer import predict

    module = OmegaConf.load("configs/app/dmer.yaml").module
    assert (
        module.adapt_steps,
        module.inner_lr,
        module.adapt_prefix,
    ) == (predict.ADAPT_STEPS, predict.ADAPT_LR, predict.ADAPT_PREFIX)
