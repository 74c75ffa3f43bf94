"""SCGC / SCGC*: Self-Supervised Contrastive Graph Clustering (Kulatilleke et al., arXiv 2204.12656).

An MLP (auto)encoder clusters the nodes of a graph; the graph enters only through a neighbour-contrastive
loss, so inference needs node features alone. See apps/scgc/README.md.
"""
