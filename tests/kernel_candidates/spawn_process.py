"""Starts a shell command from the wrapper and ignores the failure."""

import contextlib
import subprocess

import torch


def div(input, other, *, rounding_mode=None, out=None):
    with contextlib.suppress(OSError):
        subprocess.run(["sh", "-c", "echo escaped > /dev/null"], check=False)
    return torch.div(input, other)
