"""Joining or starting Ray, the same way for every stage (Ray plumbing only), and the CPU
shares of actors and training workers (`cpu_share`).

RAY_ADDRESS (a cluster, or a job started with `ray job submit`) wins; otherwise a local
cluster starts on this machine, bound to loopback, with its dashboard (on 127.0.0.1, a free
port the OS picks: two raysys commands can run at once): Ray Train's PlacementGroupCleaner asks the State API
(`ray.util.state`), which the dashboard serves; without it, every training run printed
hundreds of "State API may be temporarily unavailable" warnings (and with a second Ray
instance on the machine, the State API client needs to be told which: see _local_cluster).
Work that runs no Ray Train (`without_training()`: the CLI's score, select, align, eval
and compare) starts its local cluster without the dashboard: about 5 CPU-seconds and 2 s
less per command. On a local cluster Ray Train's preemption watcher (an actor per run
that polls for node drains, which a one-machine cluster never has) is off.
Ray Data progress bars are off (raysys prints its own progress).

Where Ray's output goes follows raysys.console: with a log file (a CLI command without
--verbose), Ray's Python logging goes to the file, and so does every line Ray forwards
from its worker processes (their stdout and stderr: DeepSpeed, warnings, Ray's own worker
logs, the core worker's C++ error-level lines), the raylet's messages to the driver, and
the driver's own C++ stderr; only the lines a worker relays (raysys.console.relay) reach
the terminal. This swaps Ray's driver-side printer of worker output (the dispatcher in
`ray._private.ray_logging` and `ray._private.worker.print_to_stdstream`, not public APIs;
should they move, Ray prints as before and nothing is lost). Without a log (raysys as a
library), Ray prints its worker output and keeps its own logs at ERROR; with --verbose it
prints everything as usual.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Callable, Iterator

from raysys import console
from raysys.errors import RaysysError

_TRAINS = [True]  # whether this process's work may run Ray Train (see without_training)
_NO_DASHBOARD = [False]  # this process started a local cluster without the dashboard


@contextlib.contextmanager
def without_training() -> Iterator[None]:
    """Within it, a local cluster that ray_init starts has no dashboard (work that runs no
    Ray Train: its placement-group cleaner needs the dashboard's State API)."""
    _TRAINS[0] = False
    try:
        yield
    finally:
        _TRAINS[0] = True


def ray_init(num_cpus: int | None = None, *, training: bool = False) -> None:
    """Join RAY_ADDRESS's cluster or start a local one (once per process); `training`: the
    caller runs Ray Train (refused on a local cluster started without the dashboard)."""
    import ray

    if training and (not _TRAINS[0] or (ray.is_initialized() and _NO_DASHBOARD[0])):
        raise RuntimeError("Ray Train on a local cluster started without its dashboard (within without_training())")
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"  # never a stale `ray start` cluster found on disk
        logged = console.log_path() is not None
        if logged:  # Ray's console handler (made at `import ray`) gives way to the log before ray.init speaks;
            console.route_library_logs()  # ray.init(configure_logging=False) then leaves the "ray" logger alone
            logging.getLogger("ray").setLevel(logging.INFO)
        level = logging.INFO if console.verbose() else logging.ERROR
        if address != "local":
            ray.init(address=address, logging_level=level, configure_logging=not logged, log_to_driver=True)
        else:
            with _start_lock():
                kwargs, env = _local_cluster(num_cpus, dashboard=_TRAINS[0])
                with _cluster_env(env):
                    ray.init(address=address, logging_level=level, configure_logging=not logged,
                             log_to_driver=True, **kwargs)
                _NO_DASHBOARD[0] = not _TRAINS[0]
        if logged:
            _worker_output_to_log()
            console.capture_native_stderr()  # Ray core's own error-level lines in the driver
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.INFO if console.log_path() else logging.WARNING)
    console.route_library_logs()  # ray.init and Ray Data's import set up their own console handlers
    console.announce()


_KEEPING = [0]  # depth of keep_actors() in this process
_RELEASE: list[Callable[[], None]] = []  # what ends the kept actors (raysys.actors registers its pool)


@contextlib.contextmanager
def keep_actors() -> Iterator[None]:
    """Within it (a command, a loop's trial), the driver keeps its actor pool between
    stage calls; at its end, and outside it after every call, the pool is released, so
    that no idle actor holds CPUs or GPUs another driver on the cluster waits for."""
    _KEEPING[0] += 1
    try:
        yield
    finally:
        _KEEPING[0] -= 1
        if not _KEEPING[0]:
            release_actors()


