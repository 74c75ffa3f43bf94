"""Multi-query associative recall (MQAR) for every causal token mixer, at a CPU-sized setting.

    python -m benchmarks.mqar                 # every causal mechanism (see --help for the options)

Task (Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language Models", arXiv
2312.04927; used in "Simple linear attention language models balance the recall-throughput tradeoff",
arXiv 2402.18668): a sequence starts with `num_kv_pairs` key-value pairs `k1 v1 k2 v2 ...`, then a query
region of filler tokens (0) in which each key appears once more, at a random position; at each such query
position the model must predict the value paired with that key. Keys are distinct tokens from
[1, vocab/2), values distinct tokens from [vocab/2, vocab), so every answer is unambiguous and appears in
the input only in its pair, before the query. Differences from Zoology's generator: query positions are
uniform over the query region (Zoology draws the gaps from a power law) and the target is read at the
query token itself (Zoology's inputs/labels shift gives the same alignment).

Model, identical for every mechanism: token embedding + learned absolute position embedding, a causal
depth-wise short convolution (kernel 3, residual) on the embeddings, two `TransformerBlock(dim, heads,
attention=name, causal=True)` (the mechanism with its registry defaults), LayerNorm, linear head over the
vocabulary. The short convolution (as the short convolutions of Zoology's and Based's models) hands each
value token its key, so the blocks only have to do the recall; without it (`--short-conv 0`) even softmax
first has to learn a previous-token head from the learned positions, which took 400 to over 700 steps here
with an erratic onset, more than this CPU budget. Mechanisms with a chunked form run it with chunk_size 16 (the
same function as the default 64, several times faster at this length on CPU). Training: cross-entropy at
the query positions only, AdamW (lr 2e-3, weight decay 0.1), 50 warm-up steps, constant, then linear decay
over the last 20% of steps, gradient clipping 1.0, a fresh batch every step (train seeds never reach the
held-out seed), the same seed, steps, batch and learning rate for all. Accuracy: argmax over
the vocabulary at every query position of `eval_examples` held-out sequences.

Outputs, in benchmarks/results/cpu/ (or --out): mqar.json, mqar.md (table) and mqar.png (bar chart).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.machine import cpu_name
from common.attention import available, capabilities, get_class
from common.layers.transformer_block import TransformerBlock

RESULTS = Path(__file__).resolve().parent / "results"
IGNORE = -100
FILLER = 0
EVAL_SEED = 12345  # held-out sequences; training batches use seeds TRAIN_SEED_BASE + step
TRAIN_SEED_BASE = 1_000_000


@dataclass
class MQARConfig:
    vocab_size: int = 64
    seq_len: int = 64
    num_kv_pairs: int = 16
    dim: int = 64
    heads: int = 4
    layers: int = 2
    batch: int = 32
    steps: int = 600
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50
    decay_fraction: float = 0.2
    chunk_size: int = 16
    short_conv: int = 3
    eval_examples: int = 1000
    seed: int = 0


def mqar_batch(
    num_examples: int,
    seq_len: int = 64,
    num_kv_pairs: int = 8,
    vocab_size: int = 64,
    num_queries: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR sequences: (inputs [B, L] long, targets [B, L] long, IGNORE (-100) except at query positions).

    Positions 0 .. 2D-1 hold the D key-value pairs (key at even, value at odd positions); the rest is
    filler (token 0) except `num_queries` (default D) positions, each holding one of the keys (distinct),
    whose target is that key's value. Deterministic in `seed`.
    """
    d = num_kv_pairs
    q = d if num_queries is None else num_queries
    half = vocab_size // 2
    if not 1 <= d <= half - 1 or d > vocab_size - half:
        raise ValueError(f"num_kv_pairs={d} needs 1 <= D <= {min(half - 1, vocab_size - half)} for vocab {vocab_size}")
    if not 1 <= q <= d or seq_len - 2 * d < q:
        raise ValueError(
            f"num_queries={q} must be in [1, D] and fit in the {seq_len - 2 * d} positions after the pairs"
        )
    g = torch.Generator().manual_seed(seed)
    b = num_examples
    keys = torch.rand(b, half - 1, generator=g).argsort(1)[:, :d] + 1  # distinct, in [1, half)
    values = torch.rand(b, vocab_size - half, generator=g).argsort(1)[:, :d] + half  # distinct, in [half, V)
    inputs = torch.full((b, seq_len), FILLER, dtype=torch.long)
    targets = torch.full((b, seq_len), IGNORE, dtype=torch.long)
    inputs[:, 0 : 2 * d : 2] = keys
    inputs[:, 1 : 2 * d : 2] = values
    which = torch.rand(b, d, generator=g).argsort(1)[:, :q]  # which pairs are queried, in query order
    positions = torch.rand(b, seq_len - 2 * d, generator=g).argsort(1)[:, :q] + 2 * d
    inputs.scatter_(1, positions, keys.gather(1, which))
    targets.scatter_(1, positions, values.gather(1, which))
    return inputs, targets


