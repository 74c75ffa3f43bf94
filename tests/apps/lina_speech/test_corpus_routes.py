"""Which folders the embedded route builds (embedded.py), with the builders replaced by recorders: a larger corpus
with `codec_corpus={}` reuses the default corpus's codec and gets its own token table; `workers` names nothing."""

from __future__ import annotations

import json

import numpy as np
import torch

from apps.lina_speech import embedded
from apps.lina_speech.table import Utterance, read_table, write_table


def _recorders(monkeypatch, calls):
    monkeypatch.setattr(embedded, "build_speech_corpus", lambda out, **o: calls.append(("corpus", o)))
    monkeypatch.setattr(
        "common.audio.codec_train.train_codec", lambda corpus, out, **o: calls.append(("codec", corpus.name))
    )
    monkeypatch.setattr(embedded, "encode_corpus", lambda c, k, out: calls.append(("tokens", c.name, k.name)))


def test_larger_corpus_keeps_the_default_codec(monkeypatch, tmp_path, capsys):
    calls = []
    _recorders(monkeypatch, calls)
    default = embedded.build_embedded(tmp_path, {}, {})
    assert default["tokens"] == embedded.tokens_of(default["codec"])
    assert embedded.corpus_of(default["codec"]) == default["corpus"]
    calls.clear()
    large = {"n_sentences": 4000, "n_heldout_sentences": 300}
    built = embedded.build_embedded(tmp_path, large | {"workers": 1}, {}, codec_corpus={})
    assert built["codec"] == default["codec"]  # not retrained
    assert built["corpus"] != default["corpus"] and built["tokens"] not in (default["tokens"], built["corpus"])
    assert calls == [("corpus", large | {"workers": 1}), ("tokens", built["corpus"].name, default["codec"].name)]
    assert embedded.build_embedded(tmp_path, large, {}, codec_corpus={}) == built  # workers name nothing
    embedded.main(["--data-dir", str(tmp_path), "n_sentences=4000", "n_heldout_sentences=300", "workers=1"])
    assert json.loads(capsys.readouterr().out)["tokens"] == str(built["tokens"])  # the command line: the same route
    own = embedded.build_embedded(tmp_path, large, {})  # without codec_corpus: a codec of its own
    assert own["codec"] != default["codec"] and calls[-2] == ("codec", built["corpus"].name)


def test_codes_are_stored_in_the_smallest_type(tmp_path):
    codes = torch.tensor([[0, 255], [17, 3]])
    meta = {"n_q": 2, "codebook_size": 256, "frame_rate": 40.0, "sample_rate": 16000, "text_vocab": 35}
    write_table(tmp_path, meta, [Utterance("u", "v", "s", "train", "ab", torch.tensor([1, 2]), codes)])
    assert np.load(tmp_path / "codes.npy").dtype == np.uint8
    assert torch.equal(read_table(tmp_path).utterances[0].codes, codes)
