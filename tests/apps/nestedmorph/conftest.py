"""The embedded brains on 32^3 cubes, built once per test session and shared by the data, learning and CLI tests."""

from __future__ import annotations

import pytest

from apps.nestedmorph.data import NestedMorphDataModule


@pytest.fixture(scope="session")
def cubes_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("nestedmorph_data")
    NestedMorphDataModule(data_dir=str(data_dir), size=32).prepare_data()
    return data_dir
