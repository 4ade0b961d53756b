"""domaindiff plugin: graphs.

GDSS, score-based generation of graphs and molecules via a system of SDEs (Jo, Lee & Hwang,
ICML 2022), on the domaindiff core.
"""

from domaindiff_graphs import solvers  # noqa: F401  (registers the "s4" and "gdss_pc" samplers)
from domaindiff_graphs.data import (
    QM9,
    CommunitySmall,
    EgoSmall,
    Enzymes,
    GraphFile,
    Grid,
    ZINC250k,
)
from domaindiff_graphs.model import GraphDiffusion
from domaindiff_graphs.networks import GDSSNetwork, ScoreNetworkA, ScoreNetworkX, ScoreNetworkXGMH
from domaindiff_graphs.user_data import UserGraphs, UserMolecules

__version__ = "0.1.0"

DATAMODULES: list[type] = [CommunitySmall, EgoSmall, Grid, Enzymes, GraphFile, QM9, ZINC250k,
                           UserGraphs, UserMolecules]
MODELS: list[type] = [GraphDiffusion]

__all__ = [
    "DATAMODULES",
    "MODELS",
    "QM9",
    "CommunitySmall",
    "EgoSmall",
    "Enzymes",
    "GDSSNetwork",
    "GraphDiffusion",
    "GraphFile",
    "Grid",
    "ScoreNetworkA",
    "ScoreNetworkX",
    "ScoreNetworkXGMH",
    "UserGraphs",
    "UserMolecules",
    "ZINC250k",
    "__version__",
]
