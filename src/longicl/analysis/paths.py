"""Where the project's files are (a relative path is read from the project root)."""

from __future__ import annotations

from pathlib import Path

from longicl.paths import CONF_DIR, PROJECT_ROOT

DATA_DIR = PROJECT_ROOT / "data" / "openseek"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = PROJECT_ROOT / "reports"

__all__ = ["CONF_DIR", "DATA_DIR", "NOTEBOOK_DIR", "PROJECT_ROOT", "REPORTS_DIR", "project_path"]


def project_path(path: str | Path) -> Path:
    """A relative path is read from the project root (notebooks run in ``notebooks/``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path
