"""The OS sandbox for model-written code (issue 20): a hostile corpus, contained by the kernel.

Each hostile script runs through `sandbox.run_python` under every isolation this machine offers
(``bwrap`` and ``unshare``), with no Python-level guard at all: what holds here holds because of
the namespaces, the mounts, the environment allow-list and the rlimits. The tests judge from
outside (files that must not appear, a listener that must stay silent, a secret that must not come
back) and, where a test needs to know the attempt ran, from the script's own log. Only Python is
needed; the checker-level corpus (torch and triton) is at the end, marked ``kernels``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from longicl.errors import UsageError
from longicl.kernels import sandbox, supervisor
from longicl.kernels.sandbox import SandboxLimits, run_python

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = Path(__file__).resolve().parent / "kernel_candidates"
SECRET = "sk-sandbox-secret-" + uuid.uuid4().hex
BACKENDS = [name for name in ("bwrap", "unshare") if sandbox.probe(name) is None]

# Every hostile script starts with this: it refuses to run unless it is in a fresh PID namespace
# (a handful of processes in /proc), so that a broken sandbox never lets `kill -9 -1` or a fork
# bomb loose on the machine that runs the tests.
SAFETY = """
import os, sys
if len([p for p in os.listdir("/proc") if p.isdigit()]) > 20:
    print("NOT ISOLATED", file=sys.stderr)
    raise SystemExit(3)
