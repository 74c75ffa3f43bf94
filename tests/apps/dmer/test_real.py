"""DEAM and PMEmo read as distributed, from tiny folders written here: curves, step times, per-rater ratings and
held-out raters; the DEAM layout goes through the data module to model inputs; broken files fail by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile

from apps.dmer.data import DMERDataModule
from apps.dmer.real import DEAM_AUDIO, DEAM_AVERAGED, DEAM_RATERS, PMEMO_DYNAMIC, read_deam, read_pmemo
from common.errors import DatasetError

SONGS = [2, 3, 5, 7, 11, 13]
COLUMNS = [f"sample_{15000 + 500 * k}ms" for k in range(8)]


def _deam(root, audio=False, songs=SONGS):
    """A DEAM folder: curves of `songs` (the last one short), two raters per song but the last, tones as audio."""
    rng = np.random.default_rng(0)
    for name in ("arousal", "valence"):
        rows = rng.uniform(-0.8, 0.8, (len(songs), len(COLUMNS)))
        rows[-1, 5:] = np.nan  # the last song is short: dropped at 8 steps
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame.insert(0, "song_id", songs)
        (root / DEAM_AVERAGED).mkdir(parents=True, exist_ok=True)
        frame.to_csv(root / DEAM_AVERAGED / f"{name}.csv", index=False)
        (root / DEAM_RATERS / name).mkdir(parents=True, exist_ok=True)
        for song in songs[:-1]:
            raters = pd.DataFrame(rng.uniform(-1, 1, (2, len(COLUMNS))), columns=COLUMNS)
            raters.insert(0, "WorkerId", [f"w{song % 3}", f"w{song % 3 + 3}"])
            raters.to_csv(root / DEAM_RATERS / name / f"{song}.csv", index=False)
    if audio:
        (root / DEAM_AUDIO).mkdir(parents=True)
        t = np.arange(22050 * 22) / 22050
        for i, song in enumerate(songs):
            tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t).astype(np.float32)
            soundfile.write(root / DEAM_AUDIO / f"{song}.mp3", tone, 22050, format="MP3")
    return root


def test_deam_curves_times_raters_and_held_out_raters(tmp_path):
    corpus = read_deam(_deam(tmp_path), steps=8, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert corpus.ids == ["2", "3", "5", "7", "11"]  # 13 is incomplete over 8 steps
    assert np.allclose(corpus.times[0], 15.0 + 0.5 * np.arange(8))
    frame = pd.read_csv(tmp_path / DEAM_AVERAGED / "valence.csv")
    assert np.allclose(corpus.consensus[1, :, 1], frame.iloc[1, 1:9].to_numpy(dtype=float))
    assert corpus.audio[0] == tmp_path / DEAM_AUDIO / "2.mp3"
    assert len(corpus.ratings) == 10 and corpus.splits.count("test") == 1
    test_song = corpus.indices("test")[0]
    for piece, who, rating in corpus.ratings:
        assert rating.shape == (8, 2)
        if piece == test_song:
            assert corpus.annotator_split[who] == "test"  # whoever rated a test song is held out


def test_deam_through_the_data_module(tmp_path):
    root = _deam(tmp_path / "DEAM", audio=True)
    data = DMERDataModule(source="deam", root=str(root), data_dir=str(tmp_path / "cache"), steps=8, n_mels=16,
                          hop_seconds=0.2, val_fraction=0.2, test_fraction=0.2, show_progress=False)  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    assert data.dataset_name == "deam" and data.card == "deam"
    windows, clip, target = next(iter(data.train_dataloader()))
    # each window frame: the 16 mel bands, then the 12 chroma bins (data.chroma, on by default)
    assert windows.shape[1:] == (8, 25, 16 + 12) and clip.shape[1:] == (20, 16) and target.shape[1:] == (8, 2)
    assert data.model_kwargs()["clip_frames"] == 20
    # windows are cut at the label times (15-19 s of 22 s): every frame holds the tone (silence is -100 dB)
    assert (windows.amax(-1) > -40).all()


def test_pmemo_rescales_and_follows_frame_times(tmp_path):
    rows = [(m, 15.5 + 0.5 * k, 0.5 + 0.02 * k, 0.25) for m in (1, 4) for k in range(6)] + [(9, 15.5, 0.5, 0.5)]
    frame = pd.DataFrame(rows, columns=["musicId", "frameTime", "Arousal(mean)", "Valence(mean)"])
    (tmp_path / "annotations").mkdir()
    frame.sample(frac=1, random_state=0).to_csv(tmp_path / PMEMO_DYNAMIC, index=False)  # any row order
    corpus = read_pmemo(tmp_path, steps=4, val_fraction=0.3, test_fraction=0.3, seed=0)
    assert corpus.ids == ["1", "4"] and np.allclose(corpus.times[0], [15.5, 16.0, 16.5, 17.0])
    assert np.allclose(corpus.consensus[0, :, 0], 2 * (0.5 + 0.02 * np.arange(4)) - 1)
    assert np.allclose(corpus.consensus[:, :, 1], -0.5) and corpus.ratings == []


def test_broken_layouts_name_the_file_and_the_card(tmp_path):
    with pytest.raises(DatasetError, match="deam") as err:
        read_deam(tmp_path, 8, 0.1, 0.1, 0)
    assert "arousal.csv" in str(err.value)
    (tmp_path / "annotations").mkdir()
    pd.DataFrame({"musicId": [1], "frameTime": [15.5]}).to_csv(tmp_path / PMEMO_DYNAMIC, index=False)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['Arousal\(mean\)', 'Valence\(mean\)'\]"):
        read_pmemo(tmp_path, 4, 0.1, 0.1, 0)
