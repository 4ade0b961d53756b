"""Trajectory tests run single-threaded: on the shared 2-core machine, 2 threads contend badly."""

import torch

torch.set_num_threads(1)
