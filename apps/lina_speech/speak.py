"""The judge's speech as codec codes, made wherever the model runs (a GPU with no audio stack, or here).

What `judge.py` scores: held-out test sentences generated from the zero initial state (set `test`; `test_free`:
the same without the length window, stopping only on the stop token or max_frames, the official rule), and a
held-out voice's `ist_test` sentences generated before and after initial-state tuning on its `ist_train`
utterances (sets `ist_untuned`, `ist_tuned`). Needs only the model and its token table: no codec, no corpus,
no ASR, so it runs on the device; the codes come back and are decoded and heard here.

    python -m apps.lina_speech.speak --ckpt runs/lina_speech/latest/checkpoints/best.ckpt \
        --tokens data/lina_speech/tokens-4a6a0c52 --out speech --device cuda

Writes `speech.json` (per set: id, text, voice, frames; the IST voice, steps, seconds, loss first/last; timing;
the test loss with the texts and with one repeated character, `reads_text`)
and `speech.npz` (the codes [frames, n_q] of item i of set s under `s-i`), plus the voice file of the IST.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.ist import tune_voice
from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.tokens import BOS, pad_batch


def load_checkpoint_model(ckpt: str | Path) -> LinaSpeech:
    """The model of a `make train` checkpoint (its stored config checked against the app's, weights only)."""
    from common.pipeline.build import build_model
    from common.pipeline.checkpoint_config import load_run, model_state

    checkpoint, cfg = load_run(Path(ckpt))
    model = build_model(cfg.model, source=str(ckpt))
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def generate_texts(model: LinaSpeech, texts: list[torch.Tensor], voice=None, seed=0, batch_size=32, guard=True):
    """Codes [frames, n_q] (numpy int16) for each text (its ids, as the table holds them: the model's text
    units, so no phonemizer is needed here), generated in batches on the model's device."""
    device, out = next(model.parameters()).device, []
    generator = torch.Generator(device).manual_seed(seed)
    for i in range(0, len(texts), batch_size):
        ids = pad_batch(texts[i : i + batch_size], 0).to(device)
        out += [
            c.cpu().numpy().astype(np.int16) for c in model.generate(ids, voice=voice, generator=generator, guard=guard)
        ]
    return out


@torch.no_grad()
def reads_text(model: LinaSpeech, dm: LinaSpeechDataModule, split: str = "test") -> dict:
    """Teacher-forced loss on `split` with its texts, and with every character replaced by the space (id 3; same
    lengths): equal losses mean a model that ignores the text (README, "Why the GPU model babbles")."""
    device, sums = next(model.parameters()).device, {"loss_text": 0.0, "loss_one_char": 0.0}
    tokens = 0
    for batch in dm.loader(dm.utterances(split), shuffle=False):
        text, audio_in, target = (batch[k].to(device) for k in ("text", "audio_in", "target"))
        kept = int((target != BOS).sum())
        for key, ids in (("loss_text", text), ("loss_one_char", torch.where(text > 0, 3, 0))):
            sums[key] += float(model.loss(model.logits(ids, audio_in).float(), target)) * kept
        tokens += kept
    return {k: v / max(tokens, 1) for k, v in sums.items()}


def speak_sets(model, dm: LinaSpeechDataModule, sentences: int, voice: str, ist_steps: int, seed: int = 0):
    """{set name: [(id, text, voice, codes)]} and the IST record (see the module docstring)."""
    sets, info = {}, reads_text(model, dm)
    ids = {u.text: u.text_ids for u in dm.utterances("test")}
    test = sorted(ids)[:sentences]
    start = time.perf_counter()
    codes = generate_texts(model, [ids[t] for t in test])
    sets["test"] = [(f"test{i}", t, None, c) for i, (t, c) in enumerate(zip(test, codes))]
    info["test_seconds"] = time.perf_counter() - start
    free = generate_texts(model, [ids[t] for t in test], guard=False)
    sets["test_free"] = [(f"test{i}", t, None, c) for i, (t, c) in enumerate(zip(test, free))]
    refs = dm.utterances("ist_test", voice)[:sentences]
    start = time.perf_counter()
    tune = dm.loader(dm.utterances("ist_train", voice), shuffle=True, batch_size=2)
    tuned, losses = tune_voice(model, tune, ist_steps, seed=seed)
    info |= {"voice": voice, "ist_steps": ist_steps, "ist_seconds": time.perf_counter() - start}
    info["ist_loss"] = [losses[0], losses[-1]] if losses else []
    for name, states in (("ist_untuned", None), ("ist_tuned", tuned)):
        codes = generate_texts(model, [u.text_ids for u in refs], states, seed)
        sets[name] = [(u.id, u.text, voice, c) for u, c in zip(refs, codes)]
    return sets, info, tuned


def write_speech(out: Path, sets: dict, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}-{i}": item[3] for name, items in sets.items() for i, item in enumerate(items)}
    np.savez_compressed(out / "speech.npz", **arrays)
    rows = {
        name: [{"id": i, "text": t, "voice": v, "frames": int(c.shape[0])} for i, t, v, c in items]
        for name, items in sets.items()
    }
    (out / "speech.json").write_text(json.dumps({"sets": rows, **info}, indent=1) + "\n")


def read_speech(folder: Path) -> tuple[dict, dict]:
    """(sets {name: [(id, text, voice, codes)]}, info) of a folder written by `write_speech`."""
    info = json.loads((Path(folder) / "speech.json").read_text())
    with np.load(Path(folder) / "speech.npz", allow_pickle=False) as arrays:
        sets = {
            name: [(r["id"], r["text"], r["voice"], arrays[f"{name}-{i}"].astype(np.int64)) for i, r in enumerate(rows)]
            for name, rows in info.pop("sets").items()
        }
    return sets, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None, help="a `make train` checkpoint (or --export)")
    parser.add_argument("--export", default=None, help="an export folder")
    parser.add_argument("--tokens", required=True, help="the model's token table folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--voice", default=None, help="held-out voice for IST (default: the first)")
    parser.add_argument("--ist-steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.ckpt:
        model = load_checkpoint_model(args.ckpt)
    else:
        from common.pipeline.export import load

        model = load(args.export)
    model.to(args.device)
    dm = LinaSpeechDataModule(source="tokens", root=args.tokens, text_units=model.text_units)
    dm.setup("fit")
    model.frames_per_token = model.frames_per_token or tuple(dm.frames_per_token())  # a model trained before it
    voice = args.voice or dm.table.voices("ist_train")[0]
    start = time.perf_counter()
    sets, info, tuned = speak_sets(model, dm, args.sentences, voice, args.ist_steps, args.seed)
    info |= {"seconds": time.perf_counter() - start, "device": args.device, "max_frames": model.max_frames}
    info["frames_per_token"] = model.frames_per_token
    info["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)  # the codec aside
    write_speech(Path(args.out), sets, info)
    tuned.save(Path(args.out) / "voice.safetensors")
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
