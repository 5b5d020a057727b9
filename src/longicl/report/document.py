"""What every section of the report reads: the runs, the notebooks' values, the task files'
overview, and where figures go."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.tasks import TASKS, get_task, task_order

TITLE = "Long-context in-context annotation with Qwen3-4B: technical report"
#: the title when no number comes from the challenge's model
TITLE_WITHOUT_QWEN = "Long-context in-context annotation: technical report"
CHALLENGE_MODEL = "Qwen3-4B"


def readable(path: Path) -> None:
    """Ordinary file permissions (atomic writes create 0600 temporary files)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def notebook_values(directory: Path | None) -> dict[str, dict[str, Any]]:
    """``<notebook>.values.json`` files of ``directory``, by notebook name ({} without one)."""
    if directory is None or not directory.is_dir():
        return {}
    return {
        p.name.removesuffix(".values.json"): an.read_values(p)
        for p in sorted(directory.glob("*.values.json"))
    }


@dataclass
class Report:
    runs: list[an.RunData]
    out_dir: Path
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    command: str | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def figure_dir(self) -> Path:
        return self.out_dir / "figures"

    @property
    def dev_runs(self) -> list[an.RunData]:
        return [r for r in self.runs if r.split == "dev"]

    @property
    def model_runs(self) -> list[an.RunData]:
        """Runs whose answers came from a language model."""
        return [r for r in self.runs if r.language_model]

    @property
    def qwen_runs(self) -> list[an.RunData]:
        """Runs answered by the challenge's model (a served Qwen3-4B)."""
        return [r for r in self.model_runs if CHALLENGE_MODEL.lower() in r.model.lower()]

    @property
    def title(self) -> str:
        """Qwen3-4B in the title only when a number of the report comes from it."""
        return TITLE if self.qwen_runs else TITLE_WITHOUT_QWEN

    @property
    def answered_by(self) -> f.Markdown:
        """Who answered the runs, in words: ``SmolLM2-135M-Instruct for `demo-llm`; none (…) for `demo```."""
        models: dict[str, list[f.Markdown]] = {}
        for run in self.runs:
            models.setdefault(run.model, []).append(f.code(run.name))
        return f.Markdown("; ").join(
            f.md("{} for {}", model, f.Markdown(", ").join(names)) for model, names in models.items()
        )

    @cached_property
    def overviews(self) -> list[an.TaskOverview]:
        return an.data_overview(
            sorted({get_task(n).name for r in self.runs for n in r.tasks}, key=task_order) or "all",
            data_dir=self.runs[0].data_dir() if self.runs else None,
        )

    @cached_property
    def floors(self) -> dict[int, int]:
        """The rule's minimum of demonstration tokens per task id: as the runs recorded it
        (``min_icl_tokens_rule`` in run.json), else as the task registry declares it."""
        floors = {spec.id: spec.min_icl_tokens for spec in TASKS.values()}
        for run in self.runs:
            floors.update(
                {spec.id: run.icl_floor(spec.name) for spec in map(get_task, run.tasks) if spec.is_challenge}
            )
        return floors

    @property
    def floor_phrase(self) -> str:
        return f.floor_phrase(self.floors)

    def figure(self, name: str, fig: Any, caption: str) -> dict[str, f.Markdown]:
        """Save ``fig`` as ``figures/<name>.png``; its numbered caption (escaped unless `Markdown`)
        and relative path."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"figure name {name!r}: letters, digits, - and _ only")
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        readable(path)
        self.figures.append(path)
        return {
            "path": f.Markdown(path.relative_to(self.out_dir).as_posix()),
            "caption": f.md("Figure {}: {}", len(self.figures), caption),
        }
