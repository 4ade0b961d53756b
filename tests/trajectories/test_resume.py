"""A resumed GeoTDM run is the same run: bitwise-equal weights, EMA and optimizer state."""

from __future__ import annotations

import torch

from domaindiff_trajectories import GeoTDM, NBody
from tests.resume_helpers import check_resume


def _model() -> GeoTDM:
    torch.manual_seed(0)
    return GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=6,
                  sampling_steps=2)


def test_trajectories_resume_mid_epoch_is_bitwise_equal(tmp_path):
    def data() -> NBody:
        return NBody(num_train=12, num_val=4, num_test=4, length=1600, cond_frames=5,
                     pred_frames=6, batch_size=4, root=str(tmp_path / "data"), simulate=True)

    check_resume(_model, data, tmp_path, total=5, resume_from=(2,),
                 check_val_every_n_epoch=1000)
