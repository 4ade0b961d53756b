"""The demos' shared command-line handling (domaindiff.demo_utils.demo_args)."""

import argparse

import torch

from domaindiff.demo_utils import demo_args


def test_demo_args_sets_threads_and_passes_the_rest_through():
    before = torch.get_num_threads()
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    try:
        args, overrides = demo_args(parser, ["--steps", "4", "--threads", "2",
                                             "--model.init_args.noise=gaussian"])
        assert (args.steps, args.threads) == (4, 2)
        assert overrides == ["--model.init_args.noise=gaussian"]
        assert torch.get_num_threads() == 2
        args, overrides = demo_args(argparse.ArgumentParser(), [])
        assert args.threads == 1 and overrides == [] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
