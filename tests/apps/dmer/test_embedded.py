"""The embedded set, built small: real corpus pieces rendered to audible excerpts, proxy curves in range, whole
pieces held out, test pieces rated only by held-out annotators, the consensus is the mean rating."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import soundfile

from apps.dmer.corpus import read_embedded, seeded_splits
from apps.dmer.data import DMERDataModule
from apps.dmer.embedded import assign_ratings, build_embedded


def test_a_small_build_reads_back_as_a_corpus(tmp_path):
    out = tmp_path / "set"
    build_embedded(out, num_pieces=3, seconds=6.0, num_val=1, num_test=1, num_annotators=5, test_annotators=2,
                   raters_per_piece=2, show_progress=False)  # fmt: skip
    info = json.loads((out / "pieces.json").read_text())
    assert [p["id"] for p in info["pieces"]] == ["piece_000", "piece_001", "piece_002"]
    assert sorted(p["split"] for p in info["pieces"]) == ["test", "train", "val"]
    corpus = read_embedded(out)
    for path in corpus.audio:
        wave, sr = soundfile.read(path)
        assert sr == 22050 and len(wave) == 6 * 22050 and 0.005 < np.abs(wave).max() <= 1.0
    assert corpus.times.shape == (3, 12) and np.allclose(corpus.times[0, :2], [0.25, 0.75])
    with np.load(out / "labels.npz") as f:
        reference, features = f["reference"], f["feature_density"]
    assert reference.shape == (3, 12, 2) and np.abs(reference).max() < 1 and features.shape == (3, 12)
    test = corpus.indices("test")[0]
    raters = {who for piece, who, _ in corpus.ratings if piece == test}
    assert raters == {a for a, s in corpus.annotator_split.items() if s == "test"} and len(raters) == 2
    mean = np.mean([r for piece, _, r in corpus.ratings if piece == test], axis=0)
    assert np.allclose(corpus.consensus[test], mean, atol=1e-6)
    # personalisation tasks: the held-out annotators on the test pieces; val (where the adaptation's settings are
    # chosen): the training annotators on the val pieces, which no model trains on
    tasks = {split: DMERDataModule.annotator_tasks(SimpleNamespace(corpus=corpus), split) for split in ("val", "test")}
    assert set(tasks["test"]) == raters and len(tasks["val"]) == 2
    for split, by_annotator in tasks.items():
        for who, rated in by_annotator.items():
            assert corpus.annotator_split[who] == ("test" if split == "test" else "train")
            assert {piece for piece, _ in rated} == set(corpus.indices(split))


def test_rating_assignment_keeps_held_out_annotators_on_test_pieces():
    splits = ["train", "val", "test", "train", "test"]
    pairs = assign_ratings(splits, num_annotators=10, test_annotators=3, per_piece=4, rng=np.random.default_rng(0))
    for piece, split in enumerate(splits):
        raters = [a for p, a in pairs if p == piece]
        if split == "test":
            assert raters == [7, 8, 9]
        else:
            assert len(raters) == 4 == len(set(raters)) and max(raters) < 7


def test_seeded_splits_hold_out_whole_pieces_reproducibly():
    a, b = seeded_splits(40, 0.1, 0.2, seed=3), seeded_splits(40, 0.1, 0.2, seed=3)
    assert a == b and a.count("test") == 8 and a.count("val") == 4
    assert seeded_splits(40, 0.1, 0.2, seed=4) != a
