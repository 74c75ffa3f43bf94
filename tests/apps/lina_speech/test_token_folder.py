"""data.source=tokens also reads a `common.audio.codec_tokens` folder (an npz per utterance) with the speech
corpus it encodes: the same utterances, codes and splits as the token table they were written from."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.table import read_table
from common.audio.codec_tokens import TokenInfo, write_token_info, write_tokens
from common.audio.speech import MANIFEST_FIELDS
from common.audio.text import CharTokenizer
from common.errors import ConfigError, DatasetError


def _as_token_folder(table_dir, tmp_path):
    table = read_table(table_dir)
    corpus, tokens = tmp_path / "corpus", tmp_path / "tokens"
    corpus.mkdir()
    (corpus / "corpus.json").write_text(json.dumps({"sample_rate": 16000}))
    with open(corpus / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_FIELDS)
        for u in table.utterances:
            writer.writerow([u.id, u.voice, u.sentence, u.text, f"wav/{u.id}.wav", 1.0, u.split])
    write_token_info(tokens, TokenInfo(50.0, table.meta["n_q"], table.meta["codebook_size"], "synthetic"))
    for u in table.utterances:
        write_tokens(tokens, u.id, u.codes.numpy())
    return table, corpus, tokens


def test_codec_tokens_folder_reads_as_its_table(table_dir, tmp_path):
    table, corpus, tokens = _as_token_folder(table_dir, tmp_path)
    dm = LinaSpeechDataModule(source="tokens", root=str(tokens), corpus_root=str(corpus))
    dm.setup("fit")
    read = dm.table.utterances
    assert [(u.id, u.voice, u.split) for u in read] == [(u.id, u.voice, u.split) for u in table.utterances]
    assert all(torch.equal(a.codes, b.codes) for a, b in zip(read, table.utterances))
    assert read[0].text_ids.tolist() == CharTokenizer().encode(read[0].text)
    assert dm.model_kwargs()["n_q"] == table.meta["n_q"]

    with pytest.raises(ConfigError, match="corpus_root"):
        LinaSpeechDataModule(source="tokens", root=str(tokens)).setup("fit")
    (tokens / f"{table.utterances[0].id}.npz").unlink()
    with pytest.raises(DatasetError, match="token file not found"):
        LinaSpeechDataModule(source="tokens", root=str(tokens), corpus_root=str(corpus)).setup("fit")
