"""The terminal and the log file (raysys.console): the progress bar's rate, time left and
how often it prints; the progress file a worker writes and the driver draws; where the
libraries' logging and warnings go with and without --verbose (in a fresh interpreter,
since logging is process-wide). The Ray side is checked on real runs in test_training.py,
test_pipeline.py, test_multinode.py and test_jobs.py."""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from raysys.console import Progress, ProgressFile, duration, read_progress, watch

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_and_time_left_are_measured_from_the_first_update():
    clock, out = Clock(), io.StringIO()
    bar = Progress("scoring", 100, "tasks", done=20, stream=out, tty=False, clock=clock)
    clock.t += 30  # start-up (actors loading the model): not part of the rate
    bar.update(30)
    assert bar.rate() == 0 and bar.left() == float("inf")
    clock.t += 10
    bar.update(50)  # 20 tasks in 10 s
    assert bar.rate() == pytest.approx(2.0) and bar.left() == pytest.approx(25.0)
    assert bar.line() == "  scoring: 50/100 tasks, 2 tasks/s, ~25 s left"


def test_counters_show_their_own_rate():
    clock, out = Clock(), io.StringIO()
    bar = Progress("training", 40, "steps", stream=out, tty=False, clock=clock)
    bar.update(4, **{"tokens/s per worker": 1000})
    clock.t += 4
    bar.update(12, **{"tokens/s per worker": 9000})
    assert bar.line() == "  training: 12/40 steps, 2 steps/s, 2000 tokens/s per worker, ~14 s left"


def test_off_a_terminal_a_long_stage_prints_about_ten_lines():
    clock, out = Clock(), io.StringIO()
    bar = Progress("scoring", 1000, "tasks", stream=out, tty=False, clock=clock, gap=10)
    for i in range(1, 1001):
        clock.t += 1
        bar.update(i)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("  scoring: 100/1000 tasks") and lines[-1].startswith("  scoring: 1000/1000 tasks")


def test_off_a_terminal_close_prints_the_last_state_once():
    clock, out = Clock(), io.StringIO()
    bar = Progress("evaluating", 50, "tasks", stream=out, tty=False, clock=clock, gap=10)
    bar.update(3)  # under a tenth: nothing yet
    assert out.getvalue() == ""
    bar.update(7)  # a tenth, but within `gap` seconds of nothing printed: the first line
    clock.t += 1
    bar.update(12)  # another tenth, 1 s later: waits
    bar.close()
    assert [ln.split(",")[0] for ln in out.getvalue().splitlines()] == ["  evaluating: 7/50 tasks",
                                                                        "  evaluating: 12/50 tasks"]


def test_on_a_terminal_one_line_is_redrawn_in_place():
    clock, out = Clock(), io.StringIO()
    bar = Progress("scoring", 4, "tasks", stream=out, tty=True, clock=clock)
    for i in range(1, 5):
        clock.t += 1
        bar.update(i)
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 5
    assert "|####################|" in text.splitlines()[-1] and "4/4 tasks 100%" in text


def test_duration():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0 s", "42 s", "3 min 05 s", "2 h 07 min"]
    assert duration(float("inf")) == "?"


def test_watch_draws_what_another_process_writes(tmp_path):
    path = tmp_path / "run" / "progress.json"
    out = io.StringIO()
    bar = Progress("training", 6, "steps", stream=out, tty=False, gap=0)
    writer = ProgressFile(path, every=0)
    assert read_progress(path) is None
    with watch(path, bar, "step", {"tokens": "tokens/s"}, every=0.02):
        for step in range(1, 7):
            writer.write(step=step, tokens=100 * step)
            time.sleep(0.06)
    assert read_progress(path) == {"step": 6, "tokens": 600}
    lines = out.getvalue().splitlines()
    assert lines and lines[-1].startswith("  training: 6/6 steps") and "tokens/s" in lines[-1]


def test_the_writer_writes_at_most_every_interval(tmp_path):
    path = tmp_path / "p.json"
    writer = ProgressFile(path, every=60)
    writer.write(step=1)
    writer.write(step=2)
    assert read_progress(path) == {"step": 1}
    writer.write(force=True, step=3)
    assert read_progress(path) == {"step": 3}


def test_a_failing_body_still_ends_the_bar(tmp_path):
    out = io.StringIO()
    bar = Progress("training", 4, "steps", stream=out, tty=True)
    with pytest.raises(RuntimeError), watch(tmp_path / "none.json", bar, "step", every=0.01):
        bar.update(1)
        raise RuntimeError("boom")
    assert out.getvalue().endswith("\n") and not [t for t in threading.enumerate() if t.name == "raysys-progress"]


SCRIPT = r"""
import logging, sys, warnings
from raysys import console
noisy = logging.getLogger("somelib")  # a library with its own console handler, like transformers or DeepSpeed
noisy.addHandler(logging.StreamHandler(sys.stderr))
noisy.propagate = False
noisy.setLevel(logging.INFO)
path = console.start_log({folder!r}, verbose={verbose})
print("started", path, file=sys.stderr)
noisy.info("somelib says hello")
logging.getLogger("ray.train").warning("State API may be temporarily unavailable")
warnings.warn("a future change", FutureWarning)
console.stage("scoring 3 of 3 tasks")
console.log_line("(RayTrainWorker pid=7)", "[rank0]: deepspeed chatter", "stderr")
console.relay("a line for the person")
console.capture_native_stderr()  # as ray_init does once Ray's core worker runs in this process
import os
os.write(2, b"[2026-11-29 21:40:41,090 E 6533 6533] core_worker.cc:2465: Actor with class name ...\n")
print("a stage after the capture", file=sys.stderr)
console.point_at_log()
"""


def _run(tmp_path: Path, verbose: bool) -> subprocess.CompletedProcess:
    code = textwrap.dedent(SCRIPT.format(folder=str(tmp_path / "work"), verbose=verbose))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_library_output_goes_to_the_log_and_the_terminal_keeps_raysys_lines(tmp_path):
    r = _run(tmp_path, verbose=False)
    log = tmp_path / "work" / "raysys.log"
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"started {log}", f"log: {log}", "scoring 3 of 3 tasks",
                                     "a stage after the capture",
                                     f"raysys: Ray's and the libraries' output of this run is in {log}"]
    assert r.stdout == "a line for the person\n"
    text = log.read_text()
    assert text.startswith("==== raysys ")
    for said in ("somelib INFO: somelib says hello", "ray.train WARNING: State API may be temporarily unavailable",
                 "FutureWarning: a future change", "(RayTrainWorker pid=7) stderr: [rank0]: deepspeed chatter",
                 "\n[2026-11-29 21:40:41,090 E 6533 6533] core_worker.cc:2465: Actor with class name ...\n"):
        assert said in text, (said, text)


def test_verbose_keeps_everything_on_the_terminal(tmp_path):
    r = _run(tmp_path, verbose=True)
    assert r.returncode == 0, r.stderr
    for said in ("somelib says hello", "State API may be temporarily unavailable", "FutureWarning: a future change",
                 "scoring 3 of 3 tasks", "core_worker.cc:2465", "a stage after the capture"):
        assert said in r.stderr, (said, r.stderr)
    assert "log:" not in r.stderr and not (tmp_path / "work").exists()


def test_no_log_file_before_anything_is_logged(tmp_path):
    code = f"from raysys import console; console.start_log({str(tmp_path / 'w')!r}); console.point_at_log()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and not (tmp_path / "w").exists()
