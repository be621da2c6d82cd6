"""Data: heavy-atom graphs and radius graphs (here), shards and datasets (their own modules)."""

from jamun.data.graph import (
    GraphBatch,
    TopologyFeatures,
    batch_graphs,
    center_positions,
    graph_edges,
    graph_mean,
    topology_features,
)
from jamun.data.radius import radius_graph

__all__ = [
    "GraphBatch",
    "TopologyFeatures",
    "batch_graphs",
    "center_positions",
    "graph_edges",
    "graph_mean",
    "radius_graph",
    "topology_features",
]
