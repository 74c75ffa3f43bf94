"""Fuzz pass over every reader and predictor (issue 20): broken files end in a result or a named error.

Each target writes a small valid input into a folder, breaks one of its files (tests/fuzz/mutations.py: random
bytes, truncations, byte flips, other formats, empty and one-row files, bad cells and JSON types; seeded) and reads
it the way the project does: a predictor with a small untrained model, a data module's `setup` and every item.
The property: the case ends either in a result whose files are valid (strict JSON, no NaN or inf cell, PNGs that
open) or in the target's error type (`InputError` for predict, `DatasetError` for training data) whose message
names the broken file or another file of the case; never another exception, never a hang (pytest-timeout).
Run: `pytest -m slow tests/fuzz -p no:randomly -s` (the outcome counts per target are printed at the end).
"""

from __future__ import annotations

import csv
import functools
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from common.errors import DatasetError, InputError
from tests.fuzz.mutations import mutations

OUTCOMES: dict[str, Counter] = defaultdict(Counter)


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # what mutations() adds: "binary", "table" or "json"
    error: type
    build: Callable[[Path], Path]  # writes a valid input into the folder; returns the file to break
    read: Callable[[Path, Path, Path], object]  # (folder, broken file, out dir): what the project does with it
    blank_cells: frozenset = field(default_factory=frozenset)  # (file, column) an output may leave empty


# ---- small untrained models ---------------------------------------------------------------------------------


@functools.cache
def classifier():
    from common.vision.models import ImageClassifier

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    return ImageClassifier(net, 5, 3, 16, [f"c{i}" for i in range(5)]).eval()


@functools.cache
def detector():
    from apps.focus_detr.model import FocusDETR
    from tests.apps.focus_detr.test_model import SMALL

    torch.manual_seed(0)
    return FocusDETR(3, **SMALL).eval()


@functools.cache
def stockformer():
    from tests.apps.stockformer.test_predict import _model

    torch.manual_seed(0)
    return _model()


@functools.cache
def forecaster():
    from apps.crypto_forecast.model import CryptoForecaster
    from common.timeseries.indicators import add_indicators
    from tests.apps.crypto_forecast.helpers import ohlcv_frame

    names = list(add_indicators(ohlcv_frame(120).set_index("date")).columns)
    torch.manual_seed(0)
    return CryptoForecaster(arch="lstm", num_features=len(names), feature_names=names, close_index=3, lookback=10)


@functools.cache
def clusterer():
    from apps.scgc.model import SCGC

    torch.manual_seed(0)
    return SCGC(5, 3, hidden=(16, 16, 32), n_z=4).eval()


# ---- valid inputs ---------------------------------------------------------------------------------------------


