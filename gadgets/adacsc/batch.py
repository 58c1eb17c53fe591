"""Batch replay: many ISMRMRD files through one chain, on a local process pool or a Dask cluster.

Each file is one task: `run_job` replays it into a temporary file beside its output and renames it
on success, so an output that exists is complete and a later run skips it (resumable); a failure
removes the temporary file and is reported without stopping the other files. The chain travels to
the workers as XML text, so a worker needs adacsc installed but not the client's config folders.
On a Dask cluster, inputs and outputs must be on storage every worker sees under the same paths.
"""

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from adacsc.chain.config import ChainConfig, parse_chain
from adacsc.core import cancel
from adacsc.io.output_file import clear_stale_partials, discard, partial_path

log = logging.getLogger(__name__)

SCAN_SUFFIXES = (".h5", ".hdf5", ".mrd")
"""Files a folder contributes to a batch."""
SCHEDULER_TIMEOUT_S = 20.0
"""How long to try reaching a Dask scheduler."""
WORKER_STOP_S = 3.0
"""How long a stopped local worker gets to remove its temporary file before it is killed."""
PARENT_POLL_S = 0.5
"""How often a local worker checks that the process that started it is still there."""
STOP_POLL_S = 0.5
"""How often the parent of a local pool checks for a stop whose exception was lost (core.cancel)."""
PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process gets when its parent dies."""


class BatchError(ValueError):
    """The batch cannot be planned (missing input, clashing output names, bad scheduler)."""


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    source: Path
    output: Path


@dataclass(frozen=True)
class Outcome:
    """What became of one job: status done, skipped (output already complete) or failed."""

    source: str
    output: str
    status: str
    seconds: float = 0.0
    images: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class BatchReport:
    """Every job's outcome, in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many jobs ended with `status`."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[Outcome]:
        """The failed jobs."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when no job failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: counts per status."""
        return (f"{len(self.outcomes)} file(s): {self.count('done')} reconstructed, "
                f"{self.count('skipped')} skipped (already complete), {self.count('failed')} failed")

    def write_json(self, path: Path) -> None:
        """The report as JSON (one entry per file)."""
        path.write_text(json.dumps({"summary": self.summary(), "files": [asdict(o) for o in self.outcomes]},
                                   indent=2) + "\n")


# ---- planning --------------------------------------------------------------------------------

def _is_scan(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SCAN_SUFFIXES and not path.name.startswith(".")


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def plan_jobs(inputs: Sequence[Path], output_dir: Path) -> list[Job]:
    """Jobs for files and folders (searched recursively for *.h5, *.hdf5, *.mrd, skipping hidden
    files and anything inside `output_dir`). A folder's files keep their relative paths under
    `output_dir`; a file given directly keeps its name. Outputs always end in .h5."""
    jobs: dict[Path, Job] = {}
    sources: set[Path] = set()
    clashes: dict[Path, list[Path]] = {}
    for given in inputs:
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if _is_scan(p) and not _inside(p, output_dir)
                           and not any(part.startswith(".") for part in p.relative_to(given).parts))
            if not found:
                log.warning("%s: no ISMRMRD files (%s) in this folder", given, ", ".join(SCAN_SUFFIXES))
            pairs = [(p, p.relative_to(given)) for p in found]
        elif given.is_file():
            pairs = [(given, Path(given.name))]
        else:
            raise BatchError(f"{given}: no such file or folder")
        for source, relative in pairs:
            source = source.resolve()
            if source in sources:  # named twice (a file and its folder): once is enough
                continue
            sources.add(source)
            output = (output_dir / relative).with_suffix(".h5").resolve()
            if output in jobs:
                clashes.setdefault(output, [jobs[output].source]).append(source)
                continue
            jobs[output] = Job(source, output)
    if clashes:
        raise BatchError("several inputs would write the same output: " + "; ".join(
            f"{out} <- {', '.join(str(s) for s in sources)}" for out, sources in clashes.items()))
    return sorted(jobs.values(), key=lambda job: str(job.source))


