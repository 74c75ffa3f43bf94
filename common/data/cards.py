"""Data cards: one markdown file per dataset under `data_cards/`, YAML front matter plus sections.

Front matter fields (all required): name, kind (embedded | real), source, citation, license, size,
splits, used_by. Body sections (all required, as `## ` headings): Layout, Obtain, Caveats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"
REQUIRED_FIELDS = ("name", "kind", "source", "citation", "license", "size", "splits", "used_by")
REQUIRED_SECTIONS = ("Layout", "Obtain", "Caveats")
KINDS = ("embedded", "real")


class CardError(ValueError):
    """A data card that is missing or lacks a required field or section."""


@dataclass(frozen=True)
class DataCard:
    path: Path
    fields: dict
    sections: dict[str, str]

    @property
    def name(self) -> str:
        return self.fields["name"]


class DataCardMixin:
    """For a data module: `card`, the data card of the dataset in use, looked up as `DATASETS[dataset_name]`
    (the class's dataset -> card table and its `dataset_name`, both part of the app contract)."""

    DATASETS: dict[str, str]
    dataset_name: str

    @property
    def card(self) -> str:
        return self.DATASETS[self.dataset_name]


def load_card(name: str, cards_dir: Path = CARDS_DIR) -> DataCard:
    """Read and validate `data_cards/<name>.md`; raise CardError naming the file and what is missing."""
    path = cards_dir / f"{name}.md"
    if not path.is_file():
        raise CardError(f"data card {path} does not exist")
    text = path.read_text()
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise CardError(f"{path}: expected YAML front matter between '---' lines at the top")
    head, body = text[4:].split("\n---\n", 1)
    fields = yaml.safe_load(head) or {}
    missing = [f for f in REQUIRED_FIELDS if f not in fields or fields[f] in (None, "", [])]
    if missing:
        raise CardError(f"{path}: front matter lacks {missing}")
    if fields["kind"] not in KINDS:
        raise CardError(f"{path}: kind={fields['kind']!r}, expected one of {KINDS}")
    sections, current = {}, None
    for line in body.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    missing = [s for s in REQUIRED_SECTIONS if not sections.get(s, "").strip()]
    if missing:
        raise CardError(f"{path}: sections missing or empty: {missing} (as '## <name>' headings)")
    return DataCard(path=path, fields=fields, sections=sections)
