"""Writes scratch files inside its working directory and the temp dir: allowed."""

import os
import tempfile

import torch


def div(input, other, *, rounding_mode=None, out=None):
    with open("scratch.txt", "w") as fh:
        fh.write("ok")
    with tempfile.NamedTemporaryFile("w", delete=True) as fh:
        fh.write("ok")
    os.remove("scratch.txt")
    return torch.div(input, other)
