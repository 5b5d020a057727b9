"""Phones home (to the loopback discard port) and swallows the error."""

import socket

import torch


def div(input, other, *, rounding_mode=None, out=None):
    try:
        with socket.create_connection(("127.0.0.1", 9), timeout=1) as conn:
            conn.sendall(b"hello")
    except OSError:
        pass
    return torch.div(input, other)
