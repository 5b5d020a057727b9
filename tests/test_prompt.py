import pytest
from conftest import DATA_DIR, compose

from longicl.errors import UsageError
from longicl.prompt import ContextBuilder, PromptTemplate
from longicl.runner import prepare_tasks, settings_from_config
from longicl.selection import PromptBudget
from longicl.tokens import TokenCounter


@pytest.fixture(scope="module")
def counter():
    return TokenCounter()


@pytest.fixture(scope="module")
def sadness_run(counter):
    settings = settings_from_config(compose("task=5", "split=dev", "limit=20"))
    return prepare_tasks(settings, counter)[0]


def test_layout_static_first_query_last(sadness_run):
    builder, sample = sadness_run.builder, sadness_run.samples[0]
    plan = builder.plan(sample)
    system, user = plan.messages()
    assert system["role"] == "system" and sadness_run.data.definition in system["content"]
    assert user["content"].startswith(plan.static.text)
    assert user["content"].endswith(f"Input: {sample.input}\nOutput:")
    assert user["content"].index(plan.static.text) < user["content"].index(plan.dynamic_text)


def test_static_block_is_byte_identical_across_samples(sadness_run):
    plans = [sadness_run.builder.plan(s) for s in sadness_run.samples]
    assert len({p.static.sha256 for p in plans}) == 1
    assert len({p.dynamic_ids for p in plans}) > 1
    first = plans[0].messages()[1]["content"]
    for plan in plans[1:]:
        assert plan.messages()[1]["content"][: len(plan.static.text)] == first[: len(plan.static.text)]


def test_token_accounting_is_exact_by_parts(sadness_run, counter):
    plan = sadness_run.builder.plan(sadness_run.samples[3])
    assert plan.prompt_tokens == counter.count_chat(plan.messages())
    assert plan.icl_tokens >= 30_000
    assert plan.uncached_tokens < 2_000
    assert plan.shared_prefix_tokens + plan.uncached_tokens == plan.prompt_tokens


def test_no_query_among_its_own_demonstrations(sadness_run):
    for sample in sadness_run.samples:
        plan = sadness_run.builder.plan(sample)
        assert sample.id not in plan.demo_ids
        body = plan.static.text + plan.dynamic_text
        assert f"Input: {sample.input}\n" not in body


def test_same_config_same_prompt_bytes(counter):
    settings = settings_from_config(compose("task=6", "split=dev", "limit=3"))
    a = prepare_tasks(settings, counter)[0]
    b = prepare_tasks(settings, TokenCounter())[0]
    for sample in a.samples:
        assert a.builder.plan(sample).messages() == b.builder.plan(sample).messages()


def test_shrinking_for_context_overflow_never_goes_below_the_floor(sadness_run):
    builder, sample = sadness_run.builder, sadness_run.samples[0]
    small = builder.plan(sample, dynamic_ceiling=0, static_ceiling=10)
    assert small.dynamic_ids == () and small.icl_tokens >= 30_000
    assert small.prompt_tokens <= builder.plan(sample).prompt_tokens


def test_budget_below_the_rule_is_refused(sadness_run, counter):
    builder = ContextBuilder(
        spec=sadness_run.spec,
        definition="d",
        pool=sadness_run.split.pool,
        template=PromptTemplate.from_config(compose().prompt, sadness_run.spec),
        counter=counter,
        budget=PromptBudget(
            static_tokens=5_000, dynamic_tokens=100, min_icl_tokens=30_000, max_prompt_tokens=120_000
        ),
        strategy="hybrid",
        seed=0,
        enable_thinking=False,
    )
    with pytest.raises(UsageError, match="below the rule's 30000"):
        builder.plan(sadness_run.samples[0])


def test_labels_appear_in_the_format_instruction():
    from longicl.tasks import get_task

    template = PromptTemplate.from_config(compose().prompt, get_task(6))
    assert '"Y", "N"' in template.format_instruction
    assert DATA_DIR.is_dir()


def test_stop_sequence_is_the_start_of_a_new_demonstration():
    from longicl.tasks import get_task

    prompt = compose().prompt
    label = PromptTemplate.from_config(prompt, get_task(5))
    assert label.stop == ("\n\nInput:",)
    assert (label.input_prefix, label.answer_prefix) == ("Input:", "Output:")
    # The code template sets none: a stop string could cut a program.
    assert PromptTemplate.from_config(prompt, get_task(8)).stop == ()
    custom = {**prompt, "demo": "Q: {input}\nA: {output}", "separator": "\n---\n"}
    assert PromptTemplate.from_config(custom, get_task(5)).stop == ("\n---\nQ:",)
    assert PromptTemplate.from_config({**prompt, "stop": None}, get_task(5)).stop == ()
    assert PromptTemplate.from_config({**prompt, "stop": ["###"]}, get_task(5)).stop == ("###",)
    with pytest.raises(UsageError, match="prompt.stop"):
        PromptTemplate.from_config({**prompt, "stop": [""]}, get_task(5))
    with pytest.raises(UsageError, match="no text before"):
        PromptTemplate.from_config({**prompt, "demo": "{input} => {output}"}, get_task(5))


def test_stop_is_sent_unless_thinking(sadness_run):
    from longicl.annotators import MethodSettings, build_request

    plan = sadness_run.builder.plan(sadness_run.samples[0])
    off = build_request(
        sadness_run.spec, MethodSettings.defaults(), plan.messages(), plan.sample, stop=plan.stop
    )
    assert off.sampling["stop"] == ["\n\nInput:"]
    thinking = MethodSettings.defaults(enable_thinking=True)
    on = build_request(sadness_run.spec, thinking, plan.messages(), plan.sample, stop=plan.stop)
    assert "stop" not in on.sampling
