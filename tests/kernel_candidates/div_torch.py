"""Correct: the PyTorch reference for div."""

import torch


def div(input, other, *, rounding_mode=None, out=None):
    return torch.div(input, other, rounding_mode=rounding_mode, out=out)
