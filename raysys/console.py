"""The terminal and the log file: the one home of what raysys shows a person and where
everything else goes (no Ray here; raysys.cluster hands Ray's worker output to it).

The terminal gets a line per stage (`stage`), a live progress bar for long stages
(`Progress`), the command's summary (printed by the CLI) and real errors (exceptions,
which the CLI prints). Everything the libraries say (Python logging of Ray, DeepSpeed,
transformers, peft, torch, ...; `warnings`; the stdout and stderr of Ray's worker
processes) goes to `<folder>/raysys.log` once `start_log(folder)` was called: the file is
opened at the first record (a command that fails on its input writes none), its path is
printed once (`log: PATH`) before the first stage, and a command appends to it (a header
line per command). With `verbose`, nothing is redirected: everything stays on the terminal.

A Ray worker process (a Tune trial) that has a line for the person at the terminal prints
it with `relay`: a marked line, which the driver shows and every other worker line only
goes to the log. Progress of work done in another process (Ray Train's workers) travels
through a small JSON file (`ProgressFile` writes it, `watch` draws it).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

LOG_NAME = "raysys.log"
# Ray's own marker of worker lines meant for the user: Ray's printer strips it (so relayed
# lines look right with --verbose too) and raysys's keeps only the lines that carry it.
RELAY = ":info_message:"
_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class _State:
    path: Path | None = None  # the log file, once start_log ran without verbose
    verbose: bool = False
    announced: bool = False
    handler: logging.Handler | None = None
    native: bool = False  # file descriptor 2 goes to the log (capture_native_stderr)
    stdout: TextIO | None = None  # the terminal's stdout, for relayed lines (to_log may redirect sys.stdout)


_state = _State()


class _LogFile(logging.FileHandler):
    """The log file, created (with its folder and a header line) at the first record."""

    def __init__(self, path: Path):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(_FORMAT))

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        stream.write(f"==== raysys {' '.join(sys.argv[1:])} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        return stream


def quiet_libraries(verbose: bool = False) -> None:
    """What the libraries never need to print for raysys's commands (progress bars of hub
    downloads, tokenizers' fork warning, transformers' infos and warnings) and, unless
    `verbose`, their tqdm bars (raysys draws its own); the user's own settings win. Before
    the libraries load (tqdm reads its settings then), and inherited by a local Ray cluster."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")


def start_log(folder: str | Path, verbose: bool = False) -> Path | None:
    """Send the libraries' output to `folder`/raysys.log (or, with `verbose`, leave it on
    the terminal); returns the log's path (None with verbose)."""
    stop_log()
    _state.verbose, _state.announced = verbose, False
    if verbose:
        return None
    _state.path, _state.stdout = Path(folder).resolve() / LOG_NAME, sys.stdout
    _state.handler = _LogFile(_state.path)
    logging.getLogger().addHandler(_state.handler)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the file
    route_library_logs()
    return _state.path


def stop_log() -> None:
    """Undo start_log (the libraries' console handlers it removed stay removed)."""
    if _state.handler is not None:
        logging.getLogger().removeHandler(_state.handler)
        _state.handler.close()
        logging.captureWarnings(False)
    _state.path, _state.handler, _state.verbose, _state.announced = None, None, False, False


def log_path() -> Path | None:
    """The log file of this command (None: no log, everything on the terminal)."""
    return _state.path


def verbose() -> bool:
    return _state.verbose


def point_at_log() -> None:
    """After an error: where the libraries' output of this run is (once its path was shown)."""
    if _state.path is not None and _state.announced:
        print(f"raysys: Ray's and the libraries' output of this run is in {_state.path}", file=sys.stderr)


def _loggers() -> list[logging.Logger]:
    named = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [logging.getLogger()] + named


def _is_console(h: logging.Handler) -> bool:
    if isinstance(h, logging.FileHandler) or not isinstance(h, logging.StreamHandler):
        return False
    return h.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) or type(h).__name__ in (
        "PlainRayHandler", "_StderrHandler")


