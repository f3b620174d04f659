"""The few lines every notebook starts with, kept here so the notebooks stay thin and identical in setup.

A notebook's ``parameters`` cell holds ``profile``, ``results_dir`` and ``overrides``; papermill (or a person
in JupyterLab) sets them, and :func:`setup` turns them into a validated profile and its results folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redpo.analysis.plots import FORMATS as FIGURE_FORMATS
from redpo.analysis.plots import save_figure, set_style
from redpo.config import Profile, load_profile
from redpo.core.io import ResultsDir
from redpo.core.lock import held_by_parent, hold_for_process
from redpo.core.replay import prepare_replay
from redpo.data.check import require_valid

__all__ = ["FIGURE_FORMATS", "save_figure", "set_style", "setup"]


def setup(
    profile: str = "cpu", results_dir: str = "", overrides: dict[str, Any] | None = None
) -> tuple[Profile, ResultsDir]:
    """Load the profile (with overrides) and its ``<results_dir>/<profile>/`` folder; set the plot style.

    ``results_dir`` is the results *root* (like ``REDPO_RESULTS_DIR``); empty means the default root, so a
    notebook opened by hand writes to the same place ``make reproduce`` does. The results folder is locked for
    the kernel's lifetime unless the ``run`` that started this kernel holds it (:mod:`redpo.core.lock`). A notebook
    opened by hand checks the data as ``run`` does (``data --check``), so it never trains on data a run would refuse.
    """
    prof = load_profile(profile, overrides or {})
    results = ResultsDir(prof, root=Path(results_dir) if results_dir else None)
    if not held_by_parent(results.root):  # under `run` the runner has checked the data before starting this kernel
        for warning in require_valid(prof):
            print(f"warning: {warning}")
    hold_for_process(results.root)  # a notebook opened by hand is a run too; under `run` the parent holds it
    prepare_replay(results)  # a folder with a replay archive answers model calls from it (redpo.core.replay)
    set_style()
    return prof, results

