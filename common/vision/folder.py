"""An ImageNet-style image folder: one sub-folder per class, for the train and the test split.

    root/train/<class>/*.{png,jpg,jpeg,bmp,webp}
    root/val/<class>/...    (or root/test/<class>/...: the test split)
Class names are the train sub-folder names, sorted; the test split must use the same names.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import DatasetError

CARD = "image_folder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TEST_NAMES = ("val", "test")


def list_split(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of one split folder; `classes` fixes the names (test split)."""
    expected = "one sub-folder per class holding image files " + "/".join(EXTENSIONS)
    if not folder.is_dir():
        raise DatasetError(folder, expected, CARD)
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    if not classes:
        raise DatasetError(folder, expected, CARD, problem="no class sub-folders")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(folder, expected, CARD, problem=f"classes absent from the train split: {unknown[:5]}")
    files, labels = [], []
    for label, name in enumerate(classes):
        sub = folder / name
        images = sorted(p for p in sub.rglob("*") if p.suffix.lower() in EXTENSIONS) if sub.is_dir() else []
        files += images
        labels += [label] * len(images)
    if not files:
        raise DatasetError(folder, expected, CARD, problem="no image files")
    return files, labels, classes


def read_folder(root: str | Path) -> dict:
    """{"train": (files, labels), "test": (files, labels), "classes": names} of an image-folder tree."""
    root = Path(root)
    if not (root / "train").is_dir():
        raise DatasetError(root / "train", "root/train/<class>/<images> and root/val/<class>/<images>", CARD)
    train_files, train_labels, classes = list_split(root / "train")
    test_dir = next((root / n for n in TEST_NAMES if (root / n).is_dir()), root / TEST_NAMES[0])
    test_files, test_labels, _ = list_split(test_dir, classes)
    return {"train": (train_files, train_labels), "test": (test_files, test_labels), "classes": classes}