"""


def run(backend: str, code: str, *, safety: bool = True, **limits: object) -> sandbox.ChildOutcome:
    source = (SAFETY if safety else "") + textwrap.dedent(code)
    options: dict = {"timeout_s": 30, "memory_mb": 1024, "device": "cpu", "isolation": backend, **limits}
    return run_python(source, SandboxLimits(**options))


def everything(outcome: sandbox.ChildOutcome) -> str:
    return outcome.log + json.dumps(outcome.result) + json.dumps(outcome.events)


@pytest.fixture(params=BACKENDS or [pytest.param("none", marks=pytest.mark.skip("no OS sandbox here"))])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def test_this_machine_offers_an_os_sandbox() -> None:
    """CI and this machine have bubblewrap or util-linux unshare with user namespaces."""
    if not sys.platform.startswith("linux"):
        pytest.skip("namespaces are Linux only")
    assert BACKENDS, {name: sandbox.probe(name) for name in ("bwrap", "unshare")}


# ------------------------------------------------------------------------------------------------
# secrets: the environment, the parent's environment, files the user can read
# ------------------------------------------------------------------------------------------------
def test_the_child_environment_is_an_allow_list(backend, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    outcome = run(
        backend,
        """
        print("ENV", sorted(os.environ), file=sys.stderr)
        print(dict(os.environ), file=sys.stderr)
        print(open("/proc/self/environ", "rb").read(), file=sys.stderr)
        print("HOME-IS-CWD", os.environ["HOME"] == os.getcwd(), file=sys.stderr)
        """,
    )
    assert outcome.returncode == 0, outcome.log
    assert "ENV [" in outcome.log and "HOME-IS-CWD True" in outcome.log, outcome.log
    assert SECRET not in everything(outcome)
    names = set(json.loads(outcome.log.split("ENV ", 1)[1].splitlines()[0].replace("'", '"')))
    assert names <= set(sandbox.CHILD_ENV_NAMES), names - set(sandbox.CHILD_ENV_NAMES)


def test_no_other_process_is_visible_so_no_parent_environment(backend, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    outcome = run(
        backend,
        """
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print("PIDS", len(pids), file=sys.stderr)
        for pid in pids + [os.getppid()]:
            for what in ("environ", "cmdline"):
                try:
                    data = open(f"/proc/{pid}/{what}", "rb").read()
                    print(pid, what, len(data), b"OPENAI_API_KEY" in data, b"pytest" in data, file=sys.stderr)
                except OSError as exc:
                    print(pid, what, "refused", exc, file=sys.stderr)
        """,
    )
    assert "PIDS" in outcome.log, outcome.log
    assert int(outcome.log.split("PIDS ", 1)[1].split()[0]) <= 4  # the sandbox's init, us, maybe a reaper
    assert SECRET not in everything(outcome)
    assert " True" not in outcome.log  # neither the key's name nor the test's command line anywhere


def test_files_the_user_can_read_are_out_of_sight(backend, tmp_path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text(SECRET)
    in_home = Path.home() / f".longicl-sandbox-test-{uuid.uuid4().hex}"
    in_home.write_text(SECRET)
    in_project = ROOT / f".longicl-sandbox-test-{uuid.uuid4().hex}"
    in_project.write_text(SECRET)
    try:
        outcome = run(
            backend,
            f"""
            import subprocess
            for path in {[str(outside), str(in_home), str(in_project)]!r}:
                try:
                    print("READ", path, open(path).read(), file=sys.stderr)
                except OSError as exc:
                    print("REFUSED", path, type(exc).__name__, file=sys.stderr)
                subprocess.run(["cat", path], stdout=sys.stderr, stderr=sys.stderr)
            print("HOME", sorted(os.listdir(os.path.expanduser("~"))), file=sys.stderr)
            """,
        )
    finally:
        in_home.unlink()
        in_project.unlink()
    assert outcome.log.count("REFUSED") == 3, outcome.log
    assert SECRET not in everything(outcome)


# ------------------------------------------------------------------------------------------------
# programs: ctypes, a shell named like a compiler, gcc -o elsewhere; writes that must not land
# ------------------------------------------------------------------------------------------------
def targets(tmp_path: Path) -> list[Path]:
    tag = uuid.uuid4().hex
    return [
        tmp_path / f"escaped-{tag}",
        Path.home() / f".longicl-escaped-{tag}",
        ROOT / f".longicl-escaped-{tag}",
        Path("/tmp") / f"longicl-escaped-{tag}",
    ]


def assert_nothing_landed(paths: list[Path]) -> None:
    landed = [p for p in paths if p.exists() or p.is_symlink()]
    for path in landed:
        path.unlink()
    assert landed == []


def test_writes_outside_the_work_dir_do_not_land(backend, tmp_path) -> None:
    paths = targets(tmp_path)
    outcome = run(
        backend,
        f"""
        import ctypes, subprocess
        for i, path in enumerate({[str(p) for p in paths]!r}):
            try:
                open(path, "w").write("escaped")
                print("WROTE?", path, file=sys.stderr)
            except OSError as exc:
                print("REFUSED", path, type(exc).__name__, file=sys.stderr)
            subprocess.run(["sh", "-c", f"echo escaped > {{path}}"], stderr=sys.stderr)
            ctypes.CDLL(None).system(f"echo escaped > {{path}}.c".encode())
        open("inside.txt", "w").write("fine")
        print("INSIDE", open("inside.txt").read(), file=sys.stderr)
        """,
    )
    assert "INSIDE fine" in outcome.log, outcome.log  # its own work dir is writable
    assert_nothing_landed(paths + [p.with_name(p.name + ".c") for p in paths])


def test_a_shell_named_like_a_compiler_and_gcc_output_paths_stay_inside(backend, tmp_path) -> None:
    paths = targets(tmp_path)
    outcome = run(
        backend,
        f"""
        import shutil, subprocess
        os.symlink("/bin/sh", "evil-gcc")
        subprocess.run(["./evil-gcc", "-c", "echo escaped > {paths[0]}; echo SHELL-RAN >&2"], stderr=sys.stderr)
        open("x.c", "w").write("int main(void) {{ return 0; }}\\n")
        gcc = shutil.which("gcc") or shutil.which("cc")
        for path in {[str(p) for p in paths]!r}:
            subprocess.run([gcc, "x.c", "-o", path], stderr=sys.stderr)
        done = subprocess.run([gcc, "x.c", "-o", "inside.bin"], stderr=sys.stderr)
        print("COMPILED-INSIDE", done.returncode, os.path.exists("inside.bin"), file=sys.stderr)
        """,
    )
    assert "SHELL-RAN" in outcome.log, outcome.log  # the shell runs, and is contained
    assert "COMPILED-INSIDE 0 True" in outcome.log, outcome.log  # the C toolchain works inside
    assert_nothing_landed(paths)


# ------------------------------------------------------------------------------------------------
# network
# ------------------------------------------------------------------------------------------------
def test_no_network_not_even_the_host_loopback(backend) -> None:
    accepted: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(0.5)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        outcome = run(
            backend,
            f"""
            import socket, subprocess
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"python")
                print("CONNECTED", file=sys.stderr)
            except OSError as exc:
                print("REFUSED", type(exc).__name__, file=sys.stderr)
            code = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'sub')"
            subprocess.run([sys.executable, "-c", code], stderr=sys.stderr)
            print("DONE", file=sys.stderr)
            """,
        )
    finally:
        stop.set()
        thread.join()
        server.close()
    assert "REFUSED" in outcome.log and "DONE" in outcome.log, outcome.log
    assert accepted == []


# ------------------------------------------------------------------------------------------------
# the parent, processes, memory, output
# ------------------------------------------------------------------------------------------------
def test_killing_the_parent_or_everything_still_gets_a_report(backend) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        outcome = run(
            backend,
            """
            import signal, subprocess
            print("ATTEMPT", file=sys.stderr, flush=True)
            for pid in (os.getppid(), 1):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError as exc:
                    print("REFUSED", pid, exc, file=sys.stderr, flush=True)
            subprocess.run(["kill", "-9", "-1"])
            os.kill(-1, signal.SIGKILL)
            """,
        )
        assert "ATTEMPT" in outcome.log and not outcome.timed_out, outcome.log
        assert outcome.returncode != 0  # it killed itself; we are here to say so
        assert bystander.poll() is None  # nothing outside the sandbox was hit
    finally:
        bystander.kill()
        bystander.wait()


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            found.add(kid)
            todo.append(kid)
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def test_the_sandbox_dies_with_its_parent(backend, tmp_path) -> None:
    """The checker's process is killed (SIGKILL: no clean-up runs): the sandboxed code goes too."""
    script = tmp_path / "parent.py"
    script.write_text(
        "from longicl.kernels.sandbox import SandboxLimits, run_python\n"
        "print('started', flush=True)\n"
        "run_python('import os, time\\nos.fork()\\ntime.sleep(120)\\n',"
        f" SandboxLimits(timeout_s=300, device='cpu', isolation={backend!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout.readline().strip() == "started"
        scripts: set[int] = set()
        for _ in range(300):  # until the sandboxed script and its fork run (at most ~30 s)
            scripts = {p for p in descendants(parent.pid) if cmdline(p).endswith(b"/main.py\0")}
            if len(scripts) >= 2:
                break
            threading.Event().wait(0.1)
        assert len(scripts) == 2, scripts
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):  # the kernel takes the namespace down (at most ~10 s)
        scripts = {p for p in scripts if running(p)}
        if not scripts:
            break
        threading.Event().wait(0.1)
    assert scripts == set()


