import numpy as np
import pytest
import torch

from common.audio.codec import Codec
from common.audio.codec_tokens import TokenInfo, encode_corpus, read_token_info, read_tokens, write_token_info
from common.audio.speech import read_manifest
from common.errors import DatasetError
from tests.common.audio.test_speech import corpus  # noqa: F401 (the shared tiny corpus fixture)


def test_every_utterance_gets_its_tokens(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    codec = Codec(channels=32, dim=8, n_q=2, codebook_size=16).eval()
    info = encode_corpus(codec, corpus, tmp_path)
    assert read_token_info(tmp_path) == info and (info.n_q, info.codebook_size, info.frame_rate) == (2, 16, 40.0)
    for u in read_manifest(corpus):
        codes = read_tokens(tmp_path, u.id, info)
        assert codes.dtype == np.int64 and codes.shape == (codec.frames_of(round(u.seconds * 16000)), 2)


@pytest.mark.parametrize(
    ("codes", "problem"),
    [
        (np.zeros((5, 3), np.int16), "shape"),
        (np.full((5, 2), 16, np.int16), "codebook_size is 16"),
        (np.zeros((5, 2), np.float32), "dtype"),
        (None, "no array named 'codes'"),
    ],
)
def test_bad_token_files_are_named(tmp_path, codes, problem):
    info = TokenInfo(40.0, 2, 16, "test")
    write_token_info(tmp_path, info)
    arrays = {"other": np.zeros(3)} if codes is None else {"codes": codes}
    np.savez(tmp_path / "u1.npz", **arrays)
    with pytest.raises(DatasetError, match=problem) as error:
        read_tokens(tmp_path, "u1", info)
    assert "lina_codec" in str(error.value) and "u1.npz" in str(error.value)
    with pytest.raises(DatasetError, match="token file not found"):
        read_tokens(tmp_path, "u2", info)


def test_bad_token_info_is_named(tmp_path):
    with pytest.raises(DatasetError, match="no tokens.json"):
        read_token_info(tmp_path)
    (tmp_path / "tokens.json").write_text('{"frame_rate": 40, "n_q": 0, "codebook_size": 16}')
    with pytest.raises(DatasetError, match="bad values"):
        read_token_info(tmp_path)
