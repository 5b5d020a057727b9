"""Wrong name: the wrapper is called divide, the task asks for div."""

import torch


def divide(input, other, *, rounding_mode=None, out=None):
    return torch.div(input, other)
