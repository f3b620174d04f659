"""Run the numbered notebooks in order through papermill, one profile at a time.

The notebooks are the pipeline: each reads what earlier ones wrote under ``results/<profile>/``. The runner
validates the data first (the same check as ``data --check``), injects the parameters, keeps executed copies beside
the results, stops at the first failure with the notebook and cell that failed, and records status and timing in
the manifest after every notebook. SIGINT (Ctrl-C) and SIGTERM stop it cleanly: papermill shuts the kernel down
(interrupting the cell first, so the kernel's own ``finally`` blocks stop its llama-server; a server that outlives
them dies with the kernel by ``PR_SET_PDEATHSIG``), the manifest marks the notebook ``interrupted``, and
:class:`Interrupted` carries the signal out to the CLI's exit code.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redpo.config import REPO_ROOT, load_profile, results_root
from redpo.core.conflicts import ConflictLog
from redpo.core.io import ResultsDir
from redpo.core.lock import hold_results
from redpo.core.manifest import now, record_notebook, record_precision, start_run
from redpo.core.replay import prepare_replay, replay_dir
from redpo.data.check import require_valid
from redpo.data.fetch import data_file_hashes
from redpo.models.precision import check_precision, native_bf16, stage_precisions
from redpo.run.segments import recorded_segment, wall_times

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_RE = re.compile(r"^(\d{2})_\w+\.ipynb$")
KERNEL = "redpo"
FALLBACK_KERNEL = "python3"
"""``python3`` runs the current interpreter (jupyter_client substitutes ``sys.executable`` for it)."""


class RunnerError(ValueError):
    """The run was asked for something that does not exist (e.g. ``--only 09``)."""


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; ``signum`` is the signal (the CLI exits with ``128 + signum``).

    A ``KeyboardInterrupt``, so that libraries that clean up on Ctrl-C (papermill shutting its kernel down) do the
    same on SIGTERM."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(detail or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread.

    Python's default SIGTERM ends the process on the spot, with no ``finally`` and no ``atexit`` (so no server stop
    and no manifest entry); as an exception it unwinds like Ctrl-C. A signal the caller ignores (a job started in
    the background of a script ignores SIGINT) stays ignored; the previous handlers come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _drop_abandoned_task_reports() -> None:
    """Silence what papermill's event loop would print about the tasks the signal cut short.

    The signal stops the loop in the middle of a cell; the cell's task ends later (the kernel answers the interrupt
    with an error) or is destroyed at exit, and asyncio reports each with a traceback at interpreter exit. Both are
    expected after an interrupt; anything else still goes to the loop's handler."""
    from jupyter_core.utils import ensure_event_loop  # the loop papermill's synchronous calls run on

    loop = ensure_event_loop()
    previous = loop.get_exception_handler()

    def handler(loop: Any, context: dict[str, Any]) -> None:
        if "task" in context or "future" in context:
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


@dataclass(frozen=True)
class NotebookResult:
    name: str
    status: str
    seconds: float
    error: str | None = None


def say(message: str) -> None:
    """Progress lines go to stderr, beside papermill's progress bar, so stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def discover(notebooks_dir: Path = NOTEBOOKS_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """``NN_name.ipynb`` files in numeric order, optionally only those whose number is in ``only``."""
    found = sorted(
        (p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_RE.match(p.name)),
        key=lambda p: (int(p.name[:2]), p.name),
    )
    if not only:
        if not found:
            raise RunnerError(f"no NN_*.ipynb notebooks in {notebooks_dir}")
        return found
    wanted = {n.strip().zfill(2) for n in only if n.strip()}
    missing = wanted - {p.name[:2] for p in found}
    if missing:
        raise RunnerError(
            f"--only {','.join(sorted(missing))}: no such notebook in {notebooks_dir}; "
            f"available: {', '.join(p.name for p in found) or 'none'}"
        )
    return [p for p in found if p.name[:2] in wanted]


def choose_kernel(preferred: str = KERNEL) -> str:
    """The ``redpo`` kernel if it runs this very interpreter; otherwise warn and use ``python3``.

    ``make setup`` registers ``redpo`` per user, so another checkout's setup can leave it pointing at a
    different venv; running that would silently execute another copy of the code.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(preferred)
    except NoSuchKernel:
        say(
            f"warning: Jupyter kernel {preferred!r} is not registered (`make setup` registers it); "
            f"using {FALLBACK_KERNEL!r}"
        )
        return FALLBACK_KERNEL
    exe = spec.argv[0] if spec.argv else ""
    if os.path.abspath(exe) != os.path.abspath(sys.executable):
        say(
            f"warning: Jupyter kernel {preferred!r} runs {exe}, not this environment's {sys.executable} "
            f"(re-run `make setup` here to re-register it); using {FALLBACK_KERNEL!r}"
        )
        return FALLBACK_KERNEL
    return preferred


