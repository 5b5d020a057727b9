"""Figures: matplotlib ``Figure`` objects (no pyplot state), shown by notebooks, saved by the report."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from longicl.analysis.error_analysis import answer_lengths, confusion_matrix, label_bias
from longicl.analysis.overview import TaskOverview
from longicl.analysis.reference import BEST_PUBLIC_ACCURACY, BEST_PUBLIC_SOURCE
from longicl.analysis.runs import RunData, _spread, task_spec
from longicl.analysis.strategies import SweepPoint, cost_rows
from longicl.records import as_record
from longicl.tasks import get_task, task_order


def fit_titles(fig: Any, *, rounds: int = 3) -> Any:
    """Wrap every title wider than its room onto more lines: the figure's (its width) and each
    axes' (the axes' width), so that no title is cut at the figure's edges or runs into a
    neighbour. Measured after the layout is drawn; returns ``fig``."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    for _ in range(rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        changed = False
        for text, room in title_rooms(fig):
            width = text.get_window_extent(renderer).width
            if text.get_text() and width > room:
                words = text.get_text().replace("\n", " ")
                chars = max(10, int(len(words) * room / width * 0.92))
                text.set_text(textwrap.fill(words, chars, break_long_words=False))
                changed = True
        if not changed:
            break
    return fig


def title_rooms(fig: Any) -> list[tuple[Any, float]]:
    """(title text, the width in pixels it may take) of a figure: its suptitle and axes titles."""
    margin = 6.0
    rooms = []
    if getattr(fig, "_suptitle", None) is not None:
        rooms.append((fig._suptitle, fig.bbox.width - 2 * margin))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for text in (ax.title, ax._left_title, ax._right_title):
            rooms.append((text, min(ax.bbox.width + 2 * margin, fig.bbox.width - 2 * margin)))
    return rooms


