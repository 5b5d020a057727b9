"""The competition's extension point: example selection, prompt building and annotation.

The challenge's baseline harness calls three functions, kept here with their signatures:

    select_examples(all_examples, task_description, text2annotate) -> list of examples
    build_prompt(task_description, text2annotate)                   -> chat messages
    annotate(input_prompt)                                          -> the annotation (a string)

They are implemented on the library (``src/longicl``), with the same settings as ``main.py``
(``conf/``): the examples they select and the messages they build are byte-identical to the
requests of a ``main.py`` run with the same config (``tests/test_method.py`` checks this).

This file is the place to try a new idea: change a function here, then score it on the dev
split with ``python method.py --task 5 --limit 40`` (see ``--help``). An idea that holds up
belongs in the library next (a selection strategy in ``src/longicl/selection/``, a prompt in
``conf/prompt/``, a method in ``src/longicl/annotators/``), where ``main.py`` runs it at scale
with caching, resumption and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from longicl.annotators import build_request
from longicl.cli import compose_config
from longicl.data import Example, load_task, split
from longicl.engines import ENGINES, Engine, build_engine
from longicl.errors import ExitCode, UsageError, run_command
from longicl.parse import parse_answer
from longicl.prompt import ContextBuilder, build_context
from longicl.runner import RunSettings, settings_from_config, token_counter
from longicl.tasks import TASKS, TaskSpec
from longicl.tokens import TokenCounter

ROOT = Path(__file__).resolve().parent
OVERRIDES: list[str] = []  # hydra overrides applied to conf/config.yaml, e.g. ["selection=bm25"]


@lru_cache(maxsize=1)
def settings() -> RunSettings:
    return settings_from_config(compose_config(ROOT / "conf", OVERRIDES))


_ENGINE: list[tuple[RunSettings, Engine]] = []  # the engine of the current settings, once launched


def engine() -> Engine:
    """The configured engine, launched once per settings (``engine=local`` starts its llama.cpp
    server here and stops it when the process exits)."""
    if not _ENGINE or _ENGINE[0][0] is not settings():
        built = build_engine(settings().engine)
        built.launch()
        atexit.register(built.shutdown)
        _ENGINE[:] = [(settings(), built)]
    return _ENGINE[0][1]


@lru_cache(maxsize=1)
def counter() -> TokenCounter:
    """Qwen's token counts, or the served model's (``model.tokenizer=server``), as the runner counts."""
    if settings().tokenizer == "server":
        return token_counter(settings(), engine())
    return TokenCounter(settings().tokenizer_path)


def task_for(task_description: str) -> TaskSpec:
    """The registry entry whose official Definition is ``task_description``."""
    wanted = " ".join(task_description.split())
    for spec in TASKS.values():
        data = load_task(spec, settings().data_dir)
        if " ".join(data.definition.split()) == wanted:
            return spec
    raise UsageError("task_description matches no task Definition in data_dir")


@lru_cache(maxsize=16)
def _builder(task_id: int, examples: tuple[Example, ...]) -> ContextBuilder:
    spec = TASKS[task_id]
    data = load_task(spec, settings().data_dir)
    return build_context(spec, data.definition, examples, settings(), counter())


def _as_examples(all_examples: Sequence[Any]) -> tuple[Example, ...]:
    """Accept the task file's dicts ({"id", "input", "output": [..]}) or `Example`s."""
    examples = []
    for item in all_examples:
        if isinstance(item, Example):
            examples.append(item)
        else:
            output = item.get("output")
            examples.append(
                Example(item["id"], item["input"], output[0] if isinstance(output, list) else output)
            )
    return tuple(examples)


_POOLS: dict[str, tuple[Example, ...]] = {}


def select_examples(all_examples: Sequence[Any], task_description: str, text2annotate: str) -> list[Example]:
    """Demonstrations for one input: the task's shared static block, then its nearest neighbours."""
    spec = task_for(task_description)
    pool = _as_examples(all_examples)
    _POOLS[spec.name] = pool
    plan = _builder(spec.id, pool).plan(Example("query", text2annotate))
    by_id = {ex.id: ex for ex in pool}
    return [by_id[i] for i in plan.demo_ids]


def build_prompt(task_description: str, text2annotate: str) -> list[dict[str, str]]:
    """Chat messages for one input, over the pool last given to `select_examples` (or all examples)."""
    spec = task_for(task_description)
    pool = _POOLS.get(spec.name) or load_task(spec, settings().data_dir).examples
    return _builder(spec.id, pool).plan(Example("query", text2annotate)).messages()


def annotate(input_prompt: list[dict[str, str]]) -> str:
    """Send the messages to the configured server and return the parsed annotation."""
    spec = task_for(input_prompt[0]["content"].split("\n\n")[0])
    served = engine()

    async def ask() -> str | None:
        await served.start()
        try:
            query = Example("query", input_prompt[-1]["content"])
            request = build_request(spec, settings().method, input_prompt, query)
            completion = await served.complete(request)
            return completion.text
        finally:
            await served.aclose()

    return parse_answer(spec, asyncio.run(ask())).value


def _evaluate(task_id: int, limit: int) -> float:
    """Score the three functions above on the dev split (sequential; for quick experiments)."""
    spec = TASKS[task_id]
    data = load_task(spec, settings().data_dir)
    parts = split(data, "dev", seed=settings().seed)
    pool = [{"id": ex.id, "input": ex.input, "output": [ex.output]} for ex in parts.pool]
    correct = 0
    samples = parts.samples[:limit]
    for sample in samples:
        select_examples(pool, data.definition, sample.input)
        answer = annotate(build_prompt(data.definition, sample.input))
        correct += int(answer == parse_answer(spec, sample.output).value)
        print(f"{sample.id}\t{answer!r}\tgold={sample.output!r}", flush=True)
    return correct / max(1, len(samples))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Score method.py's functions on the dev split.")
    parser.add_argument("--task", type=int, required=True, choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="settings as for main.py (longicl run --help), e.g. engine.base_url=http://host:2026/v1 or "
        "engine=local min_icl_tokens=3000 model.tokenizer=server",
    )
    args = parser.parse_args(argv)
    OVERRIDES.extend(command_overrides(args.task, args.overrides))
    return run_command(lambda: _report(args.task, args.limit))


def command_overrides(task_id: int, overrides: Sequence[str]) -> list[str]:
    """The overrides of ``--task N key=value ...``: the run's settings are those of ``main.py
    task=N``, so that only task N's limits apply (task 8's longer answers need no room in a
    small window such as engine=local's)."""
    given = any(o.split("=", 1)[0].lstrip("+~") == "task" for o in overrides)
    return [*([] if given else [f"task={task_id}"]), *overrides]


def check_language_model() -> None:
    """Refuse (one line) an engine whose replies are not a language model's answer to the prompt
    (``engine=dryrun``: no answer; ``engine=classical``: CPU annotators): method.py scores ICL."""
    name = settings().engine.name
    cls = ENGINES.get(name, where="engine")
    if not (cls.answers and cls.reads_prompts):
        raise UsageError(
            f"engine={name} gives no language-model answer, so method.py (in-context learning) has "
            "nothing to score: use engine=openai (a served model), engine=local or engine=ray"
        )


def _report(task_id: int, limit: int) -> int:
    check_language_model()
    accuracy = _evaluate(task_id, limit)
    print(f"dev accuracy on openseek-{task_id} ({limit} samples): {accuracy:.3f}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
