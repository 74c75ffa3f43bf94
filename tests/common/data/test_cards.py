"""Every dataset an app can read names a data card that exists and has every required field."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class

from common.data.cards import CARDS_DIR, REQUIRED_FIELDS, CardError, load_card
from common.pipeline.runs import REPO_ROOT, known_apps, register_resolvers
from common.pipeline.safety import safe_instantiate

register_resolvers()

GOOD = """---
name: toy
kind: embedded
source: generated
citation: none
license: CC0
size: 10 rows
splits: all
used_by: [scgc]
---
## Layout
x
## Obtain
y
## Caveats
z
"""


@pytest.mark.parametrize("app", known_apps())
def test_app_datasets_have_complete_cards(app, tmp_path):
    # composed, not loaded: an app yaml may take its data block from a shared group (configs/vision/)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs")):
        cfg = compose(config_name="train", overrides=[f"app={app}", f"paths.root_dir={tmp_path}"])
    datasets = get_class(cfg.data._target_).DATASETS
    default = safe_instantiate(cfg.data, section="data").dataset_name  # no disk access before prepare_data()
    assert default in datasets, f"default dataset {default} lacks a card entry"
    for card_name in set(datasets.values()):
        card = load_card(card_name)
        assert app in card.fields["used_by"], f"{card.path} does not list {app} in used_by"


def test_every_card_in_the_folder_is_valid():
    for path in CARDS_DIR.glob("*.md"):
        load_card(path.stem)


def test_card_validator_names_what_is_missing(tmp_path):
    (tmp_path / "toy.md").write_text(GOOD)
    assert load_card("toy", tmp_path).name == "toy"
    (tmp_path / "nofield.md").write_text(GOOD.replace("license: CC0\n", ""))
    with pytest.raises(CardError, match="license"):
        load_card("nofield", tmp_path)
    (tmp_path / "nosection.md").write_text(GOOD.replace("## Caveats\nz\n", ""))
    with pytest.raises(CardError, match="Caveats"):
        load_card("nosection", tmp_path)
    with pytest.raises(CardError, match="does not exist"):
        load_card("absent", tmp_path)
    assert "used_by" in REQUIRED_FIELDS
