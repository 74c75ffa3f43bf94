"""Lina-Speech's data: a token table (text ids + codec codes per utterance, see table.py) in batches.

Sources: `source=embedded` (default) builds, once each, into `data_dir`: the synthetic speech corpus (espeak-ng
and flite voices reading fortunes; `common.audio.speech`), the codec trained on its training split
(`common.audio.codec_train`), and the token table of every utterance encoded by that codec (see `embedded.py`).
`source=tokens` reads a token table at `root` made with another codec (the `model.codec=` route of the
issue: any codec whose codes are [frames, n_q] integers), or a `common.audio.codec_tokens` folder (tokens.json
and an npz per utterance) with `corpus_root`, the speech corpus it encodes (texts, voices, splits).

Training batches hold utterances of similar lengths (`buckets.py`), evaluation batches go in length order.
Batches are dicts: `text [B, S]` (0-padded ids), `audio_in [B, D, n_q]` and `target [B, D, n_q]` (the delay
pattern of tokens.py, D = longest + n_q; inputs padded with PAD, targets with BOS = ignored).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from apps.lina_speech.buckets import LengthBuckets
from apps.lina_speech.table import SPLITS, TokenTable, Utterance, read_table, read_token_folder, use_phonemes
from apps.lina_speech.tokens import BOS, NUM_SPECIALS, collate_codes, pad_batch
from common.audio.codec_tokens import INFO
from common.audio.phonemes import TEXT_UNITS
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.errors import ConfigError, DatasetError, check_choice, check_range

SOURCES = ("embedded", "tokens")


def collate(utterances: list[Utterance]) -> dict[str, torch.Tensor]:
    audio_in, target = collate_codes([u.codes for u in utterances])
    return {"text": pad_batch([u.text_ids for u in utterances], 0), "audio_in": audio_in, "target": target}


class LinaSpeechDataModule(DataCardMixin, SplitDataLoaders, L.LightningDataModule):
    """Token-table batches for the language model, and the held-out voices for initial-state tuning.

    Args:
        source: "embedded" or "tokens" (a token table folder at `root`, or a codec_tokens folder there).
        corpus_root: with a codec_tokens folder at `root`: the speech corpus (manifest.csv) it encodes.
        data_dir: where the embedded corpus, codec and tokens are built once.
        corpus, codec: options of the embedded corpus and codec builders (embedded.py).
        codec_corpus: options of another corpus to train the codec on (None: this corpus); `{}` keeps the
            default corpus's codec for a larger corpus (embedded.py).
        max_frames: longer utterances are left out of every split (the paper crops at its context length).
        text_units: "chars" (the table's own text ids) or "phonemes" (espeak-ng's, cached beside the table:
            `table.use_phonemes`).
        batch_size, num_workers: the loaders'.
    """

    DATASETS = {"espeak_fortunes": "espeak_fortunes_speech", "codec_tokens": "lina_token_table"}

    def __init__(
        self,
        source: str = "embedded",
        root: str | None = None,
        corpus_root: str | None = None,
        data_dir: str = "data/lina_speech",
        corpus: dict | None = None,
        codec: dict | None = None,
        codec_corpus: dict | None = None,
        max_frames: int = 600,
        text_units: str = "chars",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__()
        check_choice("source", source, SOURCES)
        check_choice("text_units", text_units, TEXT_UNITS)
        check_range("max_frames", max_frames, 1)
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        if source == "tokens" and not root:
            raise ConfigError("root", root, "the token table folder when source=tokens")
        self.source, self.root, self.corpus_root, self.data_dir = source, root, corpus_root, Path(data_dir)
        self.corpus_options, self.codec_options = dict(corpus or {}), dict(codec or {})
        self.codec_corpus = None if codec_corpus is None else dict(codec_corpus)
        self.text_units = text_units
        self.max_frames, self.batch_size, self.num_workers = int(max_frames), int(batch_size), int(num_workers)
        self.table: TokenTable | None = None

    @property
    def dataset_name(self) -> str:
        return "espeak_fortunes" if self.source == "embedded" else "codec_tokens"

    def table_dir(self) -> Path:
        if self.source == "tokens":
            return Path(self.root)
        return self._embedded()["tokens"]

    def codec_dir(self) -> Path | None:
        """The embedded codec's folder (None for a user's token table: its codec is the user's)."""
        if self.source == "tokens":
            return None
        return self._embedded()["codec"]

    def _embedded(self) -> dict[str, Path]:
        from apps.lina_speech.embedded import build_embedded  # the audio stack, only for the embedded corpus

        return build_embedded(self.data_dir, self.corpus_options, self.codec_options, self.codec_corpus)

    def prepare_data(self) -> None:
        self.table_dir()

    def setup(self, stage: str | None = None) -> None:
        if self.table is not None:
            return
        folder = self.table_dir()
        if (folder / INFO).is_file():  # a common.audio.codec_tokens folder: texts and splits from its corpus
            if not self.corpus_root:
                raise ConfigError("data.corpus_root", None, f"the speech corpus (manifest.csv) that {folder} encodes")
            table = read_token_folder(folder, Path(self.corpus_root))
        else:
            table = read_table(folder, card=self.card)
        table.utterances = [u for u in table.utterances if 0 < u.codes.shape[0] <= self.max_frames]
        if self.text_units == "phonemes":
            use_phonemes(table, folder, self.card)
        for split in ("train", "val"):
            if not table.split(split):
                raise DatasetError(
                    self.table_dir(), f"utterances of at most {self.max_frames} frames in split {split!r}", self.card
                )
        self.table = table

    def _ready(self) -> TokenTable:
        if self.table is None:
            raise RuntimeError("LinaSpeechDataModule.setup() has not been called")
        return self.table

    # ---- what the model and module need ------------------------------------------------------------
    def model_kwargs(self) -> dict:
        meta = self._ready().meta
        kwargs = {k: meta[k] for k in ("n_q", "codebook_size", "text_vocab")} | {"codec_dir": None, "codec": None}
        kwargs["text_units"] = self.text_units
        kwargs["frames_per_token"] = self.frames_per_token()
        codec = self.codec_dir()
        if codec is not None:  # the embedded codec: the model carries its weights (see LinaSpeech's `codec`)
            from common.audio.codec_train import codec_config  # the audio stack, only for the embedded corpus

            kwargs |= {"codec_dir": str(codec), "codec": codec_config(codec)}
        return kwargs

    def frames_per_token(self) -> list[float]:
        """The 1st and 99th percentiles of frames per text token over the training utterances: the length
        window of generation (`LinaSpeech.frames_per_token`)."""
        rates = torch.tensor([u.codes.shape[0] / len(u.text_ids) for u in self._ready().split("train")])
        return [round(float(r), 3) for r in rates.quantile(torch.tensor([0.01, 0.99], dtype=rates.dtype))]

    def unigram_counts(self) -> torch.Tensor:
        """Counts [n_q, vocab] of the training targets (ignored ones left out): the unigram baseline."""
        meta = self._ready().meta
        counts = torch.zeros(meta["n_q"], meta["codebook_size"] + NUM_SPECIALS)
        train = self._ready().split("train")
        for i in range(0, len(train), 256):  # in batches: padded targets are BOS, ignored like the others
            target = collate_codes([u.codes for u in train[i : i + 256]])[1]  # [B, D, n_q]
            for q in range(meta["n_q"]):
                t = target[..., q]
                counts[q] += torch.bincount(t[t != BOS], minlength=counts.shape[1]).float()
        return counts

    def utterances(self, split: str, voice: str | None = None) -> list[Utterance]:
        check_choice("split", split, SPLITS)
        return self._ready().split(split, voice)

    def loader(self, utterances: list[Utterance], shuffle: bool, batch_size: int | None = None) -> DataLoader:
        """Batches of similar lengths (less padding): shuffled in `LengthBuckets` order, else sorted by length."""
        batch_size = batch_size or self.batch_size
        if shuffle:
            world = self.trainer.world_size if self.trainer is not None else 1
            lengths = [u.codes.shape[0] for u in utterances]
            sampler = LengthBuckets(lengths, batch_size, world, seed=torch.initial_seed() % 2**62)
        else:
            utterances, sampler = sorted(utterances, key=lambda u: u.codes.shape[0]), None
        return DataLoader(
            utterances, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=self.num_workers
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return self.loader(self.utterances(split), shuffle)
