"""What a person sees: results on stdout, progress and warnings on stderr, Ray's and MLflow's internals only with
--verbose (they always reach Ray's own log files under its session folder).

One switch per process (`configure`), read by every stage; `NO_COLOR` and a non-terminal stderr turn off the
colour Ray puts on the lines it forwards.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from typing import Any, Iterator

VERBOSE_ENV = "CVAE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure(verbose_output: bool) -> None:
    """Set once by the CLI before any stage runs; the environment carries it to `ray job submit` drivers too."""
    if verbose_output:
        os.environ[VERBOSE_ENV] = "1"
    if os.environ.get("NO_COLOR") or not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose():
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    quiet_loggers()


def quiet_loggers() -> None:
    """Again after `ray.init` and the first `ray.data` import: each sets its own levels and warning filters.
    Ray Data keeps writing everything to its session log file; only its console handler is raised."""
    if verbose():
        return
    warnings.filterwarnings("ignore", module=r"(ray|mlflow)(\.|$)")  # their own deprecations and hints
    for name in ("mlflow", "alembic", "urllib3", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we did


def route_ray_system_messages() -> None:
    """Ray prints the raylet's warnings (too many worker processes, tasks killed for memory, ...) on the
    driver's stdout, in yellow; they are diagnostics, so they go to stderr, uncoloured. Guarded: a Ray without
    this hook is left as is."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "routed_by_cvae", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        for line in data.get("lines", []):  # plain: Ray colours raylet lines whatever RAY_COLOR_PREFIX says
            print(f"(raylet) {line}", file=sys.stderr, flush=True)

    to_stderr.routed_by_cvae = True
    ray_worker.print_to_stdstream = to_stderr


def ray_init_options() -> dict[str, Any]:
    """`ray.init` keywords: without --verbose, worker and system output stays in Ray's log files."""
    import ray

    return {"log_to_driver": verbose(),
            "logging_config": ray.LoggingConfig(log_level="INFO" if verbose() else "ERROR")}


MAX_LINE = 1_000  # characters: a message quoting a library (a list of 14,922 classes) is cut, not printed whole


def fitted(text: str, limit: int = MAX_LINE) -> str:
    """`text` with every line cut to `limit` characters."""
    return "\n".join(line if len(line) <= limit else f"{line[:limit - 25]} ... ({len(line):,} characters)"
                     for line in str(text).splitlines() or [""])


def progress(text: str) -> None:
    print(fitted(text), file=sys.stderr, flush=True)


def warn(text: str) -> None:
    print(fitted(f"warning: {text}"), file=sys.stderr, flush=True)


def error(text: str) -> None:
    print(fitted(text), file=sys.stderr, flush=True)


def result(text: str) -> None:
    print(fitted(text), flush=True)


@contextlib.contextmanager
def relayed_lines() -> Iterator[Any]:
    """A Ray queue whose ("progress" | "warning", text) items this process prints while the block runs: how the
    Ray Train controller's epoch lines reach the console without forwarding every worker's output."""
    import ray
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On this process's node: the queue lives exactly as long as the driver, whatever nodes come and go.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    lines = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    done = threading.Event()

    def pump(wait: float) -> None:
        while True:
            try:
                kind, text = lines.get(timeout=wait) if wait else lines.get_nowait()
            except Empty:
                return
            except Exception:  # noqa: BLE001 - the queue is gone (cluster shutting down): nothing more to show
                done.set()
                return
            (warn if kind == "warning" else progress)(text)

    def loop() -> None:
        while not done.is_set():
            pump(0.5)

    thread = threading.Thread(target=loop, name="cvae-console", daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        done.set()
        thread.join()
        pump(0)
        try:
            lines.shutdown()
        except Exception:  # noqa: BLE001 - already gone with its node or the cluster
            pass
