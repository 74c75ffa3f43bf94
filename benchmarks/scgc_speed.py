"""SCGC* (MLP, graph only in the loss) against GCN encoders with the same loss heads, on Cora, CPU.

The paper claims SCGC(*) trains and infers faster than GNN-based clustering (its -55% training and
-81% inference time are against SDCN/AGCN, which run an autoencoder *and* a GCN). Here every model gets
the same heads (Student-t soft assignment to 7 centres, beta * KL(p || q) + alpha * neighbour-
contrastive loss with the app's default target Â^4), full batch, Adam; only the encoder differs:

- scgc_star: the SCGC* MLP x -> 500 -> 500 -> 2000 -> 10 (no graph at inference)
- scgc:      the same plus its mirror decoder and the reconstruction term (training only differs)
- gcn2:      2-layer PyG GCNConv x -> 500 -> 10 (the asked-for baseline: same hidden width, same z)
- gcn4:      4-layer GCNConv x -> 500 -> 500 -> 2000 -> 10 (same widths as SCGC*; SDCN's GCN branch)

The GCNs get their normalised adjacency precomputed once (gcn_norm, then `normalize=False`), which
favours them. Training step = forward + losses + backward + Adam step; inference = forward to (q, z)
under no_grad. Median over repeats after warm-up, one process, `--threads` intra-op threads.

    nice .venv/bin/python benchmarks/scgc_speed.py            # writes benchmarks/results/cpu/scgc_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.scgc.data import SCGCDataModule  # noqa: E402
from apps.scgc.losses import kl_loss, neighbour_contrastive_loss, target_block, target_distribution  # noqa: E402
from apps.scgc.model import SCGC  # noqa: E402


class GCNEncoder(nn.Module):
    """GCNConv stack with ReLU between layers, plus the same centres and soft assignment as SCGC."""

    def __init__(self, widths: list[int], n_clusters: int):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.convs = nn.ModuleList(GCNConv(a, b, normalize=False) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.mu = nn.Parameter(torch.randn(n_clusters, widths[-1]) * 0.1)
        self.decoder = None

    def encode(self, x, edge_index, edge_weight):
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index, edge_weight)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x

    def soft_assign(self, z):
        q = 1.0 / (1.0 + (z.unsqueeze(1) - self.mu).pow(2).sum(-1))
        return q / q.sum(1, keepdim=True)

    def forward(self, x, edge_index, edge_weight):
        z = self.encode(x, edge_index, edge_weight)
        return self.soft_assign(z), z


def median_seconds(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "scgc"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu" / "scgc_speed.json"))
    args = ap.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    dm = SCGCDataModule(dataset="cora", data_dir=args.data_dir)
    dm.prepare_data()
    dm.setup("fit")
    g = dm.graph
    x, n, k = g.x, g.num_nodes, dm.model_kwargs()["n_clusters"]
    target = target_block(dm.contrastive_target(4, False), torch.arange(n))  # dense Â^4, as the app on Cora
    ei, ew = gcn_norm(g.edge_index, None, n, add_self_loops=True)
    alpha, beta, tau = 2.0, 1.0, 1.0

    models = {
        "scgc_star": SCGC(x.shape[1], k, variant="scgc_star"),
        "scgc": SCGC(x.shape[1], k, variant="scgc"),
        "gcn2": GCNEncoder([x.shape[1], 500, 10], k),
        "gcn4": GCNEncoder([x.shape[1], 500, 500, 2000, 10], k),
    }
    results = {}
    for name, model in models.items():
        graph_args = () if isinstance(model, SCGC) else (ei, ew)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, graph_args=graph_args, opt=opt):
            z = model.encode(x, *graph_args)
            q = model.soft_assign(z)
            loss = beta * kl_loss(target_distribution(q.detach()), q) + alpha * neighbour_contrastive_loss(
                z, target, tau
            )
            if model.decoder is not None:
                loss = loss + F.mse_loss(model.decode(z), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def infer(model=model, graph_args=graph_args):
            with torch.no_grad():
                model(x, *graph_args)

        train_s, train_all = median_seconds(step, args.warmup, args.repeats)
        infer_s, infer_all = median_seconds(infer, args.warmup, 2 * args.repeats)
        results[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "train_step_s": train_s,
            "infer_s": infer_s,
            "train_step_all_s": [round(t, 5) for t in train_all],
            "infer_all_s": [round(t, 5) for t in infer_all],
            "needs_graph_at_inference": not isinstance(model, SCGC),
        }
        print(f"{name}: train step {train_s * 1e3:.1f} ms, inference {infer_s * 1e3:.1f} ms", flush=True)

    ref = results["scgc_star"]
    for r in results.values():
        r["train_ratio_vs_scgc_star"] = r["train_step_s"] / ref["train_step_s"]
        r["infer_ratio_vs_scgc_star"] = r["infer_s"] / ref["infer_s"]
    report = {
        "benchmark": "scgc_speed",
        "dataset": {
            "name": "cora",
            "nodes": n,
            "features": int(x.shape[1]),
            "edges_directed": int(g.edge_index.shape[1]),
        },
        "loss": {"alpha": alpha, "beta": beta, "tau": tau, "target": "dense row-normalised A^4"},
        "threads": args.threads,
        "repeats": {"train": args.repeats, "infer": 2 * args.repeats, "warmup": args.warmup},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "note": "median seconds; the machine was shared with other jobs, so absolute times are noisy, ratios less so",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")

    print(
        f"\nCora (N={n}), CPU, {args.threads} thread(s), median of {args.repeats} steps / {2 * args.repeats} passes\n"
    )
    print("| encoder | params | train step (ms) | x vs SCGC* | inference (ms) | x vs SCGC* | graph at inference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        graph = "yes" if r["needs_graph_at_inference"] else "no"
        train = f"{r['train_step_s'] * 1e3:.0f} | {r['train_ratio_vs_scgc_star']:.2f}"
        infer = f"{r['infer_s'] * 1e3:.1f} | {r['infer_ratio_vs_scgc_star']:.2f}"
        print(f"| {name} | {r['params'] / 1e6:.2f} M | {train} | {infer} | {graph} |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