def fitted(make: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a figure function: its titles fit (`fit_titles`)."""

    @functools.wraps(make)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fit_titles(make(*args, **kwargs))

    return wrapper


def _outside_legend(ax: Any, **kwargs: Any) -> None:
    """The legend under the figure, never over the bars (constrained layout makes room), and task
    names on the x axis slanted so that none hides another."""
    handles, labels = ax.get_legend_handles_labels()
    ax.figure.legend(handles, labels, loc="outside lower center", ncol=min(3, max(1, len(labels))), **kwargs)
    for label in ax.get_xticklabels():
        label.set_rotation(25)
        label.set_horizontalalignment("right")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _grid(count: int, columns: int = 4, size: tuple[float, float] = (3.4, 2.6)):
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig = _figure(size[0] * columns, size[1] * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _floats(column: pd.Series):
    """A nullable column as floats for matplotlib (missing values as NaN, which it leaves out)."""
    return column.to_numpy(dtype=float, na_value=float("nan"))


@fitted
def figure_token_lengths(overviews: Sequence[TaskOverview]):
    """Histograms of demonstration token lengths per task (the top 0.5% clipped)."""
    import numpy as np

    fig, axes = _grid(len(overviews))
    for ax, o in zip(axes, overviews, strict=True):
        values = np.asarray(o.demo_tokens, dtype=float)
        if values.size:
            top = float(np.percentile(values, 99.5))
            ax.hist(np.minimum(values, top), bins=30, color="#4c72b0")
            ax.axvline(float(np.median(values)), color="#c44e52", lw=1)
            ax.text(
                0.97,
                0.93,
                f"median {np.median(values):,.0f}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="#c44e52",
                zorder=5,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5},
            )
        ax.set_title(f"{o.name}: {o.title}", fontsize=9)
        ax.set_xlabel("tokens per demonstration", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Demonstration lengths (Qwen tokens, as rendered in the prompt)", fontsize=10)
    return fig


@fitted
def figure_label_distributions(overviews: Sequence[TaskOverview]):
    """Gold label counts over the examples of the closed-label tasks."""
    closed = [o for o in overviews if o.label_counts]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.6, 2.6))
    if not closed:
        axes[0].text(0.5, 0.5, "no closed-label task selected", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, o in zip(axes, closed, strict=True):
        labels = list(o.label_counts or {})
        ax.bar(range(len(labels)), [o.label_counts[k] for k in labels], color="#55a868")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{o.name}: {o.title}", fontsize=9)
        ax.set_ylabel("examples", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Label distributions of the labelled examples", fontsize=10)
    return fig


@fitted
def figure_fits(overviews: Sequence[TaskOverview]):
    """Share of each task's pool that fits in each budget."""
    import numpy as np

    fig = _figure(8, 3.2)
    ax = fig.subplots()
    budgets = [f.budget for f in overviews[0].fits] if overviews else []
    width = 0.8 / max(1, len(budgets))
    x = np.arange(len(overviews))
    for j, budget in enumerate(budgets):
        shares = [100 * next(f.fraction for f in o.fits if f.budget == budget) for o in overviews]
        ax.bar(x + j * width, shares, width, label=f"{budget // 1000}K tokens")
    ax.set_xticks(x + width * (len(budgets) - 1) / 2, [o.name for o in overviews], fontsize=8)
    ax.set_ylabel("% of the pool that fits")
    ax.set_yscale("log")
    _outside_legend(ax, fontsize=8)
    ax.set_title("How much of each task's labelled pool one request can carry", fontsize=10)
    return fig


@fitted
def figure_sweep_accuracy(points: Sequence[SweepPoint]):
    """Accuracy against the demonstration tokens actually sent, one panel per task."""
    tasks = sorted({p.task for p in points}, key=lambda t: get_task(t).id)
    fig, axes = _grid(max(1, len(tasks)))
    for ax, task in zip(axes, tasks, strict=False):
        for strategy in sorted({p.strategy for p in points}):
            line = sorted(
                (p for p in points if p.task == task and p.strategy == strategy and p.accuracy is not None),
                key=lambda p: p.icl_tokens or 0,
            )
            if line:
                ax.plot([p.icl_tokens for p in line], [p.accuracy for p in line], "o-", label=strategy)
        best = BEST_PUBLIC_ACCURACY.get(get_task(task).id)
        if best is not None:
            ax.axhline(best, color="grey", ls=":", lw=1, label="best public")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("ICL tokens per request (median)", fontsize=8)
        ax.set_ylabel("dev accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    fig.suptitle("Accuracy vs. context size per selection strategy", fontsize=10)
    return fig


@fitted
def figure_sweep_cost(points: Sequence[SweepPoint], *, samples_per_task: int = 500):
    """Prompt tokens per request and prefill per sample against the budget, per strategy."""
    from matplotlib.ticker import FuncFormatter

    costs = cost_rows(points, samples_per_task=samples_per_task).sort_values("budget", kind="stable")
    fig = _figure(10, 3.4)
    left, right = fig.subplots(1, 2)
    styles = ["o-", "s--", "^-.", "D:", "v-"]
    for k, (strategy, line) in enumerate(costs.groupby("strategy", sort=True)):
        budgets = _floats(line["budget"])
        style = styles[k % len(styles)]
        left.plot(budgets, _floats(line["prompt tokens / sample"]), style, label=strategy, alpha=0.8)
        right.plot(budgets, _floats(line["prefill / sample (amortised)"]), style, label=strategy)
    left.set_title("prompt tokens per request (median, mean over tasks)", fontsize=9)
    right.set_title(
        f"new prefill per sample with prefix caching ({samples_per_task} samples/task)", fontsize=9
    )
    right.set_yscale("log")
    thousands = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for ax in (left, right):
        ax.set_xlabel("demonstration budget (tokens)", fontsize=8)
        ax.yaxis.set_major_formatter(thousands)
        ax.xaxis.set_major_formatter(thousands)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return fig


@fitted
def figure_confusions(run: RunData):
    """Confusion matrices of the closed-label tasks of a run."""
    closed = [n for n in run.records if task_spec(n).is_closed]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.8, 3.4))
    if not closed:
        axes[0].text(0.5, 0.5, "no closed-label task in this run", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, name in zip(axes, closed, strict=True):
        labels = list(task_spec(name).labels or ())
        columns, matrix = confusion_matrix(run.records[name], labels)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in _cells(matrix):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(columns)), [c.replace(" ", "\n") for c in columns], fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"Confusion matrices ({run.label})", fontsize=10)
    return fig


def _cells(matrix) -> Iterable[tuple[tuple[int, int], int]]:
    for i, row in enumerate(matrix.tolist()):
        for j, value in enumerate(row):
            yield (i, j), int(value)


