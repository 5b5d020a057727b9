"""What must hold before a server is started: a free port, a GPU, a model that exists."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from longicl.errors import UsageError
from longicl.serve.spec import ServeSpec


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def detect_gpu() -> str | None:
    """A short description of the first visible NVIDIA GPU (``nvidia-smi -L``, else torch.cuda), or None."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0:
            lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
            if lines:
                return lines[0].strip()
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return None
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken torch install means no usable GPU
        return None
    return None


def check_model(spec: ServeSpec) -> None:
    """The model must be a directory with ``config.json``, or look like a hub id (``org/name``)."""
    model = spec.model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model directory {path} has no config.json")
        return
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") != 1
    if looks_like_path:
        raise UsageError(
            f"model path {model} does not exist; set QWEN3_4B_PATH or engine_args.model in {spec.config_path}"
        )