def notebook_parameters(profile: str, root: Path, overrides: dict[str, Any], progress: bool) -> dict[str, Any]:
    """What papermill writes into every notebook's ``parameters`` cell. ``progress`` is the notebooks' own switch
    for their progress bars (generation, training, scoring): ``run --no-progress`` turns them off with
    papermill's, so a logged run stays quiet; a person in JupyterLab keeps the cell's default and sees widgets."""
    return {"profile": profile, "results_dir": str(root.resolve()), "overrides": overrides, "progress": progress}


def run(
    profile: str,
    overrides: dict[str, Any] | None = None,
    only: Sequence[str] | None = None,
    results_dir: Path | str | None = None,
    notebooks_dir: Path | str | None = None,
    progress: bool = True,
) -> list[NotebookResult]:
    """Execute the notebooks for ``profile``; raise :class:`NotebookFailed` at the first failing one.

    ``results_dir`` is the results root (default ``REDPO_RESULTS_DIR``); outputs go to ``<root>/<profile>/``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    overrides = dict(overrides or {})
    resolved = load_profile(profile, overrides)  # fail on a bad profile before starting any kernel
    check_precision(resolved)  # bf16 only where this machine multiplies it natively
    root = Path(results_dir) if results_dir else results_root()
    results = ResultsDir(resolved, root=root)
    notebooks = discover(Path(notebooks_dir or NOTEBOOKS_DIR), only)
    for warning in require_valid(resolved):  # `data --check`'s every error refuses the run before any kernel
        say(f"warning: {warning}")
    with hold_results(results.root):  # one writer per results folder; the kernels below inherit the lock
        kernel = choose_kernel()
        start_run(results, resolved, overrides, data_file_hashes(resolved))
        record_precision(results, {**stage_precisions(resolved), "native_bf16": native_bf16()})
        if prepare_replay(results) is not None:
            say(f"replay: {replay_dir(results)} holds this run's model calls; no generator is loaded, no adapter "
                "trained, and a call it cannot answer stops the run")
        conflicts = ConflictLog(results.cache)  # entries a cache refused inside a kernel, printed here (not only there)
        parameters = notebook_parameters(profile, root, overrides, progress)

        done: list[NotebookResult] = []
        for i, nb in enumerate(notebooks, 1):
            output = results.notebooks / nb.name
            say(f"[{i}/{len(notebooks)}] {nb.name} (profile {resolved.name}, kernel {kernel})")
            entry: dict[str, Any] = {"status": "running", "start": now(), "output": str(output)}
            record_notebook(results, nb.name, entry, list_files=False)
            t0 = time.perf_counter()
            error = None
            stopped: KeyboardInterrupt | None = None
            with recorded_segment(results, nb.name) as segment:
                try:
                    pm.execute_notebook(
                        str(nb),
                        str(output),
                        parameters=parameters,
                        kernel_name=kernel,
                        progress_bar=progress,
                        cwd=str(nb.parent),
                    )
                except PapermillExecutionError as err:
                    error = f"cell In [{err.exec_count}]: {err.ename}: {err.evalue}"
                except KeyboardInterrupt as err:  # papermill has interrupted and shut down the kernel by now
                    stopped = err
                    _drop_abandoned_task_reports()
                    error = f"interrupted by {signal.Signals(getattr(err, 'signum', signal.SIGINT)).name}"
                except Exception as err:  # kernel death, unreadable notebook: still a clean, recorded failure
                    error = f"{type(err).__name__}: {err}"
                status = "interrupted" if stopped is not None else "failed" if error else "succeeded"
                segment["status"] = status
            seconds = round(time.perf_counter() - t0, 2)
            entry.update(status=status, end=now(), seconds=seconds, error=error)
            record_notebook(results, nb.name, entry)
            for line in conflicts.new():
                say(f"warning: {line}")
            done.append(NotebookResult(nb.name, status, seconds, error))
            if stopped is not None:
                signum = getattr(stopped, "signum", signal.SIGINT)
                raise Interrupted(signum, f"{signal.Signals(signum).name} stopped {nb.name} after {seconds:.1f}s; its "
                                  "kernel (and any llama-server it ran) is shut down and the manifest marks it "
                                  "interrupted; run the same command again to resume") from None
            if error:
                raise NotebookFailed(f"notebook {nb.name} failed after {seconds:.1f}s: {error} (executed copy with "
                                     f"the traceback: {output})")
            say(f"    {nb.name} succeeded in {seconds:.1f}s")
    say(f"done: {len(done)} notebook(s) in {sum(r.seconds for r in done):.1f}s; manifest: {results.manifest}")
    totals = wall_times(results)  # a resumed run's notebooks are quick now; their real cost is the sum of segments
    if any(t["segments"] > 1 for t in totals.values()):
        say("wall time over all runs of this folder: " + ", ".join(
            f"{nb[:2]} {t['seconds']:.0f}s ({t['segments']} segments)" for nb, t in totals.items()))
    return done
