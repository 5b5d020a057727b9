"""Where the checkout is: the one definition of the project root (``conf/``, ``data/``, ``outputs/``)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # src/longicl/paths.py -> the checkout
CONF_DIR = PROJECT_ROOT / "conf"
