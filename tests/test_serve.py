"""longicl.serve: the vLLM command lines of llm_config.yaml, and start/status/stop without a GPU.

The start/stop tests put a fake ``vllm`` executable on PATH that serves tests/fake_server.py on the
port it is given, so the real process handling (own session, marker, SIGTERM) runs end to end.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_server import FakeServer, FixedAnswer
from omegaconf import OmegaConf

from longicl import serve
from longicl.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CONFIG = ROOT / "llm_config.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tmp_path: Path, *, port: int, model: str | None = None, **engine_args: object) -> Path:
    """A copy of llm_config.yaml with another port (and model), interpolations kept."""
    cfg = OmegaConf.load(CONFIG)
    args = cfg.serve[0].engine_args
    args.port = port
    if model is not None:
        args.model = model
    for key, value in engine_args.items():
        args[key] = value
    path = tmp_path / "llm_config.yaml"
    OmegaConf.save(cfg, path)
    return path


def _model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "Qwen3-4B"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3", "rope_theta": 1000000}))
    return model


def _fake_vllm(bin_dir: Path, body: str | None = None) -> None:
    """A `vllm` executable: `vllm serve MODEL --port N ...` serves the fake server until SIGTERM."""
    bin_dir.mkdir(exist_ok=True)
    script = body or textwrap.dedent(
        f"""
        import signal, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from fake_server import FakeServer, FixedAnswer
        args = sys.argv[1:]
        def opt(name, default=None):
            return args[args.index(name) + 1] if name in args else default
        server = FakeServer(FixedAnswer("OK"), model=opt("--served-model-name", "x"), port=int(opt("--port")),
                            max_model_len=int(opt("--max-model-len", 131072)), count_tokens=False)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.start()
        print("fake vllm listening", flush=True)
        while True:
            time.sleep(0.5)
        """
    )
    path = bin_dir / "vllm"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(0o755)


def _argv(capsys, *args: str) -> list[str]:
    assert serve.main(["command", "--config", str(CONFIG), *args]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    return shlex.split(line)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# ------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------
def test_default_profile_command(capsys, monkeypatch) -> None:
    monkeypatch.setenv("QWEN3_4B_PATH", "/data/weights/Qwen3-4B")
    argv = _argv(capsys)
    assert argv[argv.index("vllm") :][:3] == ["vllm", "serve", "/data/weights/Qwen3-4B"]
    rope = json.loads(_flag(argv, "--hf-overrides"))["rope_parameters"]
    assert rope == {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
        "rope_theta": 1000000,
    }
    assert _flag(argv, "--max-model-len") == "131072"
    assert _flag(argv, "--port") == "2026"
    assert _flag(argv, "--served-model-name") == "Qwen3-4B"
    assert _flag(argv, "--max-num-batched-tokens") == "16384"
    assert _flag(argv, "--reasoning-parser") == "qwen3"
    for flag in ("--enable-prefix-caching", "--enable-chunked-prefill", "--enable-prompt-tokens-details"):
        assert flag in argv
    assert "--rope-scaling" not in argv and not any(a.startswith("--no-") for a in argv)


def test_native32k_profile_command(capsys, monkeypatch) -> None:
    monkeypatch.delenv("QWEN3_4B_PATH", raising=False)
    argv = _argv(capsys, "--profile", "native32k")
    assert "/models/Qwen3-4B" in argv  # the default when QWEN3_4B_PATH is unset
    assert "--hf-overrides" not in argv and "yarn" not in " ".join(argv)
    assert _flag(argv, "--max-model-len") == "32768"
    assert _flag(argv, "--port") == "2026" and "--enable-prefix-caching" in argv


def test_unknown_profile_is_one_line(capsys) -> None:
    assert serve.main(["command", "--config", str(CONFIG), "--profile", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "profiles: default, native32k" in err[0]


def test_max_model_len_beyond_yarn_reach_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, port=2026, max_model_len=262144)
    with pytest.raises(UsageError, match="exceeds YaRN's reach"):
        serve.load_spec(path)


def test_engine_flags_mapping() -> None:
    flags = serve.engine_flags(
        {
            "model": "m",
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "x": None,
            "compilation_config": {"level": 3},
            "allowed_origins": ["a", "b"],
            "max_num_seqs": 8,
        }
    )
    assert flags == [
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--compilation-config",
        '{"level": 3}',
        "--allowed-origins",
        "a",
        "b",
        "--max-num-seqs",
        "8",
    ]


@pytest.mark.parametrize("profile", ["default", "native32k"])
def test_flagscale_copy_keeps_json_args_whole(tmp_path: Path, profile: str) -> None:
    spec = serve.load_spec(CONFIG, profile)
    path = serve.write_flagscale_config(spec, tmp_path)
    doc = OmegaConf.to_container(OmegaConf.load(path))
    assert "profiles" not in doc and doc["action"] == "run" and doc["experiment"]["task"]["type"] == "serve"
    entry = doc["serve"][0]
    assert entry["engine"] == "vllm" and entry["serve_id"] == "vllm_model"
    args = entry["engine_args"]
    assert not any(isinstance(v, dict) for v in args.values())  # FlagScale would flatten a mapping
    assert args["max_model_len"] == (131072 if profile == "default" else 32768)
    assert ("hf_overrides" in args) == (profile == "default")
    if profile == "default":
        assert json.loads(args["hf_overrides"])["rope_parameters"]["factor"] == 4.0
    assert doc["experiment"]["exp_dir"] == str(tmp_path.resolve() / "flagscale")


# ------------------------------------------------------------------------------------------------
# status, start, stop
# ------------------------------------------------------------------------------------------------
def test_status_with_nothing_running(tmp_path: Path, capsys) -> None:
    path = _config(tmp_path, port=_free_port())
    code = serve.main(["status", "--config", str(path), "--out-dir", str(tmp_path / "serve")])
    out = capsys.readouterr().out
    assert code == serve.EXIT_NOT_ANSWERING
    assert "no answer" in out and "none recorded" in out


def test_stop_with_nothing_started(tmp_path: Path, capsys) -> None:
    assert serve.main(["stop", "--out-dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_start_without_vllm_fails_in_one_line(tmp_path: Path) -> None:
    path = _config(tmp_path, port=_free_port(), model=str(_model_dir(tmp_path)))
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "longicl.serve",
            "start",
            "--config",
            str(path),
            "--out-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PATH": str(empty)},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error: vllm is not installed (pip install -e '.[serve]' on a GPU machine); no server was started"
    ]
    assert not (tmp_path / "s" / serve.STATE_FILE).exists()


def test_start_without_gpu_fails_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    _fake_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(serve.lifecycle, "detect_gpu", lambda: None)
    path = _config(tmp_path, port=_free_port(), model=str(_model_dir(tmp_path)))
    assert (
        serve.main(["start", "--config", str(path), "--out-dir", str(tmp_path / "s"), "--launcher", "vllm"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no GPU found")


def test_start_status_stop(tmp_path: Path, monkeypatch, capsys) -> None:
    _fake_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    port = _free_port()
    path = _config(tmp_path, port=port, model=str(_model_dir(tmp_path)))
    out_dir = tmp_path / "serve"
    common = ["--config", str(path), "--out-dir", str(out_dir)]

    assert serve.main(["start", *common, "--skip-gpu-check", "--launcher", "vllm", "--timeout", "60"]) == 0
    assert "ready: http://127.0.0.1:" in capsys.readouterr().out
    state = json.loads((out_dir / serve.STATE_FILE).read_text())
    assert (out_dir / serve.PID_FILE).read_text().strip() == str(state["pid"])
    assert state["argv"][1:4] == ["serve", str(tmp_path / "Qwen3-4B"), "--served-model-name"]
    assert serve.marked_pids(state["marker"]) == [state["pid"]]

    assert serve.main(["status", *common]) == 0
    out = capsys.readouterr().out
    assert "answers (models: Qwen3-4B, max_model_len 131,072)" in out and "alive" in out

    assert serve.main(["start", *common, "--skip-gpu-check"]) == 0  # already answering: nothing new
    assert "nothing started" in capsys.readouterr().out

    assert serve.main(["stop", *common, "--grace", "10"]) == 0
    assert "stopped the server" in capsys.readouterr().out
    assert serve.marked_pids(state["marker"]) == []
    assert not (out_dir / serve.STATE_FILE).exists()
    assert serve.main(["status", *common]) == serve.EXIT_NOT_ANSWERING


def test_early_exit_reports_the_log(tmp_path: Path, monkeypatch, capsys) -> None:
    _fake_vllm(
        tmp_path / "bin",
        'import sys\nprint("RuntimeError: CUDA error: no kernel image", flush=True)\nsys.exit(1)\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    path = _config(tmp_path, port=_free_port(), model=str(_model_dir(tmp_path)))
    out_dir = tmp_path / "serve"
    code = serve.main(
        [
            "start",
            "--config",
            str(path),
            "--out-dir",
            str(out_dir),
            "--skip-gpu-check",
            "--launcher",
            "vllm",
            "--timeout",
            "30",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "exited during startup (exit code 1)" in err[0]
    assert str(out_dir / serve.LOG_FILE) in err[0] and "no kernel image" in err[0]
    assert not (out_dir / serve.STATE_FILE).exists()


def test_stop_never_signals_a_process_it_did_not_start(tmp_path: Path, capsys) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / serve.STATE_FILE).write_text(json.dumps({"pid": stranger.pid, "marker": "f" * 24}))
        assert serve.main(["stop", "--out-dir", str(tmp_path), "--grace", "1"]) == 0
        assert "not running any more" in capsys.readouterr().out
        time.sleep(0.2)
        assert stranger.poll() is None  # still alive: it does not carry the marker
    finally:
        stranger.kill()
        stranger.wait()


# ------------------------------------------------------------------------------------------------
# the main.py hook
# ------------------------------------------------------------------------------------------------
def _main_cfg(path: Path, url: str, out_dir: Path, autostart: bool = True, engine: str = "openai"):
    return OmegaConf.create(
        {
            "engine": {"name": engine, "base_url": url},
            "serve": {
                "autostart": autostart,
                "config": str(path),
                "profile": "default",
                "out_dir": str(out_dir),
            },
        }
    )


def test_ensure_server_does_nothing_unless_needed(tmp_path: Path) -> None:
    with FakeServer(FixedAnswer("OK"), count_tokens=False) as server:
        path = _config(tmp_path, port=server.port)
        assert serve.ensure_server(_main_cfg(path, server.url, tmp_path, autostart=False)) is None
        assert serve.ensure_server(_main_cfg(path, server.url, tmp_path, engine="dryrun")) is None
        assert serve.ensure_server(_main_cfg(path, server.url, tmp_path)) is None  # one answers already


def test_ensure_server_errors(tmp_path: Path, monkeypatch) -> None:
    port = _free_port()
    path = _config(tmp_path, port=port, model=str(_model_dir(tmp_path)))
    with pytest.raises(UsageError, match="is not the local server"):
        serve.ensure_server(_main_cfg(path, "http://10.1.2.3:2026/v1", tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="vllm is not installed"):
        serve.ensure_server(_main_cfg(path, f"http://127.0.0.1:{port}/v1", tmp_path))


def test_ensure_server_starts_and_stops(tmp_path: Path, monkeypatch) -> None:
    _fake_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(serve.lifecycle, "detect_gpu", lambda: "GPU 0: test double")
    port = _free_port()
    path = _config(tmp_path, port=port, model=str(_model_dir(tmp_path)))
    messages: list[str] = []
    handle = serve.ensure_server(
        _main_cfg(path, f"http://127.0.0.1:{port}/v1", tmp_path / "s"), messages.append
    )
    assert handle is not None and handle.alive()
    assert serve.probe(handle.base_url).answers and messages
    handle.stop(grace=10)
    assert not handle.alive() and not serve.probe(handle.base_url).answers


def test_autostart_starts_the_server_before_counting_in_its_tokens(tmp_path: Path, monkeypatch) -> None:
    """serve.autostart=true with model.tokenizer=server: the budgets are counted through the
    server that autostart starts, so it is started first (and stopped when the run ends)."""
    from conftest import compose

    from longicl.runner import run

    _fake_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(serve.lifecycle, "detect_gpu", lambda: "GPU 0: test double")
    port = _free_port()
    path = _config(tmp_path, port=port, model=str(_model_dir(tmp_path)))
    url = f"http://127.0.0.1:{port}/v1"
    result = run(
        compose(
            "task=5",
            "split=dev",
            "limit=2",
            "min_icl_tokens=2000",
            "model.tokenizer=server",
            f"engine.base_url={url}",
            "serve.autostart=true",
            f"serve.config={path}",
            f"serve.out_dir={tmp_path / 'serve'}",
            f"out_dir={tmp_path / 'out'}",
        )
    )
    records = [json.loads(x) for x in (tmp_path / "out" / "records" / "openseek-5.jsonl").open()]
    assert len(records) == 2 and all(r["requests"][0]["icl_tokens"] >= 2000 for r in records)
    assert result.summary["config"]["model"]["tokenizer"] == "server"
    assert not serve.probe(url).answers  # stopped with the run


def test_a_key_in_the_serving_config_stays_out_of_the_log_and_the_state_file(
    tmp_path: Path, monkeypatch
) -> None:
    _fake_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(serve.lifecycle, "detect_gpu", lambda: "GPU 0: test double")
    port = _free_port()
    secret = "sk-serving-secret-0123456789"
    path = _config(tmp_path, port=port, model=str(_model_dir(tmp_path)), api_key=secret)
    assert secret in serve.vllm_argv(serve.load_spec(path, "default"))  # the server itself is given it
    handle = serve.ensure_server(
        _main_cfg(path, f"http://127.0.0.1:{port}/v1", tmp_path / "s"), lambda _: None
    )
    try:
        assert handle is not None
        written = {p.name: p.read_text() for p in (tmp_path / "s").iterdir() if p.is_file()}
        assert serve.LOG_FILE in written and serve.STATE_FILE in written
        assert not [name for name, text in written.items() if secret in text]
        assert "--api-key $OPENAI_API_KEY" in written[serve.LOG_FILE]
        assert secret not in handle.argv
    finally:
        if handle is not None:
            handle.stop(grace=10)
