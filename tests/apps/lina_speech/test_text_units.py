"""`data.text_units=phonemes`: the table's texts as espeak-ng phonemes, cached beside the table (a GPU machine
without espeak-ng reads them there), and the model told which units its ids are."""

from __future__ import annotations

import json
import shutil

import pytest

from apps.lina_speech import table as table_module
from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.table import PHONEMES
from common.audio.phonemes import PhonemeTokenizer, text_ids
from common.errors import ConfigError, DatasetError


@pytest.fixture
def table_copy(table_dir, tmp_path):
    return shutil.copytree(table_dir, tmp_path / "table")


def phoneme_data(folder) -> LinaSpeechDataModule:
    dm = LinaSpeechDataModule(source="tokens", root=str(folder), text_units="phonemes")
    dm.setup("fit")
    return dm


def test_phoneme_ids_cached_beside_the_table_and_read_back_without_espeak(table_copy, monkeypatch):
    dm = phoneme_data(table_copy)
    kwargs = dm.model_kwargs()
    assert kwargs["text_units"] == "phonemes" and kwargs["text_vocab"] == PhonemeTokenizer().vocab_size
    for u in dm.utterances("train")[:5]:
        assert u.text_ids.tolist() == text_ids(u.text, "phonemes")
    assert (table_copy / PHONEMES).is_file()

    def no_espeak(texts):
        raise AssertionError("phonemized again")

    monkeypatch.setattr(table_module, "phonemize", no_espeak)
    again = phoneme_data(table_copy)
    assert [u.text_ids.tolist() for u in again.table.utterances] == [u.text_ids.tolist() for u in dm.table.utterances]


@pytest.mark.parametrize("content", ["{not json", '["a list"]', "a text's phonemes with a non-ASCII letter"])
def test_malformed_phoneme_file_names_itself(table_copy, content):
    if not content.startswith(("{", "[")):
        text = json.loads((table_copy / "table.json").read_text())["utterances"][0]["text"]
        content = json.dumps({text: "caf\u00e9"})
    (table_copy / PHONEMES).write_text(content)
    with pytest.raises(DatasetError, match=PHONEMES):
        phoneme_data(table_copy)


def test_unknown_units_are_a_config_error():
    with pytest.raises(ConfigError, match="text_units"):
        LinaSpeechDataModule(source="tokens", root="x", text_units="bpe")
