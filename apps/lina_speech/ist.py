"""Initial-State Tuning (IST): a new voice as low-rank initial states of every GLA layer, the model frozen.

Lina-Speech's `initial_state.py`: per GLA layer, S_0 = scale * sum_r k_r v_r^T per head, with k ~ N(0, 1)
[1, r, H, K, 1] and v ~ 0.02 N(0, 1) [1, r, H, 1, V] (scale 0.02), trained with Adam (lr 0.1, batch 2,
gradient accumulation 4) on a few minutes of the target voice while every weight of the model stays fixed.
The states then replace the zero state at the start of generation. A voice file is a small safetensors file
(k.i, v.i per layer, rank and scale in its metadata); for the default model, rank 4 is ~20 KB.

    python -m apps.lina_speech.ist --export exports/lina_speech --voice flite:rms --out rms.safetensors

The voice's utterances come from the token table of the model's codec (the embedded one), or `--tokens <folder>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from apps.lina_speech.model import LinaSpeech
from common.errors import ConfigError, InputError, check_range
from common.utils.modes import eval_mode

VOICE_EXPECTED = "a voice file of apps.lina_speech.ist (safetensors with k.i, v.i per GLA layer of this model)"


class VoiceStates(nn.Module):
    """Low-rank initial states, one per GLA layer of a model (in `LinaSpeech.gla_layers()` order)."""

    def __init__(self, shapes: list[tuple[int, int, int]], rank: int = 4, scale: float = 0.02):
        super().__init__()
        check_range("rank", rank, 1)
        self.rank, self.scale = int(rank), float(scale)
        self.k = nn.ParameterList(nn.Parameter(torch.randn(1, rank, h, k, 1)) for h, k, _ in shapes)
        self.v = nn.ParameterList(nn.Parameter(0.02 * torch.randn(1, rank, h, 1, v)) for h, _, v in shapes)

    @classmethod
    def for_model(cls, model: LinaSpeech, rank: int = 4, scale: float = 0.02) -> VoiceStates:
        if model.arch != "gla":
            raise ConfigError("model.arch", model.arch, "gla: initial-state tuning needs the GLA states")
        return cls([layer.state_shape()[1:] for layer in model.gla_layers()], rank, scale)

    def states(self) -> list[torch.Tensor]:
        """The initial states [1, H, K, V], one per GLA layer (a batch of 1 broadcasts over any batch)."""
        return [(k * v).sum(1) * self.scale for k, v in zip(self.k, self.v)]

    def save(self, path: str | Path) -> None:
        tensors = {f"{n}.{i}": p.detach().contiguous() for n in ("k", "v") for i, p in enumerate(getattr(self, n))}
        save_file(tensors, str(path), metadata={"rank": str(self.rank), "scale": str(self.scale)})


def load_voice(path: str | Path, model: LinaSpeech) -> VoiceStates:
    """A voice file for `model`; a missing, unreadable or mismatched file raises InputError."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        voice = VoiceStates.for_model(model, int(meta["rank"]), float(meta["scale"]))
        voice.load_state_dict(tensors)
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as e:
        raise InputError(path, VOICE_EXPECTED, problem=str(e).splitlines()[0][:200]) from None
    return voice.to(next(model.parameters()).device)


def tune_voice(
    model: LinaSpeech,
    batches,
    steps: int = 200,
    rank: int = 4,
    lr: float = 0.1,
    grad_accumulation: int = 4,
    seed: int = 0,
) -> tuple[VoiceStates, list[float]]:
    """Learn a voice's initial states on `batches` (an iterable of data-module batches, cycled) for `steps`
    optimiser steps, the model frozen and in eval mode; returns the states and the loss per step."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    voice = VoiceStates.for_model(model, rank).to(device)
    optimizer = torch.optim.Adam(voice.parameters(), lr=lr)
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    losses, data = [], iter(())
    try:
        with eval_mode(model):
            for _ in range(steps):
                total = 0.0
                for _ in range(grad_accumulation):
                    try:
                        batch = next(data)
                    except StopIteration:
                        data = iter(batches)
                        batch = next(data)
                    text, audio_in, target = (batch[k].to(device) for k in ("text", "audio_in", "target"))
                    logits = model.logits(text, audio_in, states=voice.states())
                    loss = model.loss(logits, target) / grad_accumulation
                    loss.backward()
                    total += loss.item()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(total)
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    return voice, losses


def main(argv: list[str] | None = None) -> None:
    from apps.lina_speech.data import LinaSpeechDataModule
    from apps.lina_speech.embedded import tokens_of
    from common.pipeline.export import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, help="export folder of a trained lina_speech (arch=gla)")
    parser.add_argument("--voice", required=True, help="a held-out voice of the token table (split 'ist_train')")
    parser.add_argument("--out", required=True, help="the voice file to write (.safetensors)")
    parser.add_argument("--tokens", default=None, help="a token table folder (default: the model codec's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    model = load(args.export)
    if not (args.tokens or model.codec_dir):
        raise ConfigError("--tokens", None, "the token table folder (the model was not trained on the embedded one)")
    dm = LinaSpeechDataModule(
        source="tokens", root=str(args.tokens or tokens_of(model.codec_dir)), text_units=model.text_units
    )
    dm.setup("fit")
    utterances = dm.utterances("ist_train", args.voice)
    if not utterances:
        raise ConfigError("--voice", args.voice, f"one of the held-out voices {dm.table.voices('ist_train')}")
    voice, losses = tune_voice(model, dm.loader(utterances, shuffle=True, batch_size=args.batch_size), args.steps)
    voice.save(args.out)
    print(f"{len(utterances)} utterances of {args.voice}: loss {losses[0]:.3f} -> {losses[-1]:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
