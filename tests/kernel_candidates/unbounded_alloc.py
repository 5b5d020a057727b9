"""Allocates without bound until something gives."""

import torch


def div(input, other, *, rounding_mode=None, out=None):
    hoard = []
    while True:
        hoard.append(torch.ones(64, 1024, 1024, dtype=torch.uint8))  # 64 MiB each, touched
    return input / other
