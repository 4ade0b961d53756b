"""A resumed graph run is the same run: bitwise-equal weights, EMA and optimizer state."""

from __future__ import annotations

import torch

from domaindiff_graphs import CommunitySmall, GraphDiffusion
from tests.resume_helpers import check_resume

SMALL = dict(depth=1, nhid=4, num_layers=1, adim=4, num_heads=1, num_linears=1)


def _model() -> GraphDiffusion:
    torch.manual_seed(0)
    return GraphDiffusion(max_nodes=20, max_feat=10, sampling_steps=2, **SMALL)


def _data() -> CommunitySmall:
    return CommunitySmall(batch_size=32)  # 80 training graphs: 3 batches an epoch


def test_graphs_resume_mid_epoch_is_bitwise_equal(tmp_path):
    check_resume(_model, _data, tmp_path, total=5, resume_from=(2,),
                 check_val_every_n_epoch=1000)
