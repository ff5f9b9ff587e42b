"""``gsimclr run --jobs N``: a run's independent stages in N worker processes at once.

A run's stages form a small graph: the pseudo labels (autoencoder or file) come before every method that
reads them (a guided method trains with them; an unguided one reports their pairs in its batches), each
method's pretraining and evaluation is otherwise independent of the others, and the supervised baseline
depends on nothing. One process with more threads scales less well on a CPU than processes do: the paper
model at batch 64 on this project's 2-core CPU trains at 45.3 images/s in one process of one thread, 76.7 in
one of two threads (1.69x) and 86.0 in two one-thread processes together (1.90x; side by side in one run,
benchmarks/results/paper-cpu-jobs.md), so ``--jobs 2`` on two cores finishes SimCLR and G-SimCLR together in
about the time one of them takes alone.

The command's process keeps the run folder's lock and its metadata, starts each ready stage in a worker
(``spawn``: no threads or CUDA state are forked) with its share of the threads (the command's threads
divided by ``--jobs``, at least one), and writes the table once every stage has finished. Each stage writes
only its own files (``<method>/``, ``pseudo_labels/``, ``supervised.json``, each with its provenance), so
workers never write the same file; each stage seeds its own random draws, so the table is the one the same
run gives with ``--jobs 1`` at the same threads per stage. A worker that fails ends the others (SIGTERM:
each keeps its last checkpoint) and the command reports the failure; SIGTERM or Ctrl-C of the command
reaches the workers too, and a worker whose command died ends itself (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from gsimclr.errors import UserError

if TYPE_CHECKING:
    from gsimclr.config import Config
    from gsimclr.run_folder import RunFolder

PSEUDO_LABELS = "pseudo_labels"
SUPERVISED = "supervised"
STOP_GRACE_S = 60.0   # a worker's time to unwind after SIGTERM (atomic writes discard their temporaries)


@dataclass
class Job:
    """One stage to run in a worker: its name (a method, :data:`PSEUDO_LABELS` or :data:`SUPERVISED`) and
    the stages it waits for."""

    name: str
    after: tuple[str, ...] = ()
    process: Any = None
    conn: Any = None
    message: Any = None    # what the worker sent: (kind, value), or False when it closed its pipe without a word


def stage_graph(methods: tuple[str, ...], pseudo_first: bool, guided: Callable[[str], bool],
                supervised: bool) -> list[Job]:
    """The stages of a run in the order ``--jobs 1`` runs them, each with the stages it waits for: every
    method waits for pseudo labels made before pretraining (``pseudo_first``), which exist when a guided
    method is among ``methods``.

    >>> [(j.name, j.after) for j in stage_graph(("simclr", "gsimclr"), True, lambda m: m == "gsimclr", True)]
    [('pseudo_labels', ()), ('simclr', ('pseudo_labels',)), ('gsimclr', ('pseudo_labels',)), ('supervised', ())]
    >>> [j.name for j in stage_graph(("simclr",), True, lambda m: False, False)]
    ['simclr']
    """
    jobs = []
    before: tuple[str, ...] = ()
    if pseudo_first and any(guided(m) for m in methods):
        jobs.append(Job(PSEUDO_LABELS))
        before = (PSEUDO_LABELS,)
    jobs += [Job(m, before) for m in methods]
    if supervised:
        jobs.append(Job(SUPERVISED))
    return jobs


def worker_threads(jobs: int, threads: int | None = None) -> int:
    """Each worker's torch threads: the command's threads divided among ``jobs`` (at least one)."""
    import torch

    return max(1, (threads or torch.get_num_threads()) // jobs)


def run_all_in_jobs(cfg: "Config", folder: "RunFolder", resume: bool, methods: tuple[str, ...], jobs: int,
                    log: Callable[..., None] = print, stop_after: int | None = None,
                    max_minutes: float | None = None) -> dict[str, Any]:
    """:func:`gsimclr.pipeline.run_all`'s stages in up to ``jobs`` worker processes at once: the same checks
    before any work and the same files, results and return value. This process (it holds the run folder's
    lock) writes the run's metadata and, once every stage has finished, the results."""
    from gsimclr import pipeline
    from gsimclr.methods import METHODS
    from gsimclr.plugins import loaded_modules

    run = pipeline._open_run(cfg, folder, methods, resume, None, log)
    results = pipeline.results_header(cfg)
    pseudo_first = pipeline.pseudo_labels_before_pretraining(cfg) and any(METHODS[m].guided for m in methods)
    pseudo = None
    if pseudo_first and resume and folder.pseudo_labels.exists() \
            and pipeline.reusable_pseudo_labels(cfg, run.train, folder):   # read here: no worker waits for them
        pseudo = pipeline._pseudo_labels_before(run, methods, results, log)
        pseudo_first = False
    graph = stage_graph(methods, pseudo_first, lambda m: METHODS[m].guided, run.evaluable)
    payload = {"cfg": cfg, "root": str(folder.root), "resume": resume, "methods": methods, "stop_after": stop_after,
               "max_minutes": max_minutes, "threads": worker_threads(jobs), "plugins": loaded_modules(),
               "pseudo": pseudo}
    log(f"stages in up to {jobs} worker processes of {payload['threads']} thread(s) each: "
        + ", ".join(job.name + (f" (after {', '.join(job.after)})" if job.after else "") for job in graph))
    done = run_jobs(graph, payload, jobs, log)
    for method in methods:
        if method not in done or done[method]["incomplete"]:
            return {"incomplete": True}
        results["methods"][method] = done[method]["result"]
    if PSEUDO_LABELS in done:
        results["pseudo_labels"] = done[PSEUDO_LABELS]["description"]   # its worker logged it
    for method in methods:   # encoder pseudo labels: the first method that made them, as run_all
        if done[method]["pseudo_labels"] is not None and "pseudo_labels" not in results:
            results["pseudo_labels"] = done[method]["pseudo_labels"]
    if run.evaluable:
        results["supervised"] = done[SUPERVISED]["top1"]
    pipeline._write_results(folder, results, run.evaluable)
    return results