def test_a_fork_bomb_is_contained(backend) -> None:
    outcome = run(
        backend,
        """
        import time
        print("BOMB", file=sys.stderr, flush=True)
        children = 0
        for _ in range(100000):
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
            except OSError as exc:
                print("STOPPED AT", children, type(exc).__name__, file=sys.stderr, flush=True)
                break
        """,
        timeout_s=20,
        memory_mb=16384,  # resident memory counts each forked copy; let the process limit act first
    )
    assert "BOMB" in outcome.log and not outcome.timed_out, outcome.log
    if os.getuid() == 0:  # the kernel exempts uid 0 from RLIMIT_NPROC: the watchdog's count acts
        assert outcome.processes_killed or "STOPPED AT" in outcome.log, outcome
    else:
        assert "STOPPED AT" in outcome.log, outcome.log  # RLIMIT_NPROC, not the timeout, stopped it
        assert int(outcome.log.split("STOPPED AT ", 1)[1].split()[0]) <= sandbox.DEFAULT_MAX_PROCESSES


@pytest.mark.parametrize("where", ["python", "subprocess"])
def test_memory_exhaustion_is_contained(backend, where) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n"
    code = f"""
    import subprocess
    print("HOG", file=sys.stderr, flush=True)
    hog = {hog!r}
    if {where!r} == "python":
        exec(hog)
    else:
        print("CHILD EXIT", subprocess.run([sys.executable, "-c", hog]).returncode, file=sys.stderr)
    """
    outcome = run(backend, code, memory_mb=512)
    assert "HOG" in outcome.log, outcome.log
    assert "MemoryError" in outcome.log or "CHILD EXIT" in outcome.log or outcome.memory_killed, outcome.log
    assert outcome.peak_rss_mb < 2048


def test_an_oversize_result_is_a_failure_not_a_parse(backend) -> None:
    outcome = run(
        backend,
        """
        import json
        print(json.dumps({"event": "result", "stage": "passed", "pad": "x" * (8 << 20)}), flush=True)
        sys.stderr.write("y" * (8 << 20))
        """,
        max_result_bytes=1 << 16,
    )
    assert outcome.result is None and outcome.oversize, outcome.error
    assert "larger than" in (outcome.error or "")
    assert len(outcome.log) <= SandboxLimits().max_log_chars + 1