def image(folder: Path, name: str, size=(24, 20), seed=0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def panel_csv(folder: Path) -> Path:
    from common.timeseries.panel import to_long_frame
    from tests.apps.stockformer.conftest import synthetic_panel

    to_long_frame(synthetic_panel(300)).to_csv(folder / "panel.csv", index=False)
    return folder / "panel.csv"


def ohlcv_csv(folder: Path) -> Path:
    from tests.apps.crypto_forecast.helpers import ohlcv_frame, write_csv

    return write_csv(folder / "coin.csv", ohlcv_frame(120))


def sdcn_graph(folder: Path, broken: str) -> Path:
    rng = np.random.default_rng(0)
    np.savetxt(folder / "g.txt", rng.random((12, 5)), fmt="%.6f")
    np.savetxt(folder / "g_label.txt", np.arange(12) % 3, fmt="%d")
    np.savetxt(folder / "g_graph.txt", np.stack([np.arange(12), (np.arange(12) + 1) % 12], 1), fmt="%d")
    return folder / broken


def node_features(folder: Path, suffix: str) -> Path:
    x = np.random.default_rng(0).random((8, 5))
    if suffix == ".csv":
        (folder / "nodes.csv").write_text(
            "node,a,b,c,d,e\n" + "".join(f"n{i}," + ",".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(x))
        )
    else:
        np.savetxt(folder / "nodes.txt", x, fmt="%.6f")
    return folder / f"nodes{suffix}"


def mnist(folder: Path, gz: bool, broken: str) -> Path:
    from tests.common.vision.fakes import write_mnist

    write_mnist(folder, n_train=20, n_test=10, gz=gz)
    return folder / (broken + (".gz" if gz else ""))


def cifar(folder: Path) -> Path:
    from tests.common.vision.fakes import write_cifar10

    write_cifar10(folder, per_batch=4, n_test=4)
    return folder / "cifar-10-batches-py" / "data_batch_1"


def coco(folder: Path, broken: str) -> Path:
    from tests.common.detection.test_coco import write_coco

    write_coco(folder, n_train=6, n_val=3)
    return folder / broken


def image_folder(folder: Path) -> Path:
    for split, n in (("train", 3), ("val", 1)):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i in range(n):
                image(folder / split / c, f"{i}.png", (12, 12), seed=i)
    return folder / "train" / "a" / "0.png"


# ---- what the project does with them --------------------------------------------------------------------------


def every_item(datamodule, splits=("train", "val", "test")) -> None:
    datamodule.prepare_data()
    datamodule.setup("fit")
    for split in splits:
        dataset = datamodule.splits[split]
        for i in range(len(dataset)):
            dataset[i]


def vision_data(folder: Path, dataset: str) -> None:
    from common.vision.data import ImageClassificationDataModule

    every_item(ImageClassificationDataModule(dataset=dataset, root=str(folder), img_size=16, val_fraction=0.25))


def coco_data(folder: Path) -> None:
    from common.detection.coco import COCODetectionDataModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate boxes are counted in a warning
        every_item(COCODetectionDataModule(source="coco", root=str(folder), val_fraction=0.3, eval_size=40, seed=1))


def stock_data(path: Path) -> None:
    from apps.stockformer.data import StockformerDataModule

    dm = StockformerDataModule(
        source="real", root=str(path), window=5, horizon=2, train_days=20, val_days=10, test_days=10
    )
    dm.setup("fit")
    assert torch.isfinite(dm.arrays["returns"]).all() and all(
        torch.isfinite(v).all() for v in dm.train_statistics().values()
    )


def crypto_data(path: Path) -> None:
    from apps.crypto_forecast.data import CryptoDataModule

    dm = CryptoDataModule(root=str(path), lookback=10)
    dm.setup("fit")
    assert all(np.isfinite(w.x).all() and np.isfinite(w.y).all() for w in dm.windows.values())
    assert all(torch.isfinite(v).all() for v in dm.model_kwargs().values() if isinstance(v, torch.Tensor))


def scgc_data(folder: Path) -> None:
    from apps.scgc.data import SCGCDataModule

    dm = SCGCDataModule(dataset="g", source="real", root=str(folder))
    dm.setup("fit")
    assert torch.isfinite(dm.graph.x).all()
    dm.model_kwargs()
    dm.contrastive_target(2, False)


def vision_predict(folder, path, out):
    from common.vision.predict import predict

    return predict(classifier(), path, out, {"spec": classifier().export_spec()})


def detection_predict(folder, path, out):
    from common.detection.predict import predict

    return predict(detector(), path, out, {"spec": {"preprocess": {"eval_size": 64, "max_size": 107}}})


def stock_predict(folder, path, out):
    from apps.stockformer.predict import predict

    return predict(stockformer(), path, out, {})


def crypto_predict(folder, path, out):
    from apps.crypto_forecast.predict import predict

    return predict(forecaster(), path, out, {"spec": forecaster().export_spec()})


def scgc_predict(folder, path, out):
    from apps.scgc.predict import predict

    return predict(clusterer(), path, out, {"spec": clusterer().export_spec()})


TARGETS = [
    Target("vision-predict-png", "binary", InputError, lambda f: image(f, "photo.png"), vision_predict),
    Target("vision-predict-jpg", "binary", InputError, lambda f: image(f, "photo.jpg"), vision_predict),
    Target("detection-predict-png", "binary", InputError, lambda f: image(f, "photo.png", (64, 48)), detection_predict),
    Target("image-folder", "binary", DatasetError, image_folder, lambda f, p, o: vision_data(f, "image_folder")),
    Target(
        "idx-images",
        "binary",
        DatasetError,
        lambda f: mnist(f, False, "train-images-idx3-ubyte"),
        lambda f, p, o: vision_data(f, "mnist"),
    ),
    Target(
        "idx-labels-gz",
        "binary",
        DatasetError,
        lambda f: mnist(f, True, "t10k-labels-idx1-ubyte"),
        lambda f, p, o: vision_data(f, "mnist"),
    ),
    Target("cifar-batch", "binary", DatasetError, cifar, lambda f, p, o: vision_data(f, "cifar10")),
    Target(
        "coco-json",
        "json",
        DatasetError,
        lambda f: coco(f, "annotations/instances_train2017.json"),
        lambda f, p, o: coco_data(f),
    ),
    Target("coco-image", "binary", DatasetError, lambda f: coco(f, "val2017/0.jpg"), lambda f, p, o: coco_data(f)),
    Target("stock-panel-csv", "table", DatasetError, panel_csv, lambda f, p, o: stock_data(p)),
    Target("stockformer-predict", "table", InputError, panel_csv, stock_predict),
    Target("crypto-ohlcv-csv", "table", DatasetError, ohlcv_csv, lambda f, p, o: crypto_data(p)),
    Target("crypto-predict", "table", InputError, ohlcv_csv, crypto_predict, frozenset({("forecasts.csv", "close")})),
    Target("scgc-features", "table", DatasetError, lambda f: sdcn_graph(f, "g.txt"), lambda f, p, o: scgc_data(f)),
    Target("scgc-labels", "table", DatasetError, lambda f: sdcn_graph(f, "g_label.txt"), lambda f, p, o: scgc_data(f)),
    Target("scgc-edges", "table", DatasetError, lambda f: sdcn_graph(f, "g_graph.txt"), lambda f, p, o: scgc_data(f)),
    Target("scgc-predict-csv", "table", InputError, lambda f: node_features(f, ".csv"), scgc_predict),
    Target("scgc-predict-txt", "table", InputError, lambda f: node_features(f, ".txt"), scgc_predict),
]
CASE_IDS = {
    kind: ["valid", *mutations(b"1,2\n3,4\n" if kind != "json" else b'{"a": [{"b": 1}]}', kind, "ids")]
    for kind in ("binary", "table", "json")
}


# ---- the property ---------------------------------------------------------------------------------------------

NON_FINITE = {"nan", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def check_outputs(out: Path, blank_cells: frozenset) -> None:
    """Every file a predictor wrote is valid: strict JSON, CSV cells neither empty nor non-finite (but where
    `blank_cells` allows an empty one), PNGs that decode."""
    for path in sorted(out.rglob("*")):
        if path.suffix == ".json":
            json.loads(path.read_text(), parse_constant=_reject)
        elif path.suffix == ".csv":
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    for column, cell in row.items():
                        if cell == "" and (path.name, column) in blank_cells:
                            continue
                        assert cell.strip().lower() not in NON_FINITE | {""}, f"{path.name}: {column}={cell!r}"
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.verify()


# Found by this pass, to be fixed outside this test's reach: a training CSV shorter than the indicators' warm-up
# ends in a ConfigError naming `indicators`, not the file (CryptoDataModule.load_frame should check the row count
# as apps/crypto_forecast/predict.py does). strict: the mark fails once the case holds.
KNOWN: dict = {}  # (target, case) -> a pytest mark, for a case whose fix is still to come


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "target, case",
    [
        pytest.param(t, c, id=f"{t.name}:{c}", marks=KNOWN.get((t.name, c), ()))
        for t in TARGETS
        for c in CASE_IDS[t.kind]
    ],
)
def test_broken_input_ends_in_a_result_or_a_named_error(target: Target, case: str, tmp_path):
    folder, out = tmp_path / "input", tmp_path / "out"
    folder.mkdir()
    path = target.build(folder)
    if case != "valid":
        path.write_bytes(mutations(path.read_bytes(), target.kind, target.name)[case])
    try:
        target.read(folder, path, out)
    except target.error as err:
        files = [str(p) for p in folder.rglob("*") if p.is_file()]
        assert any(f in str(err) for f in files), f"{type(err).__name__} names no file of the case: {err}"
        OUTCOMES[target.name]["named error"] += 1
        assert case != "valid", f"the valid input was refused: {err}"
        return
    check_outputs(out, target.blank_cells)
    OUTCOMES[target.name]["result"] += 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if OUTCOMES:
        print("\nfuzz outcomes per target (cases that held):")
        for name, counts in OUTCOMES.items():
            print(f"  {name:<24} {counts['result']:>3} results  {counts['named error']:>3} named errors")