def route_library_logs() -> None:
    """Point every logger that prints to the terminal at the log file instead: its console
    handlers go, and it propagates to the root logger, which writes the file. Libraries add
    their handlers when they are imported (Ray, Ray Data) or log first (transformers), so
    this runs again at those points (ray_init, the first stage line); a no-op without a log."""
    if _state.handler is None:
        return
    for logger in _loggers():
        consoles = [h for h in logger.handlers if _is_console(h)]
        for h in consoles:
            logger.removeHandler(h)
        if consoles:
            logger.propagate = True


def log_line(who: str, line: str, stream: str = "stdout") -> None:
    """A line of another process's output (a Ray worker's stdout or stderr), into the log."""
    if _state.handler is not None:
        record = logging.LogRecord(who, logging.INFO, "", 0, line, None, None)
        record.levelname = stream
        _state.handler.handle(record)


class _ToLog(io.TextIOBase):
    """A text stream whose lines go to the log (this process's stdout or stderr)."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.buf = name, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.buf = (self.buf + text).split("\n")
        for line in lines:
            log_line("(raysys)", line, self.name)
        return len(text)


def capture_native_stderr() -> None:
    """C and C++ code in this process (Ray's core worker, torch) writes to file descriptor 2
    itself, past Python's logging: e.g. Ray core's error-level "core_worker.cc: Actor ...
    has constructor arguments in the object store and max_restarts > 0" each time Ray Data
    starts an actor pool. From here on fd 2 is the log file (appended to directly, so even
    a crash's last words land there), while Python's sys.stderr (stage lines, progress,
    tracebacks) keeps writing to the terminal through a copy of the old fd 2. Once per
    process; a no-op without a log."""
    if _state.handler is None or _state.native:
        return
    _state.native = True
    log_line("(raysys)", "from here on, native code's stderr in the driver is appended here as it is", "note")
    sys.stderr.flush()
    terminal = os.dup(2)
    log = os.open(_state.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(log, 2)
    os.close(log)
    old = sys.stderr
    sys.stderr = io.TextIOWrapper(io.FileIO(terminal, "w"), encoding=getattr(old, "encoding", None) or "utf-8",
                                  errors="backslashreplace", line_buffering=True)


@contextlib.contextmanager
def to_log() -> Iterator[None]:
    """Library work in this process that prints (DeepSpeed's checkpoint conversion and its
    logger made at import, Ray Tune's experiment box): its stdout and stderr go to the log
    meanwhile; a no-op without a log. Exceptions pass through; relayed lines still reach
    the terminal."""
    if _state.handler is None:
        yield
        return
    out, err = _ToLog("stdout"), _ToLog("stderr")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.write("\n" if out.buf else "")
        err.write("\n" if err.buf else "")
        route_library_logs()


def announce() -> None:
    """Print `log: PATH` once (before the first stage of a command that has a log)."""
    if _state.path is not None and not _state.announced:
        _state.announced = True
        route_library_logs()
        print(f"log: {_state.path}", file=sys.stderr, flush=True)


def stage(message: str) -> None:
    """One line saying what the command does now."""
    announce()
    print(message, file=sys.stderr, flush=True)


def relay(message: str) -> None:
    """Print a line for the person at the terminal from wherever this runs: in a Ray worker
    process (a Tune trial) marked, so that the driver shows it while the rest of the
    worker's output goes to the log; elsewhere as it is."""
    print((RELAY + message) if _in_ray_worker() else message, flush=True)


def relayed(message: str) -> None:
    """Show a line a worker relayed (the driver's side of `relay`), on the terminal even
    while `to_log` holds sys.stdout."""
    print(message, file=_state.stdout or sys.stdout, flush=True)


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE


# ---------------------------------------------------------------- progress

def duration(seconds: float) -> str:
    """A short human duration: 42 s, 3 min 05 s, 2 h 07 min."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """A progress bar: count/total, rate and time left (rates are measured from the first
    update on, so start-up time does not count). On a terminal one line redrawn in place;
    elsewhere (a log, CI) a plain line at each tenth of the way (at most one per `gap`
    seconds) and the last, so a long stage prints about ten lines, not hundreds.
    `update(count, **counters)`: counters are cumulative amounts whose rates are shown
    too, keyed by their label (`update(12, **{"tokens/s per worker": 51200})`)."""

    def __init__(self, what: str, total: int, unit: str, *, done: int = 0, stream: TextIO | None = None,
                 tty: bool | None = None, gap: float = 10.0, clock=time.monotonic):
        self.what, self.total, self.unit, self.count = what, max(int(total), 0), unit, done
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.gap, self.clock = gap, clock
        self.first: tuple[float, int, dict[str, float]] | None = None  # (time, count, counters) at the first update
        self.counters: dict[str, float] = {}
        self.drawn_at, self.next_tenth, self.printed, self.open = -math.inf, 1, None, False

    def rate(self) -> float:
        """Units per second since the first update (0 before a second one)."""
        if self.first is None:
            return 0.0
        dt = self.clock() - self.first[0]
        return (self.count - self.first[1]) / dt if dt > 0 else 0.0

    def left(self) -> float:
        """Seconds left at the current rate (inf while unknown)."""
        r = self.rate()
        return max(self.total - self.count, 0) / r if r > 0 else math.inf

    def line(self) -> str:
        c, t = min(self.count, self.total) if self.total else self.count, self.total
        parts = [f"{self.what}: {c}/{t} {self.unit}"]
        if self.tty and t:
            filled = int(20 * c / t)
            parts[0] += f" {100 * c / t:3.0f}% |{'#' * filled}{' ' * (20 - filled)}|"
        r = self.rate()
        if r > 0:
            parts.append(f"{r:.3g} {self.unit}/s")
            dt = self.clock() - self.first[0]
            parts += [f"{(v - self.first[2].get(k, 0.0)) / dt:.0f} {k}" for k, v in self.counters.items()]
            if c < t:
                parts.append(f"~{duration(self.left())} left")
        return "  " + ", ".join(parts)

    def update(self, count: int, **counters: float) -> None:
        now = self.clock()
        self.count, self.counters = count, {**self.counters, **counters}
        if self.first is None:
            self.first = (now, count, dict(self.counters))
        finished = self.total and count >= self.total
        if self.tty:
            if finished or now - self.drawn_at >= 0.1:
                self.drawn_at, self.open = now, True
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
            return
        tenth = int(10 * count / self.total) if self.total else 0
        if (finished and self.printed != count) or (tenth >= self.next_tenth and now - self.drawn_at >= self.gap):
            self.drawn_at, self.next_tenth = now, tenth + 1
            self._print()

    def _print(self) -> None:
        self.printed = self.count
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar: on a terminal its last state stays on its own line; elsewhere the
        last state is printed unless it already was."""
        if self.tty and self.open:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
            self.open = False
        elif not self.tty and self.first is not None and self.printed != self.count:
            self._print()


class ProgressFile:
    """A counter one process writes for another to draw: a small JSON file replaced
    atomically, at most every `every` seconds (`force` for the last word)."""

    def __init__(self, path: str | Path, every: float = 1.0):
        self.path, self.every, self.last = Path(path), every, -math.inf

    def write(self, force: bool = False, **fields: Any) -> None:
        from raysys.io import write_json

        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            write_json(self.path, fields)


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The last counter written to `path` (None: none yet, or unreadable)."""
    from raysys.errors import RaysysError
    from raysys.io import read_json

    try:
        return read_json(path) if Path(path).is_file() else None
    except (RaysysError, OSError):
        return None


@contextlib.contextmanager
def watch(path: str | Path, bar: Progress, count: str, counters: dict[str, str] | None = None,
          every: float = 0.5) -> Iterator[None]:
    """While the body runs, redraw `bar` from the ProgressFile at `path`: its field `count`
    is the bar's count, and each `counters` field (field -> label) a rate shown beside it."""
    stop = threading.Event()

    def draw() -> None:
        data = read_progress(path)
        if data and count in data:
            bar.update(int(data[count]), **{label: float(data.get(f, 0.0)) for f, label in (counters or {}).items()})

    def poll() -> None:
        while not stop.wait(every):
            draw()

    thread = threading.Thread(target=poll, name="raysys-progress", daemon=True)
    thread.start()
    try:
        yield
        stop.set()
        thread.join()
        draw()  # the last word
    finally:
        stop.set()
        thread.join()
        bar.close()