def test_limits_and_namespaces_are_in_place(backend) -> None:
    outcome = run(
        backend,
        """
        import resource
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
            print("LIMIT", name, resource.getrlimit(getattr(resource, name))[1], file=sys.stderr)
        caps = [ln for ln in open("/proc/self/status") if ln.startswith(("CapEff", "CapBnd", "NoNewPrivs"))]
        print("CAPS", " ".join(ln.split()[1] for ln in caps), file=sys.stderr)
        print("ROOT", sorted(os.listdir("/")), file=sys.stderr)
        """,
    )
    limits = dict(ln.split()[1:3] for ln in outcome.log.splitlines() if ln.startswith("LIMIT"))
    assert len(limits) == 5 and all(int(v) > 0 for v in limits.values()), outcome.log
    cap_eff, cap_bnd, _no_new_privs = outcome.log.split("CAPS ", 1)[1].split()[:3]
    assert int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0, outcome.log  # no capability, even inside


def test_kernel_settings_cannot_be_written(backend) -> None:
    """Run by root, the sandbox's uid 0 is the host's: /proc/sys would be writable by mode alone."""
    outcome = run(
        backend,
        """
        for path in ("/proc/sys/kernel/printk_ratelimit", "/proc/sys/vm/overcommit_ratio"):
            value = open(path).read()
            try:
                with open(path, "w") as fh:
                    fh.write(value)  # the same value: harmless even if it went through
                print("WROTE", path, file=sys.stderr)
            except OSError as exc:
                print("REFUSED", path, exc.errno, file=sys.stderr)
        """,
    )
    assert outcome.log.count("REFUSED") == 2 and "WROTE" not in outcome.log, outcome.log


def test_the_python_hooks_are_not_what_holds() -> None:
    """`run_python` has no Python-level guard: the scripts above ran without any."""
    assert not hasattr(sandbox, "_audit") and "addaudithook" not in sandbox.BOOT


# ------------------------------------------------------------------------------------------------
# choosing the isolation; GPU device nodes
# ------------------------------------------------------------------------------------------------
def test_without_any_sandbox_checks_are_refused_in_one_line_unless_opted_out(monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "probe", lambda name: f"{name} is not installed")
    with pytest.raises(UsageError) as refused:
        sandbox.resolve_isolation("auto")
    message = str(refused.value)
    assert "\n" not in message and "bubblewrap" in message and "kernels.sandbox=none" in message
    with pytest.raises(UsageError):
        sandbox.resolve_isolation("bwrap")
    assert sandbox.resolve_isolation("none") == "none"
    with pytest.raises(UsageError, match="kernels.sandbox"):
        sandbox.resolve_isolation("chroot")


def test_on_a_gpu_only_the_nvidia_device_nodes_and_driver_libraries_are_added(tmp_path) -> None:
    dev = tmp_path / "dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "sda", "kvm"):
        (dev / name).touch()
    (dev / "nvidia-caps" / "nvidia-cap1").touch()
    libs = tmp_path / "nvidia" / "lib64"
    libs.mkdir(parents=True)
    (libs / "libcuda.so.1").touch()
    (tmp_path / "other").mkdir()
    work = tmp_path / "work"
    gpu = sandbox.gpu_binds(dev_root=dev, lib_dirs=[libs, tmp_path / "other", tmp_path / "missing"])
    argv = sandbox.bwrap_argv(work, ["python", "x.py"], gpu=gpu)
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    dev_binds = sorted(src for flag, src, _ in pairs if flag == "--dev-bind")
    assert dev_binds == sorted(
        str(dev / n)
        for n in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps")
    )
    ro = [src for flag, src, _ in pairs if flag == "--ro-bind"]
    assert str(libs) in ro and str(tmp_path / "other") not in ro
    assert not any(str(dev / n) in argv for n in ("sda", "kvm"))
    cpu = sandbox.bwrap_argv(work, ["python", "x.py"], gpu=None)
    assert "--dev-bind" not in cpu and "--unshare-net" in cpu and "--die-with-parent" in cpu


# ------------------------------------------------------------------------------------------------
# the checker (torch and triton): honest kernels pass, hostile candidates are contained without
# the Python guards
# ------------------------------------------------------------------------------------------------
HOSTILE_CANDIDATE = """
import ctypes, os, subprocess, sys
import torch

def div(input, other, *, rounding_mode=None, out=None):
    print("ENV", dict(os.environ), file=sys.stderr)
    for path in {reads!r}:
        try:
            print("READ", open(path).read(), file=sys.stderr)
        except OSError as exc:
            print("REFUSED", path, file=sys.stderr)
    try:
        print("PARENT", open(f"/proc/{{os.getppid()}}/environ", "rb").read(), file=sys.stderr)
    except OSError:
        pass
    for path in {writes!r}:
        ctypes.CDLL(None).system(f"echo escaped > {{path}}".encode())
        subprocess.run(["sh", "-c", f"echo escaped > {{path}}.sh"])
    return torch.div(input, other)
"""