def run_jobs(graph: list[Job], payload: dict[str, Any], jobs: int, log: Callable[..., None],
             target: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run ``graph``'s stages, at most ``jobs`` at once, each as soon as the stages it waits for are done;
    the results by stage name. ``payload`` is what every worker needs (:func:`_worker`). A failed worker
    ends the others and raises: a :class:`UserError` with its one-line message, else a RuntimeError with
    its traceback. ``target(name, payload, conn)`` is the worker (default :func:`_worker`)."""
    context = multiprocessing.get_context("spawn")
    target = target or _worker
    pending, running, done = list(graph), [], {}
    try:
        while pending or running:
            ready = [j for j in pending if all(a in done for a in j.after)]
            while ready and len(running) < jobs:
                job = ready.pop(0)
                pending.remove(job)
                extra = {"pseudo": done[PSEUDO_LABELS]["labels"]} if PSEUDO_LABELS in job.after else {}
                job.conn, child = context.Pipe(duplex=False)
                job.process = context.Process(target=target, args=(job.name, {**payload, **extra}, child),
                                              name=f"gsimclr-{job.name}")   # not daemonic: a stage may
                # start processes of its own (a plug-in's DataLoader workers); run_jobs ends every worker itself
                job.process.start()
                child.close()
                running.append(job)
                log(f"{job.name}: started in worker process {job.process.pid}")
            if not running:   # nothing can start: a stage waits for one that is not in the graph
                raise RuntimeError(f"stages wait for what no stage makes: {[(j.name, j.after) for j in pending]}")
            # a result larger than the pipe's buffer (a set's pseudo labels) is read while its worker still sends it
            ready_now = wait([j.process.sentinel for j in running] + [j.conn for j in running if j.message is None])
            for job in [j for j in running if j.message is None and j.conn in ready_now]:
                job.message = _receive(job.conn)
            for job in [j for j in running if j.process.sentinel in ready_now]:
                running.remove(job)
                done[job.name] = _collect(job)
                if done[job.name].get("incomplete"):
                    pending.clear()   # a method stopped early (--stop-after, --max-minutes): nothing after it
    finally:
        _end(running)
    return done


def _receive(conn) -> tuple[str, Any] | bool:
    """A worker's message, or False once its end of the pipe closed without one."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return False


def _collect(job: Job) -> dict[str, Any]:
    """A finished worker's result, or its failure raised here."""
    message = job.message
    if message is None and job.conn.poll():
        message = _receive(job.conn)
    job.process.join()
    job.conn.close()
    if not message:
        raise RuntimeError(f"the {job.name} stage's worker ended with exit code {job.process.exitcode} "
                           "and no result")
    kind, value = message
    if kind == "ok":
        return value
    if kind == "user":
        raise UserError(value)
    if kind == "interrupted":
        raise KeyboardInterrupt()
    raise RuntimeError(f"the {job.name} stage failed in its worker:\n{value}")


def _end(running: list[Job]) -> None:
    """SIGTERM to the workers still running, then SIGKILL to those that outlive :data:`STOP_GRACE_S`."""
    for job in running:
        if job.process.is_alive():
            os.kill(job.process.pid, signal.SIGTERM)
    for job in running:
        job.process.join(STOP_GRACE_S)
        if job.process.is_alive():
            job.process.kill()
            job.process.join()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the command's process dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() == 1:   # the command died before the line above
        os._exit(143)


def _worker(name: str, payload: dict[str, Any], conn) -> None:
    """A worker process: one stage of the run, its result or failure sent through ``conn``."""
    _die_with_parent()
    os.environ["TQDM_DISABLE"] = "1"   # one progress bar per stage would garble the terminal; the log says it
    from gsimclr.errors import one_line_warnings, out_of_memory, raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    one_line_warnings()
    try:
        conn.send(("ok", _run_stage(name, payload)))
    except UserError as exc:
        conn.send(("user", str(exc).splitlines()[0] if str(exc) else repr(exc)))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except BaseException as exc:   # noqa: BLE001 - the command reports it
        memory = out_of_memory(exc)
        conn.send(("user", memory) if memory else ("error", traceback.format_exc()))
    finally:
        conn.close()


def _run_stage(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from gsimclr import pipeline
    from gsimclr.plugins import load_plugins
    from gsimclr.run_folder import RunFolder

    load_plugins(payload["plugins"])   # the command's plug-ins: their methods and options exist here too
    torch.set_num_threads(payload["threads"])
    cfg = payload["cfg"]
    with warnings.catch_warnings():   # the command said them once already (skipped files, left-out images)
        warnings.simplefilter("ignore")
        train, test = pipeline.load_data(cfg)
    run = pipeline._Run(cfg, RunFolder(Path(payload["root"])), train, test, payload["resume"])

    def log(*args, **kwargs) -> None:
        print(f"[{name}]", *args, **kwargs, flush=True)

    if name == PSEUDO_LABELS:
        results: dict[str, Any] = {}
        labels = pipeline._pseudo_labels_before(run, payload["methods"], results, log)
        return {"labels": np.asarray(labels), "description": results["pseudo_labels"]}
    if name == SUPERVISED:
        return {"top1": pipeline._supervised_baseline(run)}
    results = {"methods": {}}
    finished = pipeline._run_method(run, name, payload.get("pseudo"), results, log, payload["stop_after"],
                                    payload["max_minutes"])
    return {"incomplete": not finished, "result": results["methods"].get(name),
            "pseudo_labels": results.get("pseudo_labels")}
