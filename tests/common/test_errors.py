from __future__ import annotations

import pytest

from common.errors import ConfigError, DatasetError, check_choice, check_range


def test_check_range_names_key_and_range():
    check_range("tau", 0.5, 0, None, low_inclusive=False)
    with pytest.raises(ConfigError, match=r"tau=0: .*\(0, inf\]"):
        check_range("tau", 0, 0, None, low_inclusive=False)
    with pytest.raises(ConfigError, match="a number"):
        check_range("alpha", "x", 0, 1)
    with pytest.raises(ConfigError):
        check_range("flag", True, 0, 1)  # bools are not numbers here


def test_check_choice_and_section_prefix():
    with pytest.raises(ConfigError) as info:
        check_choice("variant", "nope", ["scgc", "scgc_star"])
    err = info.value.within("model")
    assert err.key == "model.variant" and "['scgc', 'scgc_star']" in str(err)


def test_dataset_error_names_path_expectation_and_card(tmp_path):
    err = DatasetError(tmp_path / "x.txt", "whitespace-separated floats", "sdcn", problem="malformed features")
    text = str(err)
    assert "x.txt" in text and "whitespace-separated floats" in text and "data_cards/sdcn.md" in text