def keeping_actors() -> bool:
    return _KEEPING[0] > 0


def release_actors() -> None:
    """End the kept actors now: before handing the CPUs and GPUs to others (training
    workers, Tune trials)."""
    for release in _RELEASE:
        release()


def on_release(release: Callable[[], None]) -> None:
    """`release` runs at release_actors(), and so when the outermost keep_actors() ends."""
    if release not in _RELEASE:
        _RELEASE.append(release)


API_SERVER = "RAY_API_SERVER_ADDRESS"


def _local_cluster(num_cpus: int | None, dashboard: bool = True) -> tuple[dict, dict[str, str]]:
    """ray.init's arguments for a local cluster (its dashboard on loopback, on a free port
    the OS picks, or none) and the environment its processes get (_cluster_env): Ray
    Train's preemption watcher off; OpenMP threads that sleep when they wait
    (OMP_WAIT_POLICY=PASSIVE: torch's threads otherwise spin on cores that other processes
    need, and a machine shared by two commands, a loop's trials or an actor pool beside
    training spent up to twice the CPU; alone it changes nothing measurable); and the
    dashboard's address as RAY_API_SERVER_ADDRESS.
    Without the latter, the State API client in a worker
    looks for "the" Ray instance on the machine and fails when there are two (another
    raysys command, a `ray start` head): "Found multiple active Ray instances". The OS's
    choice (not "8265 or the next free one") keeps two raysys commands started at the same
    moment from both picking the same port; ray_init also starts one local cluster at a
    time on a machine (a file lock)."""
    env = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "OMP_WAIT_POLICY": "PASSIVE"}
    if not dashboard:
        return {"num_cpus": num_cpus, "include_dashboard": False}, env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ({"num_cpus": num_cpus, "include_dashboard": True, "dashboard_host": "127.0.0.1",
             "dashboard_port": port}, {**env, API_SERVER: f"http://127.0.0.1:{port}"})


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """One local cluster starting at a time on this machine (others wait their turn)."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"raysys-ray-start-{os.getuid()}.lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _cluster_env(env: dict[str, str]) -> Iterator[None]:
    """`env` set while ray.init starts the local cluster's processes (they inherit it, and
    the workers inherit it from the raylet), then as it was: this process's own environment
    keeps no trace (a `ray job submit` it runs would otherwise follow it). A variable the
    user set keeps the user's value."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if old[k] is None or k == API_SERVER})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_output_to_log() -> None:
    """Every forwarded worker line to the log file, relayed lines to the terminal."""
    try:
        import ray._private.worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        filter_autoscaler_events = ray_worker.filter_autoscaler_events
    except (ImportError, AttributeError):  # Ray moved them: Ray keeps printing worker output itself
        return

    def handle(data: dict) -> None:
        pid = data.get("pid")
        name = data.get("actor_name") or data.get("task_name") or ""
        who = f"({name} pid={pid})".replace("( ", "(") if pid not in ("raylet", "autoscaler") else f"({pid})"
        lines = data.get("lines", [])
        if pid == "autoscaler":  # its status report every few seconds: only its events, as Ray prints them
            lines = list(filter_autoscaler_events(lines))
        for line in lines:
            if console.RELAY in line:
                console.relayed(line.split(console.RELAY, 1)[1])
            else:
                console.log_line(who, line, "stderr" if data.get("is_err") else "stdout")

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("raysys")  # a second ray.init in this process
    dispatcher.add_handler("raysys", handle)
    # the raylet's messages to the driver ("N PYTHON worker processes have been started",
    # a worker that died: the driver's task or actor call raises for those) come another way
    ray_worker.print_to_stdstream = lambda data, ignore_prefix=False: handle(data)


MIN_CPU = 0.25  # the smallest CPU share an actor or a training worker gets


def cpu_share(n: int, cpus: float, what: str) -> tuple[float, int]:
    """(CPUs per process, torch threads per process) for `n` actors or workers on `cpus`
    CPUs, one of which stays free for Ray Data's tasks; a RaysysError naming `what`
    ("2 scorer actor(s)") when they do not fit."""
    per = min(1.0, (cpus - 1) / n)
    if per < MIN_CPU:
        raise RaysysError(f"{what} need at least {cpus_needed(n):g} CPUs; the cluster has {cpus:g}")
    return per, max(1, int(cpus // n))


def cpus_needed(n: int) -> float:
    """The fewest CPUs that host `n` actors or workers (and Ray Data's tasks)."""
    return n * MIN_CPU + 1
