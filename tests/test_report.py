"""The technical report (longicl.report): Markdown and a self-contained HTML file from run dirs."""

import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from conftest import compose
from fake_server import FakeServer

from longicl import analysis as an
from longicl import report
from longicl.analysis.figures import title_rooms
from longicl.runner import run


class _Page(HTMLParser):
    """Resource references, tables (class -> body rows) and images of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.tables: list[tuple[str, int]] = []
        self.images = 0
        self._table: list = []
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href", "data", "poster", "srcset"):
            if name in attrs:
                self.references.append((tag, name, attrs[name] or ""))
        if tag == "img":
            self.images += 1
        if tag == "table":
            self._table = [attrs.get("class") or "", 0]
        if tag == "tbody":
            self._in_body = True
        if tag == "tr" and self._in_body and self._table:
            self._table[1] += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        if tag == "table" and self._table:
            self.tables.append(tuple(self._table))
            self._table = []


def _page(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def dry_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry")
    run(compose("engine=dryrun", "task=all", "split=dev", "limit=2", f"out_dir={out}"))
    return out


@pytest.fixture(scope="module")
def gold_dir(tmp_path_factory, gold_answers):
    out = tmp_path_factory.mktemp("gold")
    with FakeServer(gold_answers) as server:
        run(compose("task=all", "split=dev", "limit=2", f"engine.base_url={server.url}", f"out_dir={out}"))
    return out


@pytest.fixture(scope="module")
def dry_report(dry_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.build_report([dry_dir], out), out


def test_markdown_and_html_are_written_with_figures(dry_report):
    written, out = dry_report
    assert written.markdown == out / "technical_report.md" and written.markdown.is_file()
    assert written.html == out / "technical_report.html" and written.html.is_file()
    assert len(written.figures) >= 3
    markdown = written.markdown.read_text(encoding="utf-8")
    for figure in written.figures:
        assert figure.parent == out / "figures" and figure.read_bytes().startswith(b"\x89PNG")
        assert f"](figures/{figure.name})" in markdown
    for section in (
        "## Where the numbers come from",
        "## Method",
        "### Context construction",
        "### Selection strategies",
        "### Prompts",
        "### Answer parsing",
        "### Engines and decoding",
        "## Results",
        "### Comparison with baselines",
        "## Compliance with the rules",
        "## Environment and reproduction",
    ):
        assert section in markdown, section


def test_reproduction_says_make_install_installs_the_package_alone(dry_report):
    written, _ = dry_report
    flat = " ".join(written.markdown.read_text(encoding="utf-8").split())
    assert "installs the package alone (no extras" in flat and "with its extras" not in flat


@pytest.mark.parametrize(("path", "name"), [("/tmp/x", "/tmp/x"), ("/srv/runs/a/b", "…/a/b")])
def test_a_run_outside_the_project_keeps_its_leading_slash(path, name):
    from pathlib import Path

    from longicl.analysis.runs import RunData

    assert RunData(Path(path), {}, {}, {}).name == name


def test_html_is_self_contained_with_the_per_task_table(dry_report):
    written, _ = dry_report
    page = _page(written.html)
    per_task = [rows for css, rows in page.tables if "per-task" in css]
    assert per_task and per_task[0] >= 7
    assert page.images >= 3
    for tag, attribute, value in page.references:
        if tag == "img":
            assert value.startswith("data:image/png;base64,"), value[:60]
        else:
            assert value.startswith("#"), (tag, attribute, value)  # in-page links only
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    html = written.html.read_text(encoding="utf-8")
    style = html.split("<style>")[1].split("</style>")[0]
    pre = style.split("pre {")[1].split("}")[0]  # long prompt blocks and commands wrap, never run off
    assert "white-space: pre-wrap" in pre and "overflow-wrap: anywhere" in pre
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(https?:)?//", html)


def test_the_report_says_where_numbers_come_from(dry_report, dry_dir):
    written, _ = dry_report
    markdown = written.markdown.read_text(encoding="utf-8")
    assert "no number in it comes from Qwen3-4B" in markdown
    assert markdown.startswith("# Long-context in-context annotation: technical report")
    assert "dry run" in markdown
    assert an.BEST_PUBLIC_SOURCE in markdown
    for task_id, value in an.BEST_PUBLIC_ACCURACY.items():
        assert f"{100 * value:.1f}%" in markdown, task_id
    # the compliance table: minimum ICL tokens actually sent against the rule, per task
    summary = json.loads((dry_dir / "run.json").read_text())
    for name, task in summary["tasks"].items():
        assert f"| {name} | none (dry run" in markdown
        assert f"{task['icl_tokens']['min']:,}" in markdown
    assert "| 15,000 | yes |" in markdown and "| 30,000 | yes |" in markdown


def test_prose_numbers_are_read_from_the_runs(dry_report, dry_dir, tmp_path):
    markdown = dry_report[0].markdown.read_text(encoding="utf-8")
    assert "(200 per task, 40 for task 8) is held out" in " ".join(markdown.split())
    per_sample = "at most 1,200 tokens (4,000 for task 8, whose demonstrations are ~1,600 tokens each)."
    assert per_sample in " ".join(markdown.split())
    # what the run recorded wins over the task defaults and conf/selection
    copy = tmp_path / "run"
    shutil.copytree(dry_dir, copy)
    summary = json.loads((copy / "run.json").read_text())
    for name, task in summary["tasks"].items():
        task["dev_size"] = 50
        task["selection"]["dynamic_tokens"] = 2000 if name == "openseek-3" else 1500
    (copy / "run.json").write_text(json.dumps(summary))
    markdown = report.build_report([copy], tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert "(50 per task) is held out" in " ".join(markdown.split())
    assert "at most 1,500 tokens (2,000 for task 3, whose demonstrations are ~" in " ".join(markdown.split())


def test_reproduction_commands_run_as_written(dry_report, dry_dir):
    written, _ = dry_report
    markdown = written.markdown.read_text(encoding="utf-8")
    commands = [line for line in markdown.splitlines() if line.startswith(".venv/bin/python main.py")]
    assert commands
    config = json.loads((dry_dir / "run.json").read_text())["config"]
    command, verified = an.main_command(config)
    assert verified and ".venv/bin/" + command in commands


def test_a_model_run_and_notebook_values(gold_dir, dry_dir, tmp_path):
    values = tmp_path / "values"
    values.mkdir()
    point = an.SweepPoint(
        "hybrid", 32000, "openseek-5", 3, None, 32400.0, 32200.0, 32100, 1260.0, 31140.0, 0.1, "x"
    )
    (values / "02_context_strategies.values.json").write_text(
        json.dumps(
            {
                "engine": "dryrun",
                "split": "dev",
                "limit": 3,
                "points": an.jsonable([point]),
                "cost": an.jsonable(an.cost_rows([point])),
            }
        )
    )
    written = report.build_report([gold_dir, dry_dir], tmp_path / "out", notebook_values=values)
    markdown = written.markdown.read_text(encoding="utf-8")
    assert "no number in it comes from Qwen3-4B" not in markdown  # the fake server plays Qwen3-4B here
    assert markdown.startswith("# Long-context in-context annotation with Qwen3-4B")
    assert "Qwen3-4B (this work)" in markdown and "100.0%" in markdown
    assert "## Context strategies: cost and accuracy" in markdown
    assert "accuracy.png" in markdown and "strategy_cost.png" in markdown
    page = _page(written.html)
    assert sum(1 for css, rows in page.tables if "per-task" in css and rows >= 8) == 2
    assert page.images == len(written.figures) >= 5


def test_command_line(dry_dir, tmp_path, capsys):
    assert report.main([str(dry_dir), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "technical_report.html").is_file()
    markdown = (tmp_path / "r" / "technical_report.md").read_text(encoding="utf-8")
    assert f".venv/bin/python -m longicl.report {dry_dir} -o {tmp_path / 'r'}" in markdown
    assert report.main([str(tmp_path / "nothing"), "-o", str(tmp_path / "r2")]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_inline_markup_is_escaped():
    assert report.inline_html("a `<b>` **c** <d>") == "a <code>&lt;b&gt;</code> <strong>c</strong> &lt;d&gt;"


def test_confidence_intervals():
    assert report._ci95(None, 10) == "—" and report._ci95(0.5, 0) == "—"
    low, high = map(float, report._ci95(1.0, 200).split("–"))
    assert high == 100.0 and 97.0 < low < 99.0
    low, high = map(float, report._ci95(0.5, 100).split("–"))
    assert 39 < low < 41 and 59 < high < 61


def test_a_small_model_run_is_named_and_no_qwen_title(gold_dir, dry_dir, tmp_path):
    """A run answered by another model (engine=local's SmolLM2) is a model run, but no number comes
    from Qwen3-4B: the title says no Qwen3-4B and the report names the model of every run."""
    small = tmp_path / "small"
    shutil.copytree(gold_dir, small)
    summary = json.loads((small / "run.json").read_text())
    summary["engine"]["model"] = "SmolLM2-135M-Instruct"
    (small / "run.json").write_text(json.dumps(summary))
    markdown = report.build_report([small, dry_dir], tmp_path / "out").markdown.read_text(encoding="utf-8")
    flat = " ".join(markdown.split())
    assert markdown.startswith("# Long-context in-context annotation: technical report")
    assert "no number in it comes from Qwen3-4B" in flat and "No Qwen3-4B numbers" in flat
    assert "SmolLM2-135M-Instruct for `" in flat and "model: SmolLM2-135M-Instruct" in flat
    html = (tmp_path / "out" / "technical_report.html").read_text(encoding="utf-8")
    assert "with Qwen3-4B" not in html.split("</title>")[0]


def test_a_small_model_counted_in_its_own_tokens_is_not_said_to_be_qwens_prompts(gold_dir, tmp_path):
    """engine=local min_icl_tokens=3000 model.tokenizer=server: the prompts are not the ones Qwen3-4B
    receives, and "Not an entry" names every reason (the floor too, which run.json left out)."""
    small = tmp_path / "small"
    shutil.copytree(gold_dir, small)
    summary = json.loads((small / "run.json").read_text())
    summary["engine"]["model"] = "SmolLM2-135M-Instruct"
    summary["config"].setdefault("model", {})["tokenizer"] = "server"
    server_reason = "demonstrations counted in the served model's tokens (model.tokenizer=server), not Qwen's"
    for task in summary["tasks"].values():
        task.update(min_icl_tokens=3000, compliant=False, not_compliant_because=[server_reason])
    (small / "run.json").write_text(json.dumps(summary))
    markdown = report.build_report([small], tmp_path / "out").markdown.read_text(encoding="utf-8")
    flat = " ".join(markdown.split())
    assert "exact counts with the Qwen BPE" not in flat
    assert "counted in the served model's own tokens (`model.tokenizer=server`), not Qwen's" in flat
    reasons = flat.split("Not an entry: ")[1].split(". ")[0]
    assert server_reason in reasons and "min_icl_tokens=3000 is below the rule's 30000" in reasons


def test_a_declared_task_is_named_with_its_metric(tmp_path):
    """No ``None`` task name, the metric named, and no "eight task files" for one declared task."""
    from conftest import ROOT

    out = tmp_path / "mood"
    task = ROOT / "examples" / "tweet-mood.yaml"
    run(compose("engine=classical", f"task={task}", "split=dev", "limit=12", f"out_dir={out}"))
    markdown = report.build_report([out], tmp_path / "r").markdown.read_text(encoding="utf-8")
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    flat = " ".join(summary.split())
    assert "None" not in flat and "tweet-mood: macro F1 0." in flat and ", accuracy " in flat
    assert "(exact match)" not in flat  # the task is scored by macro F1, not labelled exact match
    whole = " ".join(markdown.split())
    assert "no labelled example is contradicted" not in whole  # classical answers carry no confidence
    assert "no sample of this run has a confidence" in whole
    data = " ".join(markdown.split("## Tasks and data")[1].split("\n## ")[0].split())
    assert "eight task files" not in data and data.startswith("The declared task tweet-mood")


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _layout_problems(name, fig):
    """Titles wider than the figure (cut at its edges) and legends over bars."""
    from matplotlib.transforms import Bbox

    renderer = _drawn(fig)
    width = fig.bbox.width
    problems = []
    for text, _ in title_rooms(fig):
        if not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < 0 or box.x1 > width:
            problems.append(
                f"{name}: title {text.get_text()!r} spans {box.x0:.0f}..{box.x1:.0f} of {width:.0f}"
            )
    visible = [ax for ax in fig.axes if ax.get_visible()]
    legends = [(ax, ax.get_legend()) for ax in visible if ax.get_legend()] + [(None, g) for g in fig.legends]
    for owner, legend in legends:
        area = legend.get_window_extent(renderer)
        bars = [(ax, bar) for ax in ([owner] if owner else visible) for bar in ax.patches]
        for ax, bar in bars:  # the visible part of a bar (a log axis sends a bar's foot to -inf)
            box = Bbox.intersection(bar.get_window_extent(renderer), ax.bbox)
            if box is not None and box.width > 0 and box.height > 0 and area.overlaps(box):
                problems.append(f"{name}: the legend covers a bar")
                break
    for ax in visible:  # no tick label hides its neighbour
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        if any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False)):
            problems.append(f"{name}: x tick labels overlap")
    for ax in fig.axes:
        for text in ax.texts:  # labels over bars stay readable: drawn above them on a background
            if text.get_text().startswith("median"):
                assert text.get_bbox_patch() is not None and text.get_zorder() > 2, name
    return problems


def test_every_title_fits_its_figure_and_no_legend_covers_bars(gold_dir, tmp_path, monkeypatch, gold_answers):
    """One-task runs make the narrowest figures (one panel), where long titles were cut at both ends
    ("lence per sample (SmolLM2-..."); bar charts had their legends over the bars."""
    from longicl.report.document import Report

    narrow = tmp_path / "narrow-run-with-a-long-directory-name-so-that-its-label-is-long"
    with FakeServer(gold_answers) as server:
        overrides = ("task=5", "split=dev", "limit=6", f"engine.base_url={server.url}", f"out_dir={narrow}")
        run(compose(*overrides))
    captured = []
    save = Report.figure

    def spy(self, name, fig, caption):
        captured.append((name, fig))
        return save(self, name, fig, caption)

    monkeypatch.setattr(Report, "figure", spy)
    report.build_report([narrow], tmp_path / "one")
    report.build_report([gold_dir, narrow], tmp_path / "two")
    names = {name for name, _ in captured}
    assert {"confidence", "accuracy", "tokens"} <= {n.split("_")[0] for n in names} | names, names
    one = an.load_run(narrow)
    others = [
        ("confusions", an.figure_confusions(one)),
        ("label_bias", an.figure_label_bias(one)),
        ("answer_lengths", an.figure_answer_lengths(one)),
        ("fits", an.figure_fits(an.data_overview([5]))),
    ]
    problems = [p for name, fig in [*captured, *others] for p in _layout_problems(name, fig)]
    assert not problems, problems


def test_the_pool_audit_says_when_the_model_is_too_weak_for_it(tmp_path):
    """A model no better than always answering one label contradicts gold by its own errors: the
    report says the audit means little there instead of presenting candidate label errors."""
    from fake_server import FixedAnswer

    out = tmp_path / "weak"
    with FakeServer(FixedAnswer("Sad")) as server:
        run(compose("task=5", "split=dev", "limit=12", f"engine.base_url={server.url}", f"out_dir={out}"))
    markdown = report.build_report([out], tmp_path / "r").markdown.read_text(encoding="utf-8")
    flat = " ".join(markdown.split())
    assert "The demo-pool audit below means little for openseek-5 (dev accuracy" in flat
    assert "always answering" in flat
