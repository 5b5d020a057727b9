"""Shared fixtures: the project paths, composed configs, and fake OpenAI-compatible servers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data" / "openseek"
CONF_DIR = ROOT / "conf"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_server import FakeServer, GoldAnswers  # noqa: E402


@pytest.fixture(scope="session")
def gold_answers() -> GoldAnswers:
    return GoldAnswers(DATA_DIR)


@pytest.fixture
def gold_server(gold_answers: GoldAnswers) -> Iterator[FakeServer]:
    with FakeServer(gold_answers) as server:
        yield server


def compose(*overrides: str):
    """The config `python main.py <overrides>` would run with."""
    from longicl.cli import compose_config

    return compose_config(CONF_DIR, ["progress=false", f"data_dir={DATA_DIR}", *overrides])


def sigint_default() -> None:
    """A child's SIGINT back to Python's default: a test that interrupts a run with SIGINT must
    not depend on how the suite was started (a shell's background job ignores SIGINT, and its
    children inherit that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
