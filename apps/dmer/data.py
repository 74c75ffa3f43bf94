"""DMER data: a rated corpus (embedded music21 renderings, DEAM or PMEmo) as log-mel windows per 2 Hz step.

A piece is `windows` [T, W, n_mels (+ 12)] (the 5 s log-mel window centred on each label step, with `chroma`
its 12 CQT chroma bins after the mel bands), `clip` [F, n_mels]
(the log-mel of the labelled span, for the clip encoder; or its precomputed embedding [G] with
`global_features`) and `target` [T, 2] (arousal, valence). Log-mels and chroma are computed once per corpus
with common.audio.features and cached under `data_dir`.

Training batches are pieces with their consensus curves, or with `maml=true` lists of per-annotator tasks:
`support` (one piece the annotator rated) and `query` (up to `query_size` other pieces they rated), each a
(windows, clip, target) triple with the annotator's own ratings. Val and test are consensus pieces; the
held-out annotators' tasks (`annotator_tasks("test")`) score personalisation; the training annotators' tasks on
the val pieces (`annotator_tasks("val")`) are where its settings are chosen.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from apps.dmer.corpus import SPLITS, Corpus, read_embedded
from apps.dmer.embedded import STEP_RATE, build_embedded
from apps.dmer.real import read_deam, read_pmemo
from common.audio.features import FLOOR_DB, chroma, log_mel, step_windows
from common.audio.io import load_audio
from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.errors import DatasetError, check_choice, check_range

SOURCES = {"embedded": "music21_rendered", "deam": "deam", "pmemo": "pmemo"}


def compute_mels(corpus: Corpus, out: Path, sample_rate: int, n_mels: int, hop: float, n_fft: int, card: str) -> None:
    mels = {
        f"p{i}": log_mel(load_audio(path, sample_rate, card=card), sample_rate, n_mels, hop, n_fft=n_fft).astype(
            np.float16
        )
        for i, path in enumerate(corpus.audio)
    }
    np.savez(out / "mels.npz", **mels)


def compute_chroma(corpus: Corpus, out: Path, sample_rate: int, hop: float, card: str) -> None:
    frames = {
        f"p{i}": chroma(load_audio(path, sample_rate, card=card), sample_rate, hop).astype(np.float16)
        for i, path in enumerate(corpus.audio)
    }
    np.savez(out / "chroma.npz", **frames)


def step_inputs(mel: np.ndarray, pitch: np.ndarray | None, times: np.ndarray, hop: float, window_seconds: float):
    """[T, W, n_mels (+ 12)] the log-mel windows of each step, with the chroma windows appended to the bands."""
    windows = step_windows(mel, times, hop, window_seconds)
    if pitch is None:
        return windows
    return np.concatenate([windows, step_windows(pitch, times, hop, window_seconds, pad=0.0)], axis=-1)


def clip_input(mel: np.ndarray, start: float, frames: int, hop: float) -> np.ndarray:
    """[frames, n_mels] of `mel` from `start` seconds, silence (FLOOR_DB) beyond its ends."""
    first = round(start / hop)
    index = np.arange(first, first + frames)
    inside = (index >= 0) & (index < len(mel))
    out = np.full((frames, mel.shape[1]), FLOOR_DB, dtype=np.float32)
    out[inside] = mel[index[inside]]
    return out


class Pieces:
    """Model inputs of every piece of a corpus, built on demand from the cached log-mels."""

    def __init__(self, mels, times, hop, window_seconds, clip_frames, embeddings=None, chromas=None):
        self.mels, self.times, self.hop, self.window_seconds = mels, times, hop, window_seconds
        self.clip_frames, self.embeddings, self.chromas = clip_frames, embeddings, chromas

    def inputs(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.mels[i].astype(np.float32)
        pitch = None if self.chromas is None else self.chromas[i].astype(np.float32)
        windows = step_inputs(mel, pitch, self.times[i], self.hop, self.window_seconds)
        if self.embeddings is not None:
            return torch.from_numpy(windows), torch.from_numpy(self.embeddings[i])
        start = self.times[i, 0] - 0.5 / STEP_RATE
        return torch.from_numpy(windows), torch.from_numpy(clip_input(mel, start, self.clip_frames, self.hop))

    def batch(self, items: list[tuple[int, np.ndarray]]) -> tuple[torch.Tensor, ...]:
        """(windows, clip, target) stacked for (piece, curve [T, 2]) pairs."""
        windows, clips = zip(*(self.inputs(i) for i, _ in items))
        return torch.stack(windows), torch.stack(clips), torch.from_numpy(np.stack([c for _, c in items]))


class PieceDataset(Dataset):
    def __init__(self, pieces: Pieces, indices: list[int], targets: np.ndarray):
        self.pieces, self.indices, self.targets = pieces, indices, targets

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        return (*self.pieces.inputs(i), torch.from_numpy(self.targets[i]))


class TaskDataset(Dataset):
    """`length` random per-annotator tasks: one support piece and up to `query_size` query pieces, all rated by
    the same annotator. Draws come from torch's generator (seeded by the run)."""

    def __init__(self, pieces: Pieces, tasks: dict[str, list], query_size: int, length: int):
        self.pieces, self.query_size, self.length = pieces, query_size, length
        self.tasks = [rated for rated in tasks.values() if len(rated) >= 2]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict:
        rated = self.tasks[int(torch.randint(len(self.tasks), ()))]
        order = torch.randperm(len(rated)).tolist()
        query = [rated[j] for j in order[1 : 1 + self.query_size]]
        return {"support": self.pieces.batch([rated[order[0]]]), "query": self.pieces.batch(query)}