class MQARModel(nn.Module):
    """Embedding + learned positions (+ causal short conv), `layers` causal TransformerBlocks with mixer
    `attention`, norm, head."""

    def __init__(
        self,
        attention: str,
        vocab_size: int,
        seq_len: int,
        dim: int,
        heads: int,
        layers: int,
        attention_options: dict | None = None,
        short_conv: int = 0,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.short_conv = short_conv
        if short_conv:
            self.conv = nn.Conv1d(dim, dim, short_conv, groups=dim, padding=short_conv - 1)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, attention=attention, attention_options=attention_options, causal=True)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        if self.short_conv:  # causal depth-wise conv: position t sees tokens t-k+1 .. t
            x = x + self.conv(x.transpose(1, 2))[..., : tokens.shape[1]].transpose(1, 2)
        for block in self.blocks:
            x = block(x)
            x = x[0] if isinstance(x, tuple) else x
        return self.head(self.norm(x))


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    correct = total = 0
    for i in range(0, len(inputs), batch):
        logits = model(inputs[i : i + batch])
        tgt = targets[i : i + batch]
        at = tgt != IGNORE
        correct += (logits.argmax(-1)[at] == tgt[at]).sum().item()
        total += at.sum().item()
    model.train()
    return correct / total


def train_one(name: str, cfg: MQARConfig, eval_data: tuple[torch.Tensor, torch.Tensor], log=print) -> dict:
    """Train the MQAR model with mixer `name`; returns its record (accuracy, loss, curve, time)."""
    options = attention_options(name, cfg)
    torch.manual_seed(cfg.seed)
    model = MQARModel(name, cfg.vocab_size, cfg.seq_len, cfg.dim, cfg.heads, cfg.layers, options, cfg.short_conv)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    decay_start = round(cfg.steps * (1 - cfg.decay_fraction))

    def lr_at(step: int) -> float:  # warm-up, constant, linear decay over the last `decay_fraction`
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if step < decay_start:
            return 1.0
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    curve, losses = [], []
    checkpoints = {round(cfg.steps * f) for f in (0.25, 0.5, 0.75)}
    start = time.perf_counter()
    for step in range(cfg.steps):
        inputs, targets = mqar_batch(
            cfg.batch, cfg.seq_len, cfg.num_kv_pairs, cfg.vocab_size, seed=TRAIN_SEED_BASE + step
        )
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step + 1 in checkpoints:
            curve.append((step + 1, accuracy(model, *eval_data)))
    train_s = time.perf_counter() - start
    acc = accuracy(model, *eval_data)
    curve.append((cfg.steps, acc))
    final_loss = sum(losses[-20:]) / len(losses[-20:])
    log(f"{name:16s} accuracy {acc:.3f}  final train loss {final_loss:.3f}  ({train_s:.0f} s)")
    return {
        "mechanism": name,
        "cost": capabilities(name).cost,
        "options": options,
        "accuracy": acc,
        "final_train_loss": final_loss,
        "curve": curve,
        "train_s": train_s,
        "params": sum(p.numel() for p in model.parameters()),
        "finite": math.isfinite(final_loss),
    }


def attention_options(name: str, cfg: MQARConfig) -> dict:
    """Registry defaults, except `chunk_size` where the mechanism has one: its chunked form computes the same
    function for any chunk size, and at L = 64 the default (64) is several times slower on CPU than 16."""
    return (
        {"chunk_size": cfg.chunk_size} if "chunk_size" in inspect.signature(get_class(name).__init__).parameters else {}
    )


def causal_mechanisms() -> list[str]:
    return [n for n in available(causal=True) if capabilities(n).token_mixer]


