"""``dryrun``: builds every request and answers none; the runner writes the request bodies."""

from __future__ import annotations

from longicl.engines.base import ChatRequest, Completion, Engine


class DryRunEngine(Engine):
    name = "dryrun"
    answers = False

    def __init__(self, concurrency: int = 1, **_: object) -> None:
        self.concurrency = max(1, int(concurrency))

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(text=None, finish_reason="dryrun", usage={"prompt_tokens": request.prompt_tokens})
