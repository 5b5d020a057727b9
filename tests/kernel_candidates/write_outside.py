"""Writes a file outside its working directory (the target path is filled in by the test)."""

import torch

TARGET = "__TARGET__"


def div(input, other, *, rounding_mode=None, out=None):
    with open(TARGET, "w") as fh:
        fh.write("escaped")
    return torch.div(input, other)
