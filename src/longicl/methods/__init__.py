"""Answering techniques on top of in-context learning, each switched in the method settings
(hydra group ``method``; docs/architecture.md: the five meanings of "method").

- `structured`: constrained decoding (vLLM ``structured_outputs``: choice / regex);
- `scoring`: label scores from the first answer token's log-probabilities;
- `calibration`: per-label bias fitted on dev (batch calibration, maximum likelihood);
- `voting`: self-consistency across prompt variants (majority or probability-weighted);
- `thinking`: Qwen3 thinking budget and the follow-up when it runs out;
- `programs`: the classical engine as program checker (tasks 1, 3, 4) or extra voter (2, 5, 6);
- `report`: what run.json and calibration.json record about them.

`longicl.annotators.IclAnnotator` applies them to one sample; docs/methods.md explains each one, its
cost, when it helps, and its compliance with the challenge's rules.
"""

from longicl.methods.calibration import Calibration
from longicl.methods.report import MethodTally, task_report
from longicl.methods.scoring import label_logprobs
from longicl.methods.structured import FIELD_STYLES, constraint_for, structured_outputs_for
from longicl.methods.voting import Vote, VoteResult, vote

__all__ = [
    "FIELD_STYLES",
    "Calibration",
    "MethodTally",
    "Vote",
    "VoteResult",
    "constraint_for",
    "label_logprobs",
    "structured_outputs_for",
    "task_report",
    "vote",
]
