"""Starts a shell command from the wrapper and ignores the failure."""

import subprocess

import torch


def div(input, other, *, rounding_mode=None, out=None):
    try:
        subprocess.run(["sh", "-c", "echo escaped > /dev/null"], check=False)
    except OSError:
        pass
    return torch.div(input, other)
