"""Correct: the PyTorch reference for relu."""

import torch


def relu(input, inplace=False):
    return torch.relu_(input) if inplace else torch.relu(input)
