"""Generation throughput: GLA (recurrent state) vs the softmax decoder (KV cache), same sizes, batch 1.

Tokens per second of `LinaSpeech.stream` (text encoder once, then one decoding step + sampling per frame) at
output lengths of 500 to 8,000 frames, and the size of what each carries between steps (the GLA states,
constant; the KV cache, linear in length). Weights are random (speed does not depend on them) and the stop
token is suppressed so that every run makes exactly its length.

    python -m apps.lina_speech.throughput --device cpu --out throughput_cpu.json
    python -m apps.lina_speech.throughput --device cuda --out throughput_gpu.json   (GPU)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.tokens import STOP


def state_bytes(states) -> int:
    flat = [t for s in states for t in (s if isinstance(s, tuple) else (s,))]
    return sum(t.numel() * t.element_size() for t in flat)


def measure(arch: str, length: int, device: str, sizes: dict, text_len: int = 100) -> dict:
    torch.manual_seed(0)
    model = LinaSpeech(arch=arch, max_frames=length, dropout=0.0, **sizes).to(device).eval()
    with torch.no_grad():
        model.head.bias.view(model.n_q, -1)[0, STOP] = -1e4  # run to the length
    text = torch.randint(1, sizes["text_vocab"], (1, text_len), device=device)
    memory, mask = model.text_encoder(text)
    token = torch.full((1, 1, model.n_q), 1, device=device)
    with torch.no_grad():  # warm-up, outside the timing
        model.decode(token, memory, mask, None, 0, step=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    frames = sum(int(ok) for _, ok in model.stream(text, generator=torch.Generator(device).manual_seed(0)))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():  # what a step carries after t steps: bytes(1) + (t - 1) * growth per step (0 for GLA)
        _, one = model.decode(token, memory, mask, None, 0, step=True)
        _, two = model.decode(token, memory, mask, one, 1, step=True)
    per_step = state_bytes(two) - state_bytes(one)
    row = {"arch": arch, "frames": frames, "seconds": seconds, "tokens_per_s": frames / seconds}
    row["carried_bytes"] = state_bytes(one) + (length + model.n_q - 2) * per_step
    if device == "cuda":
        row["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--n-q", type=int, default=4)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = dict(n_q=args.n_q, codebook_size=args.codebook_size, text_vocab=64, dim=args.dim)
    sizes |= dict(num_heads=args.heads, n_layer=args.layers, text_layers=2, text_heads=args.heads)
    rows = []
    for length in args.lengths:
        for arch in ("gla", "transformer"):
            rows.append(measure(arch, length, args.device, sizes))
            print(json.dumps(rows[-1]), flush=True)
    result = {"device": args.device, "sizes": sizes, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result | {"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