@fitted
def figure_label_bias(run: RunData):
    """Gold vs. predicted label shares for the closed-label tasks of a run."""
    import numpy as np

    closed = [n for n in run.records if task_spec(n).is_closed]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.8, 2.8))
    for ax, name in zip(axes, closed, strict=False):
        rows = label_bias(run.records[name], list(task_spec(name).labels or ()))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["gold share"] for r in rows], 0.4, label="gold")
        ax.bar(x + 0.2, [r["predicted share"] for r in rows], 0.4, label="predicted")
        ax.set_xticks(x, [r["label"] for r in rows], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if closed:
        axes[0].legend(fontsize=7)
    else:
        axes[0].text(0.5, 0.5, "no closed-label task in this run", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle("Label bias: share of gold vs. predicted labels", fontsize=10)
    return fig


@fitted
def figure_answer_lengths(run: RunData):
    """Raw reply lengths per task, correct vs. wrong."""
    names = list(run.records)
    fig, axes = _grid(max(1, len(names)))
    for ax, name in zip(axes, names, strict=False):
        records = [as_record(r) for r in run.records[name]]
        for outcome, colour, keep in (
            ("correct", "#55a868", lambda r: r.correct == 1),
            ("wrong / unscored", "#c44e52", lambda r: r.correct != 1),
        ):
            lengths = answer_lengths([r for r in records if keep(r)])
            if lengths:
                ax.hist(lengths, bins=20, alpha=0.6, color=colour, label=outcome)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("reply characters", fontsize=8)
        ax.tick_params(labelsize=7)
        if not answer_lengths(records):
            ax.text(0.5, 0.5, "no replies", ha="center", va="center", transform=ax.transAxes)
    if names and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle("Answer lengths (raw replies)", fontsize=10)
    return fig


@fitted
def figure_accuracy(runs: Sequence[RunData], *, best_public: Mapping[int, float] = BEST_PUBLIC_ACCURACY):
    """Dev accuracy per task, one bar per run, with the best public entries as markers."""
    import numpy as np

    scored = [r for r in runs if any(t.get("accuracy") is not None for t in r.tasks.values())]
    names = sorted(
        {n for r in runs for n in r.tasks} | {f"openseek-{i}" for i in best_public}, key=task_order
    )
    ids = [get_task(n).id for n in names]  # None for a declared task
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.8 / max(1, len(scored))
    for j, run in enumerate(scored):
        values = [run.tasks.get(n, {}).get("accuracy") for n in names]
        ax.bar(
            x + (j - (len(scored) - 1) / 2) * width,
            [np.nan if v is None else v for v in values],
            width,
            label=run.label,
        )
    marks = [(k, best_public[i]) for k, i in enumerate(ids) if i in best_public]
    if marks:
        ax.plot([m[0] for m in marks], [m[1] for m in marks], "k_", ms=22, mew=2, label=BEST_PUBLIC_SOURCE)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (dev split)")
    _outside_legend(ax, fontsize=7)
    ax.set_title("Accuracy per task (task 8 is scored by execution, not by string match)", fontsize=10)
    return fig


@fitted
def figure_tokens(run: RunData):
    """Median prompt tokens and uncached prefill per task, with the rule's ICL floor."""
    import numpy as np

    names = list(run.tasks)
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    x = np.arange(len(names))
    prompt = [_spread(run.tasks[n], "prompt_tokens", "median") or 0 for n in names]
    uncached = [_spread(run.tasks[n], "uncached_prompt_tokens", "median") or 0 for n in names]
    ax.bar(x - 0.2, prompt, 0.4, label="prompt tokens per request", color="#4c72b0")
    bars = ax.bar(x + 0.2, uncached, 0.4, label="uncached prefill per request", color="#dd8452")
    ax.bar_label(bars, [f"{v:,.0f}" for v in uncached], fontsize=7, padding=2)
    floors = [task_spec(n).min_icl_tokens for n in names]
    ax.scatter(x - 0.2, floors, marker="_", s=400, color="black", label="rule: minimum ICL tokens", zorder=3)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("tokens (median per request)")
    _outside_legend(ax, fontsize=7)
    ax.set_ylim(0, max([*prompt, *floors, 1]) * 1.25)
    ax.set_title(f"Context size and new prefill per request ({run.label})", fontsize=10)
    return fig


@fitted
def figure_icl_floor(run: RunData):
    """Every request's demonstration tokens against the rule's minimum, per task."""
    names = [n for n in run.records if run.records[n]]
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    for k, name in enumerate(names):
        values = [
            q.get("icl_tokens") or 0 for r in map(as_record, run.records[name]) for q in r.request_entries
        ]
        if values:
            jitter = [k + 0.3 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
            ax.scatter(jitter, values, s=6, alpha=0.5, color="#4c72b0")
        floor = task_spec(name).min_icl_tokens
        ax.hlines(floor, k - 0.4, k + 0.4, color="#c44e52", lw=2)
    ax.set_ylim(bottom=0)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("ICL tokens per request")
    ax.set_title("Demonstration tokens of every request (red: the rule's minimum)", fontsize=10)
    return fig