class DMERDataModule(SplitDataLoaders, DataCardMixin, L.LightningDataModule):
    """Args:
    source: embedded (music21_rendered) | deam | pmemo; root: the real dataset's folder.
    data_dir: where the embedded set and the log-mel caches are built.
    steps: label steps per piece (2 Hz; 60 = 30 s, DEAM's; PMEmo's official setting is 20).
    sample_rate, n_mels, n_fft, hop_seconds, window_seconds: the log-mel features.
    chroma: append 12 CQT chroma bins to every frame (the pitch classes that mode, hence valence, is read from).
    batch_size, num_workers: loaders. maml, meta_batch, query_size, tasks_per_epoch: per-annotator tasks.
    global_features: a folder of <piece id>.npy clip embeddings (the model's `global_features`).
    val_fraction, test_fraction, seed: the real datasets' piece split. num_pieces, num_val, num_test,
    num_annotators, test_annotators, raters_per_piece: the embedded set's size (seed: its seed too).
    """

    DATASETS = {name: name for name in SOURCES.values()}  # dataset -> data card

    def __init__(
        self,
        source: str = "embedded",
        root: str | None = None,
        data_dir: str = "data/dmer",
        steps: int = 60,
        sample_rate: int = 22050,
        n_mels: int = 128,
        n_fft: int = 4096,
        hop_seconds: float = 0.1,
        window_seconds: float = 5.0,
        chroma: bool = True,
        batch_size: int = 16,
        num_workers: int = 0,
        maml: bool = False,
        meta_batch: int = 4,
        query_size: int = 4,
        tasks_per_epoch: int = 64,
        global_features: str | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        num_pieces: int = 150,
        num_val: int = 16,
        num_test: int = 20,
        num_annotators: int = 30,
        test_annotators: int = 6,
        raters_per_piece: int = 5,
        show_progress: bool = True,
    ):
        super().__init__()
        check_choice("source", source, SOURCES)
        check_range("steps", steps, 4)
        check_range("batch_size", batch_size, 1)
        if source != "embedded" and not root:
            raise DatasetError(Path(str(root)), f"data.root: the {source} folder", SOURCES[source], "data.root not set")
        self.source, self.root, self.data_dir = source, Path(root) if root else None, Path(data_dir)
        self.steps, self.sample_rate, self.n_mels, self.n_fft = steps, sample_rate, n_mels, n_fft
        self.hop, self.window_seconds, self.chroma = hop_seconds, window_seconds, chroma
        self.batch_size, self.num_workers = batch_size, num_workers
        self.maml, self.meta_batch, self.query_size, self.tasks_per_epoch = (
            maml,
            meta_batch,
            query_size,
            tasks_per_epoch,
        )
        self.global_features = global_features
        self.split_args = (val_fraction, test_fraction, seed)
        self.embedded_args = dict(
            num_pieces=num_pieces,
            num_val=num_val,
            num_test=num_test,
            num_annotators=num_annotators,
            test_annotators=test_annotators,
            raters_per_piece=raters_per_piece,
            seed=seed,
        )
        self.show_progress = show_progress
        self.corpus: Corpus | None = None

    @property
    def dataset_name(self) -> str:
        return SOURCES[self.source]

    @property
    def clip_frames(self) -> int:
        return round(self.steps / STEP_RATE / self.hop)

    @property
    def window_frames(self) -> int:
        return 2 * round(self.window_seconds / self.hop / 2) + 1

    def _corpus_folder(self) -> Path:
        if self.source == "embedded":
            a = self.embedded_args
            settings = json.dumps(a | {"steps": self.steps, "sample_rate": self.sample_rate}, sort_keys=True)
            name = f"music21_rendered-v1-p{a['num_pieces']}-{hashlib.sha1(settings.encode()).hexdigest()[:8]}"
            seconds = self.steps / STEP_RATE
            return build_once(
                self.data_dir / name,
                lambda tmp: build_embedded(
                    tmp, seconds=seconds, sample_rate=self.sample_rate, show_progress=self.show_progress, **a
                ),
            )
        return self.root

    def _read(self) -> tuple[Corpus, Path]:
        folder = self._corpus_folder()
        if self.source == "embedded":
            return read_embedded(folder), folder
        reader = read_deam if self.source == "deam" else read_pmemo
        corpus = reader(self.root, self.steps, *self.split_args)
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        return corpus, self.data_dir / f"{self.source}-{digest}-t{self.steps}"

    def prepare_data(self) -> None:
        self._features()

    def _features(self) -> tuple[Corpus, list[np.ndarray], list[np.ndarray] | None]:
        """The corpus, its log-mels and (with `chroma`) its chroma, each built once into its own cache."""
        corpus, folder = self._read()
        card = self.card

        def cached(name: str, build, file: str) -> list[np.ndarray]:
            cache = build_once(folder / name if self.source == "embedded" else Path(f"{folder}-{name}"), build)
            with np.load(cache / file, allow_pickle=False) as f:
                return [f[f"p{i}"] for i in range(len(corpus.ids))]

        mels = cached(
            f"mel{self.n_mels}-fft{self.n_fft}-hop{self.hop}-sr{self.sample_rate}",
            lambda tmp: compute_mels(corpus, tmp, self.sample_rate, self.n_mels, self.hop, self.n_fft, card),
            "mels.npz",
        )
        if not self.chroma:
            return corpus, mels, None
        chromas = cached(
            f"chroma-hop{self.hop}-sr{self.sample_rate}",
            lambda tmp: compute_chroma(corpus, tmp, self.sample_rate, self.hop, card),
            "chroma.npz",
        )
        return corpus, mels, chromas

    def _embeddings(self, corpus: Corpus) -> np.ndarray | None:
        if not self.global_features:
            return None
        folder = Path(self.global_features)
        out = []
        for piece in corpus.ids:
            path = folder / f"{piece}.npy"
            expected = "one 1-D float .npy clip embedding per piece, named <piece id>.npy"
            try:
                out.append(np.load(path, allow_pickle=False).astype(np.float32).reshape(-1))
            except (OSError, ValueError) as e:
                raise DatasetError(path, expected, self.card, str(e)) from e
        if len({len(e) for e in out}) != 1:
            raise DatasetError(folder, "embeddings of one width", self.card, f"widths {sorted({len(e) for e in out})}")
        return np.stack(out)

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is not None:
            return
        self.corpus, mels, chromas = self._features()
        for split in SPLITS:
            if not self.corpus.indices(split):
                raise DatasetError(self.root or self.data_dir, f"pieces in the {split} split", self.card, "none")
        self.embeddings = self._embeddings(self.corpus)
        self.pieces = Pieces(
            mels, self.corpus.times, self.hop, self.window_seconds, self.clip_frames, self.embeddings, chromas
        )

    def model_kwargs(self) -> dict:
        kwargs = {
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "chroma": self.chroma,
            "window_frames": self.window_frames,
            "clip_frames": self.clip_frames,
            "steps": self.steps,
            "hop_seconds": self.hop,
            "sample_rate": self.sample_rate,
        }
        kwargs["global_dim"] = int(self.embeddings.shape[1]) if self.embeddings is not None else None
        return kwargs

    def step_mean(self) -> np.ndarray:
        """[T, 2] the per-step mean of the training consensus curves: the trivial baseline's prediction."""
        return self.corpus.consensus[self.corpus.indices("train")].mean(0)

    def annotator_tasks(self, split: str) -> dict[str, list[tuple[int, np.ndarray]]]:
        """annotator -> [(piece, rating)] on the pieces of `split`: the held-out annotators' for test, the training
        annotators' for train and val (val: pieces the model never trained on, for choosing adaptation settings)."""
        return self.corpus.annotator_tasks("test" if split == "test" else "train", split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split == "train" and self.maml:
            tasks = TaskDataset(self.pieces, self.annotator_tasks("train"), self.query_size, self.tasks_per_epoch)
            if not tasks.tasks:
                raise DatasetError(self.root or self.data_dir, "annotators with two or more rated pieces", self.card)
            return DataLoader(tasks, batch_size=self.meta_batch, collate_fn=list, num_workers=self.num_workers)
        dataset = PieceDataset(self.pieces, self.corpus.indices(split), self.corpus.consensus)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)