@pytest.mark.kernels
@pytest.mark.parametrize("isolation", BACKENDS)
def test_checker_contains_a_hostile_candidate_without_python_guards(isolation, tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from longicl.kernels.check import check_candidate

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    paths = targets(tmp_path)
    code = HOSTILE_CANDIDATE.format(reads=[str(secret)], writes=[str(p) for p in paths])
    task = (CANDIDATES / "div_task.txt").read_text()
    result = check_candidate(code, task, timeout_s=60, device="cpu", sandbox=isolation, python_guards=False)
    assert result.passed, result.to_dict()  # it ran to the end, and nothing escaped
    assert "REFUSED" in result.log and SECRET not in json.dumps(result.to_dict())
    assert_nothing_landed(paths + [p.with_name(p.name + ".sh") for p in paths])


@pytest.mark.kernels
@pytest.mark.parametrize("isolation", BACKENDS)
@pytest.mark.parametrize(
    ("cand", "task", "ref"),
    [
        ("div_triton", "div", "div_torch"),
        ("relu_triton", "relu", "relu_torch"),
        ("softmax_triton", "softmax", None),
    ],
)
def test_honest_kernels_pass_inside_without_python_guards(isolation, cand, task, ref) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from longicl.kernels.check import check_candidate

    result = check_candidate(
        (CANDIDATES / f"{cand}.py").read_text(),
        (CANDIDATES / f"{task}_task.txt").read_text(),
        (CANDIDATES / f"{ref}.py").read_text() if ref else None,
        timeout_s=60,
        device="cpu",
        sandbox=isolation,
        python_guards=False,
    )
    assert result.passed and result.error is None, result.to_dict()


@pytest.mark.kernels
def test_the_cli_reports_no_secret_of_its_environment(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    cand = tmp_path / "cand.py"
    cand.write_text(HOSTILE_CANDIDATE.format(reads=[], writes=[]))
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "longicl.kernels.check", str(cand), "--task-input",
           str(CANDIDATES / "div_task.txt"), "--timeout", "60", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["stage"] == "passed" and "ENV" in data["log"], data
    assert SECRET not in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------
# the setting: refused without a sandbox, an explicit opt-out recorded in run.json and the report
# ------------------------------------------------------------------------------------------------
def run_main(argv: list[str]) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("longicl_main_py", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


TASK8 = ["progress=false", f"data_dir={ROOT / 'data' / 'openseek'}", "task=8", "split=test", "limit=1"]
TASK8 += ["kernels.reference=false", "kernels.repair_rounds=0", "kernels.check.timeout=60"]


def test_a_task8_run_without_an_os_sandbox_is_refused_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sandbox, "probe", lambda name: f"{name} is not installed")
    out = tmp_path / "run"
    code = run_main([*TASK8, "engine.base_url=http://127.0.0.1:9/v1", f"out_dir={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "bubblewrap" in err and "kernels.sandbox=none" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(UsageError, match="kernels.sandbox"):
        from longicl.annotators.kernel import KernelSettings

        KernelSettings.from_config({"sandbox": "chroot"}, fill_missing=True)


def test_kernels_sandbox_none_is_recorded_in_run_json_and_stated_in_the_report(tmp_path, monkeypatch) -> None:
    from fake_server import FakeServer

    from longicl.report import main as report_main

    monkeypatch.setattr(sandbox, "probe", lambda name: f"{name} is not installed")
    reply = "```python\nimport torch\n\ndef nothing(x):\n    return x\n```"
    out, pages = tmp_path / "run", tmp_path / "report"
    with FakeServer(lambda body: reply, count_tokens=False) as server:
        argv = [*TASK8, "kernels.sandbox=none", f"engine.base_url={server.url}", f"out_dir={out}"]
        monkeypatch.setattr(sys, "argv", ["main.py", *argv])
        assert run_main(argv) in (0, 1)
    summary = json.loads((out / "run.json").read_text())
    assert summary["config"]["kernels"]["sandbox"] == "none"
    assert report_main([str(out), "-o", str(pages)]) == 0
    text = (pages / "technical_report.md").read_text()
    assert "without an OS sandbox (`kernels.sandbox=none`)" in text


def test_a_forged_result_from_the_child_is_a_failed_check_not_an_exception(monkeypatch) -> None:
    """The child's result is untrusted data: bad stage, kind or types never raise in the parent."""
    from longicl.kernels import check

    forged = [
        {"event": "result", "stage": "bogus", "kind": "exception"},
        {"event": "result", "stage": "run", "kind": "pwned", "outputs": "x", "notes": [1, {"a": 2}]},
        {"event": "result", "stage": ["passed"], "callable": "yes"},
        {"event": "result", "stage": "output", "kind": ["x"], "setup_seconds": "1", "error": 7},
        {"event": "result", "stage": "agree", "kind": "mismatch", "outputs": [{"shape": ["a", 2]}, 5]},
    ]
    for raw in forged:
        outcome = sandbox.ChildOutcome(result=raw, last_stage="nonsense", returncode=0)
        monkeypatch.setattr(check, "run_job", lambda *_a, outcome=outcome, **_k: outcome)
        result = check.check_candidate("def div(x):\n    return x\n", "", sandbox="none")
        assert not result.passed and result.kind in check.FAILURE_KINDS, result
        json.dumps(result.to_dict())
    assert result.outputs == [{"shape": [2], "dtype": None}]


def test_a_child_that_never_reads_its_input_cannot_block_the_parent(backend) -> None:
    outcome = run_python(
        "import time\ntime.sleep(60)\n",
        SandboxLimits(timeout_s=5, memory_mb=1024, device="cpu", isolation=backend),
        stdin=b"x" * (4 << 20),  # far more than a pipe holds
    )
    assert outcome.timed_out and outcome.returncode != 0


MEMFD_HOG = """
print("MEMFD", file=sys.stderr, flush=True)
held = 0
fds = []
try:
    for i in range(8):  # 8 x 128 MiB = 1 GiB in memfd, never resident in any process
        fd = os.memfd_create(f"m{i}")
        os.posix_fallocate(fd, 0, 128 << 20)
        fds.append(fd)
        held += 128
except OSError as exc:
    print("REFUSED", type(exc).__name__, file=sys.stderr, flush=True)
print("HELD", held, file=sys.stderr, flush=True)
import time
time.sleep(5)
"""


@pytest.mark.parametrize("layer", ["cgroup", "watcher"])
def test_memory_held_in_memfd_counts_against_the_limit(backend, layer, monkeypatch) -> None:
    if layer == "watcher":
        monkeypatch.setattr(supervisor, "CGROUPS", False)
    elif supervisor.cgroup_support() is not None:
        pytest.skip(f"no cgroup here: {supervisor.cgroup_support()}")
    outcome = run(backend, MEMFD_HOG, memory_mb=300)
    assert "MEMFD" in outcome.log, outcome.log
    assert "HELD 1024" not in outcome.log, outcome.log
    assert outcome.memory_killed or "REFUSED" in outcome.log, outcome


@pytest.mark.parametrize("layer", ["cgroup", "watcher"])
def test_a_thread_bomb_is_contained(backend, layer, monkeypatch) -> None:
    if layer == "watcher":
        monkeypatch.setattr(supervisor, "CGROUPS", False)
    elif supervisor.cgroup_support() is not None:
        pytest.skip(f"no cgroup here: {supervisor.cgroup_support()}")
    outcome = run(
        backend,
        """
        import threading, time
        threading.stack_size(64 * 1024)
        stop = threading.Event()
        started = 0
        print("THREADS", file=sys.stderr, flush=True)
        for _ in range(1000):
            try:
                threading.Thread(target=stop.wait, daemon=True).start()
                started += 1
            except BaseException as exc:
                print("STOPPED AT", started, type(exc).__name__, file=sys.stderr, flush=True)
                break
            if started % 100 == 0:
                time.sleep(0.5)  # give the watcher a chance to look (it polls)
        print("STARTED", started, file=sys.stderr, flush=True)
        time.sleep(5)
        """,
        max_processes=64,
    )
    assert "THREADS" in outcome.log and not outcome.timed_out, outcome.log
    assert "STARTED 1000" not in outcome.log, outcome.log
    if "STOPPED AT" in outcome.log:
        assert int(outcome.log.split("STOPPED AT ", 1)[1].split()[0]) <= 64
    else:
        assert outcome.processes_killed, outcome
