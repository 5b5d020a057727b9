"""``dryrun``: builds every request and answers none; the runner writes the request bodies."""

from __future__ import annotations

from longicl.config_values import load_defaults
from longicl.engines.base import ChatRequest, Completion, Engine


class DryRunEngine(Engine):
    name = "dryrun"
    answers = False

    def __init__(self, concurrency: int | None = None) -> None:
        if concurrency is None:  # built without its settings: conf/engine/dryrun.yaml's
            concurrency = load_defaults("engine", "dryrun")["concurrency"]
        self.concurrency = max(1, int(concurrency))

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(text=None, finish_reason="dryrun", usage={"prompt_tokens": request.prompt_tokens})