def chain_to_xml(chain: ChainConfig) -> str:
    """The chain as a version-2 chain XML of `<external><execute>` nodes (what workers parse)."""
    root = ET.Element("configuration")
    ET.SubElement(root, "version").text = "2"
    stream = ET.SubElement(root, "stream")
    for node in chain.nodes:
        external = ET.SubElement(stream, "external")
        ET.SubElement(external, "execute", {"name": node.module, "target": node.target, "type": "python"})
        external.append(node.configuration)
    return ET.tostring(root, encoding="unicode")


# ---- one job (runs in a worker) ------------------------------------------------------------------

def run_job(source: str, output: str, chain_xml: str, chain_name: str, group: str | None = None,
            overwrite: bool = False) -> Outcome:
    """Replay `source` through the chain into `output`, atomically; never raises for a bad file."""
    from adacsc.replay import replay  # imported here: workers pay for it once, the client never

    global _writing
    target = Path(output)
    if target.exists() and not overwrite:
        return Outcome(source, output, "skipped")
    started = time.perf_counter()
    temporary = partial_path(target)
    _writing = temporary
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clear_stale_partials(target)
        result = replay(source, temporary, parse_chain(chain_xml, chain_name), group)
        if not result.images:
            raise RuntimeError("the chain produced no images")
        os.replace(temporary, target)
        return Outcome(source, output, "done", time.perf_counter() - started, dict(result.images))
    except Exception as err:  # one bad file must not stop the batch: report it
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        log.debug("%s failed:\n%s", source, traceback.format_exc())
        return Outcome(source, output, "failed", time.perf_counter() - started, error=text)
    finally:
        _writing = None
        discard(temporary)


_writing: str | None = None
"""the temporary file the job running in this worker writes (removed when the worker is stopped)"""


def _init_local_worker(log_level: int, threads: int, parent: int) -> None:
    """A local pool worker: log like the parent, share the CPU cores fairly (set before torch
    loads), leave Ctrl-C to the parent, and end (removing its temporary file) on SIGTERM, which
    the parent sends when it stops and the kernel sends when the parent dies (even by SIGKILL)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    _die_with(parent)


def _stop_worker(_signum: int, _frame: object) -> None:
    """SIGTERM in a worker: remove the temporary file of the running job and exit at once."""
    if _writing is not None:
        discard(_writing)
    os._exit(128 + signal.SIGTERM)


def _die_with(parent: int) -> None:
    """SIGTERM to this process when `parent` dies: the kernel's parent-death signal on Linux, and
    on every system a watcher thread that notices being re-parented."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() != parent:  # the parent died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="adacsc-parent-watch", daemon=True).start()


def _worker_log_level() -> int:
    """Workers log warnings and errors only (the client logs one line per file), unless debugging."""
    level = logging.getLogger().getEffectiveLevel()
    return level if level <= logging.DEBUG else max(level, logging.WARNING)


# ---- running ---------------------------------------------------------------------------------------

def default_workers() -> int:
    """Local processes by default: up to 4, never more than the CPU cores."""
    return max(1, min(4, os.cpu_count() or 1))


