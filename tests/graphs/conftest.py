"""The graphs tests run single-threaded.

Their tensors are small (graphs of <= 20 nodes), so a second intra-op thread gains nothing, and on
a shared, loaded machine two OpenMP threads waiting on each other made the likelihood and sampling
tests up to ten times slower (measured: 213 s with 2 threads vs 17 s with 1 for one likelihood).
"""

import torch

torch.set_num_threads(1)
