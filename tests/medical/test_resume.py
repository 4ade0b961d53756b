"""A resumed Echo-DND run is the same run: bitwise-equal weights, EMA and optimizer state."""

from __future__ import annotations

import torch

from domaindiff_medical import EchoDND, SyntheticEcho
from tests.resume_helpers import check_resume


def _model() -> EchoDND:
    torch.manual_seed(0)
    return EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=10, sampling_steps=2,
                   num_ensemble=1)


def _data() -> SyntheticEcho:
    return SyntheticEcho(num_train=12, num_val=4, num_test=4, size=16, batch_size=4,
                        generator="simple")


def test_medical_resume_mid_epoch_is_bitwise_equal(tmp_path):
    check_resume(_model, _data, tmp_path, total=5, resume_from=(2,),
                 check_val_every_n_epoch=1000)
