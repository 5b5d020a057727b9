"""Analysis behind the notebooks and the technical report (``from longicl import analysis as an``).

The notebooks in ``notebooks/`` stay thin: they set parameters, call the functions here and show
what comes back. Everything that computes something lives in this package, one module per
subject, and is unit-tested (``tests/test_analysis.py``):

- `configs`: composing and running a configuration in process (`run_main`), the ``python main.py …``
  command that reproduces a run's config (`main_command`);
- `runs`: loading a run directory (`load_run`), per-task tables (`task_rows`, `method_rows`);
- `overview`: sizes, label distributions, token lengths and how many demonstrations fit in a
  budget (`data_overview`);
- `strategies`: a strategy x budget sweep and its cost per sample (`sweep`, `cost_rows`);
- `error_analysis`: confusion matrices, parse failures, the worst samples with the neighbours their
  prompts carried, answer lengths and label bias;
- `quality`: per-task confidence, calibration, agreement and the pool audit (`quality_rows`,
  `audit_rows`, reliability and coverage-accuracy figures), from `longicl.quality`;
- `submission`: a test run's submission.zip checked against the task files;
- `values`: `record_value` keeps numbers for the report in a JSON file next to the executed notebook;
- `figures`: matplotlib `Figure` objects (no pyplot state), shown by notebooks and saved by the report;
- `tables`, `stats`, `paths`, `engines`, `reference`: the small pieces the others share.

Tables (every ``*_rows`` function) are pandas DataFrames with explicit nullable dtypes (``string``,
``Int64``, ``Float64``): notebooks show them as they are; `Table.of` writes them as Markdown for the
report and `jsonable` as row dicts for `record_value`.

Every name is re-exported here, so ``an.<name>`` works for all of them.
"""

from __future__ import annotations

from longicl.analysis.configs import (
    CONFIG_GROUPS,
    chosen_overrides,
    compose,
    config_overrides,
    main_command,
    run_main,
    run_overrides,
    task_ids,
    task_override,
)
from longicl.analysis.engines import (
    ENGINE_WORDS,
    EngineTraits,
    EngineWords,
    cpu_engine,
    engine_answers,
    engine_available,
    engine_traits,
    engine_words,
    resolve_engine,
)
from longicl.analysis.error_analysis import (
    UNPARSED,
    answer_lengths,
    confusion_matrix,
    describe_sample,
    error_rows,
    label_bias,
    last_request,
    neighbour_agreement,
    neighbours,
    parse_failure_rows,
    parse_failures,
    worst_markdown,
    worst_samples,
)
from longicl.analysis.figures import (
    figure_accuracy,
    figure_answer_lengths,
    figure_confusions,
    figure_fits,
    figure_icl_floor,
    figure_label_bias,
    figure_label_distributions,
    figure_sweep_accuracy,
    figure_sweep_cost,
    figure_token_lengths,
    figure_tokens,
)
from longicl.analysis.overview import (
    Fit,
    TaskOverview,
    data_overview,
    fit,
    fit_rows,
    label_rows,
    overview_findings,
    overview_rows,
    prompt_config,
)
from longicl.analysis.paths import (
    CONF_DIR,
    DATA_DIR,
    NOTEBOOK_DIR,
    PROJECT_ROOT,
    REPORTS_DIR,
    project_path,
)
from longicl.analysis.quality import (
    audit_rows,
    figure_confidence_histogram,
    figure_coverage_accuracy,
    figure_reliability,
    has_quality,
    no_confidence_note,
    quality_of,
    quality_rows,
    quality_values,
)
from longicl.analysis.reference import (
    BEST_PUBLIC_ACCURACY,
    BEST_PUBLIC_SOURCE,
)
from longicl.analysis.runs import (
    METHOD_DESCRIPTIONS,
    RunData,
    classical_model,
    examples_by_id,
    load_run,
    method_rows,
    run_summary,
    side_models,
    task_method,
    task_rows,
    task_spec,
    task_thinking,
)
from longicl.analysis.stats import (
    mean,
    median,
    percentile,
    rounded,
)
from longicl.analysis.strategies import (
    SweepPoint,
    SweepResult,
    budget_overrides,
    cost_rows,
    dynamic_tokens,
    sweep,
    sweep_rows,
    sweep_summary,
)
from longicl.analysis.submission import (
    SubmissionCheck,
    check_submission,
    submission_markdown,
)
from longicl.analysis.tables import (
    Table,
    fmt,
    frame,
    plain,
    records,
)
from longicl.analysis.values import (
    VALUES,
    ValueStore,
    jsonable,
    read_values,
    record_value,
    set_values_file,
)

__all__ = [
    "BEST_PUBLIC_ACCURACY",
    "BEST_PUBLIC_SOURCE",
    "CONFIG_GROUPS",
    "CONF_DIR",
    "DATA_DIR",
    "ENGINE_WORDS",
    "EngineTraits",
    "EngineWords",
    "Fit",
    "METHOD_DESCRIPTIONS",
    "NOTEBOOK_DIR",
    "PROJECT_ROOT",
    "REPORTS_DIR",
    "RunData",
    "SubmissionCheck",
    "SweepPoint",
    "SweepResult",
    "Table",
    "TaskOverview",
    "UNPARSED",
    "VALUES",
    "ValueStore",
    "answer_lengths",
    "audit_rows",
    "budget_overrides",
    "check_submission",
    "chosen_overrides",
    "classical_model",
    "compose",
    "config_overrides",
    "confusion_matrix",
    "cost_rows",
    "cpu_engine",
    "data_overview",
    "describe_sample",
    "dynamic_tokens",
    "engine_answers",
    "engine_available",
    "engine_traits",
    "engine_words",
    "error_rows",
    "examples_by_id",
    "figure_accuracy",
    "figure_answer_lengths",
    "figure_confidence_histogram",
    "figure_confusions",
    "figure_coverage_accuracy",
    "figure_fits",
    "figure_icl_floor",
    "figure_label_bias",
    "figure_label_distributions",
    "figure_reliability",
    "figure_sweep_accuracy",
    "figure_sweep_cost",
    "figure_token_lengths",
    "figure_tokens",
    "fit",
    "fit_rows",
    "fmt",
    "frame",
    "has_quality",
    "no_confidence_note",
    "jsonable",
    "label_bias",
    "label_rows",
    "last_request",
    "load_run",
    "main_command",
    "mean",
    "median",
    "method_rows",
    "neighbour_agreement",
    "neighbours",
    "overview_findings",
    "overview_rows",
    "parse_failure_rows",
    "parse_failures",
    "percentile",
    "plain",
    "project_path",
    "prompt_config",
    "quality_of",
    "quality_rows",
    "quality_values",
    "read_values",
    "record_value",
    "records",
    "resolve_engine",
    "rounded",
    "run_main",
    "run_overrides",
    "run_summary",
    "set_values_file",
    "side_models",
    "submission_markdown",
    "sweep",
    "sweep_rows",
    "sweep_summary",
    "task_ids",
    "task_method",
    "task_override",
    "task_rows",
    "task_spec",
    "task_thinking",
    "worst_markdown",
    "worst_samples",
]