def run_batch(jobs: Sequence[Job], chain: ChainConfig, *, workers: int | None = None, scheduler: str | None = None,
              group: str | None = None, overwrite: bool = False, progress: bool = True,
              on_outcome: Callable[[Outcome], None] | None = None) -> BatchReport:
    """Run every job: outputs already complete are skipped here; the rest go to a local process
    pool (`workers` processes) or, with `scheduler` (tcp://HOST:PORT), to that Dask cluster."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    report = BatchReport()
    pending = []
    for job in jobs:
        if job.output.exists() and not overwrite:
            report.outcomes.append(Outcome(str(job.source), str(job.output), "skipped"))
        else:
            pending.append(job)
    if report.outcomes:
        log.info("%d of %d output(s) already complete: skipped", len(report.outcomes), len(jobs))
    xml, name = chain_to_xml(chain), chain.name
    bar = tqdm(total=len(jobs), initial=len(report.outcomes), unit="scan", desc=f"recon {name}",
               disable=None if progress else True, dynamic_ncols=True)

    def record(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if outcome.status == "failed":
            log.error("FAILED %s: %s", outcome.source, outcome.error)
        else:
            log.info("%s %s -> %s in %.1f s (%s)", outcome.status, outcome.source, outcome.output, outcome.seconds,
                     ", ".join(f"{k} x{v}" for k, v in sorted(outcome.images.items())) or "no images")
        bar.update(1)
        bar.set_postfix(failed=report.count("failed"), refresh=False)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        with logging_redirect_tqdm():
            if not pending:
                pass
            elif scheduler:
                _run_dask(pending, xml, name, group, overwrite, scheduler, record)
            else:
                _run_local(pending, xml, name, group, overwrite, workers or default_workers(), record)
    finally:
        bar.close()
    return report


def _run_local(jobs: Sequence[Job], xml: str, name: str, group: str | None, overwrite: bool, workers: int,
               record: Callable[[Outcome], None]) -> None:
    if workers < 1:
        raise BatchError("--workers must be at least 1")
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    log.info("local pool: %d worker process(es), %d thread(s) each, %d file(s)", workers, threads, len(jobs))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_local_worker,
                               initargs=(_worker_log_level(), threads, os.getpid()))
    futures: dict[Future, Job] = {}
    try:
        for job in jobs:
            futures[pool.submit(run_job, str(job.source), str(job.output), xml, name, group, overwrite)] = job
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=STOP_POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                record(_outcome(future, futures[future]))
            cancel.raise_if_stopped()  # a Ctrl-C or SIGTERM whose exception Python dropped
    except BaseException:  # Ctrl-C, SIGTERM, an error: stop the workers now, not after their jobs
        _stop_pool(pool, list(futures))
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Cancel what has not started and end the worker processes (SIGTERM: each removes its
    temporary file), killing those that do not end within WORKER_STOP_S."""
    for future in futures:
        future.cancel()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + WORKER_STOP_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


def _run_dask(jobs: Sequence[Job], xml: str, name: str, group: str | None, overwrite: bool, scheduler: str,
              record: Callable[[Outcome], None]) -> None:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_as_completed
    except ImportError as err:
        raise BatchError("--scheduler needs Dask: pip install 'adacsc[cluster]'") from err
    try:
        client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except (OSError, TimeoutError) as err:
        raise BatchError(f"cannot reach the Dask scheduler {scheduler}: {err}") from err
    with client:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("Dask scheduler %s: %d worker(s), %d file(s)", scheduler, workers, len(jobs))
        if workers == 0:
            log.warning("the Dask cluster has no workers yet: files wait until one joins")
        batch = uuid.uuid4().hex[:8]
        futures = {}
        for index, job in enumerate(jobs):
            future = client.submit(run_job, str(job.source), str(job.output), xml, name, group, overwrite,
                                   key=f"adacsc-recon-{batch}-{index}", pure=False, retries=0)
            futures[future] = job
        try:
            for future in dask_as_completed(list(futures)):
                record(_outcome(future, futures[future]))
                future.release()
        except BaseException:
            client.cancel(list(futures))
            raise


def _outcome(future: Any, job: Job) -> Outcome:
    """The job's outcome, or a failure when the worker itself failed (crashed, lost, killed)."""
    try:
        return future.result()
    except Exception as err:
        return Outcome(str(job.source), str(job.output), "failed", error=f"worker failed: {type(err).__name__}: {err}")


def summarise(report: BatchReport) -> Iterable[str]:
    """Closing lines: the counts, then every failure."""
    yield report.summary()
    for outcome in report.failed:
        yield f"failed: {outcome.source}: {outcome.error}"