def markdown(records: list[dict], meta: dict) -> str:
    cfg = meta["config"]
    rows = sorted(records, key=lambda r: -r.get("accuracy", -1))
    lines = [
        f"MQAR: vocab {cfg['vocab_size']}, sequence length {cfg['seq_len']}, {cfg['num_kv_pairs']} key-value pairs "
        f"(every key queried once); model: embeddings + causal short conv (kernel {cfg['short_conv']}), "
        f"{cfg['layers']} causal TransformerBlocks, dim {cfg['dim']}, {cfg['heads']} heads; "
        f"AdamW lr {cfg['lr']:g}, {cfg['steps']} steps of batch {cfg['batch']}, seed {cfg['seed']}; accuracy on "
        f"{cfg['eval_examples']} held-out sequences ({cfg['eval_examples'] * cfg['num_kv_pairs']} queries; chance "
        f"{1 / (cfg['vocab_size'] // 2):.3f} among the values). {meta['device_name']}, torch {meta['torch']}, "
        f"threads {meta['threads']}; run {meta['date']} ({meta['wall_s'] / 60:.1f} min).\n",
        "| mechanism | cost | accuracy | acc. at 25% / 50% / 75% of steps | final train loss | params | train s |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "accuracy" not in r:
            lines.append(f"| {r['mechanism']} | {r['cost']} | error | {r['error']} | | | |")
            continue
        partial = " / ".join(f"{a:.2f}" for _, a in r["curve"][:-1])
        lines.append(
            f"| {r['mechanism']} | {r['cost']} | {r['accuracy']:.3f} | {partial} | {r['final_train_loss']:.3f} "
            f"| {r['params']} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], meta: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from common.utils.figures import save_figure

    rows = sorted((r for r in records if "accuracy" in r), key=lambda r: -r["accuracy"])
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = ["tab:red" if r["cost"] == "N^2" else "tab:blue" for r in rows]
    ax.bar([r["mechanism"] for r in rows], [r["accuracy"] for r in rows], color=colors)
    cfg = meta["config"]
    ax.axhline(1 / (cfg["vocab_size"] // 2), color="gray", linestyle=":", label="chance (1 / #values)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("held-out accuracy at query positions")
    ax.set_title(
        f"MQAR (vocab {cfg['vocab_size']}, length {cfg['seq_len']}, {cfg['num_kv_pairs']} KV pairs): "
        f"{cfg['layers']} causal blocks, dim {cfg['dim']}, {cfg['steps']} steps\nred: O(N^2), blue: sub-quadratic"
    )
    plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
    ax.legend(loc="upper right")
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    defaults = MQARConfig()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mqar", description=__doc__.split("\n")[0])
    parser.add_argument("--mechanisms", default="", help="comma-separated names (default: every causal token mixer)")
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default="", help="output folder (default benchmarks/results/cpu)")
    args = parser.parse_args(argv or [])
    cfg = MQARConfig(**{f: getattr(args, f) for f in asdict(defaults)})
    torch.set_num_threads(args.threads)
    names = [m for m in args.mechanisms.split(",") if m] or causal_mechanisms()
    out = Path(args.out) if args.out else RESULTS / "cpu"
    out.mkdir(parents=True, exist_ok=True)

    eval_data = mqar_batch(cfg.eval_examples, cfg.seq_len, cfg.num_kv_pairs, cfg.vocab_size, seed=EVAL_SEED)
    start = time.perf_counter()
    records = []
    for name in names:
        try:
            records.append(train_one(name, cfg, eval_data))
        except Exception as err:  # recorded, not raised: one mechanism's failure must not stop the rest
            records.append(
                {"mechanism": name, "cost": capabilities(name).cost, "error": f"{type(err).__name__}: {err}"}
            )
            print(f"{name:16s} error: {records[-1]['error']}")
    meta = {
        "config": asdict(cfg),
        "device_name": cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "eval_seed": EVAL_SEED,
        "train_seeds": f"{TRAIN_SEED_BASE} + step",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - start,
    }
    (out / "mqar.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (out / "mqar.md").write_text(markdown(records, meta))
    plot(records, meta, out / "mqar.png")
    print(f"wrote {out}/mqar.{{json,md,png}} in {meta['wall_s'] / 60:.1f} min")
    return {"meta": meta, "records": records}


if __name__ == "__main__":
    main(sys.argv[1:])
