"""How DPO and RE arms are named after the generation arms.

The generation arms themselves (their names and what each means) are the profile's vocabulary, defined once in
:data:`redpo.config.ARMS`, so a misspelt arm fails when the profile loads; this module derives every other arm name
from them.
"""

from __future__ import annotations

from redpo.config import ARMS, BASELINE_ARM, DPO_ARM_SUFFIX, PAPER_ARMS, ArmSpec, PromptKind

__all__ = ["ARMS", "BASELINE_ARM", "PAPER_ARMS", "ArmSpec", "PromptKind"]  # re-exported: the loops read specs here

ICL_ARMS: tuple[str, ...] = tuple(a for a in PAPER_ARMS if a != BASELINE_ARM)
"""The paper's ICL arms: the ones DPO re-runs with its adapters."""
DPO_SUFFIX = DPO_ARM_SUFFIX
DPO_ARMS: tuple[str, ...] = tuple(f"{a}{DPO_SUFFIX}" for a in ICL_ARMS)
"""An ICL arm re-run with the DPO adapters (notebook 03) is saved as ``<arm>_dpo``."""
GENERATED_ARMS: tuple[str, ...] = (*ARMS, *DPO_ARMS)
"""Every generation arm in display order; each becomes the RE arm ``gen:<arm>`` when its samples exist."""
CONSISTENT_ARMS: tuple[str, ...] = tuple(a for a in ARMS if ARMS[a].consistent)
"""The arms beyond the paper that filter their samples through a consistency judge."""
MIXED_ARMS: tuple[str, ...] = tuple(a for a in GENERATED_ARMS if a != BASELINE_ARM and a not in CONSISTENT_ARMS)
"""The paper's ICL and DPO arms, which also get a ``mix:<arm>`` (manual + generated) RE training set. A consistent
arm gets none: the step-matched control (``manual-steps``) follows the largest mixed set, and a beyond-paper arm
must not move the schedule that claim 6 compares the paper's arms on."""
LLM_ARM = "llm"
"""The direct-LLM RE baseline's primary row in RE tables: closed-set scoring (never unparseable)."""
LLM_GENERATE_ARM = "llm_generate"
"""Its secondary row: the LLM writes the label name, reported with its unparseable rate."""
LLM_ARMS = (LLM_ARM, LLM_GENERATE_ARM)


def split_dpo_name(arm: str) -> tuple[str, bool]:
    """``"obo_dpo"`` -> ``("obo", True)``; ``"aao"`` -> ``("aao", False)``; an unknown arm is a ValueError."""
    dpo = arm.endswith(DPO_SUFFIX)
    base = arm.removesuffix(DPO_SUFFIX) if dpo else arm
    if base not in ARMS or (dpo and base not in ICL_ARMS):
        raise ValueError(f"unknown arm {arm!r}; use one of {', '.join(ARMS)} or <arm>{DPO_SUFFIX} (e.g. obo_dpo)")
    return base, dpo


def paper_twin(arm: str) -> str:
    """The paper arm a consistent arm filters (``"obo_consistent"`` -> ``"obo"``): the same prompt and instruction,
    every valid sample kept. A paper arm is its own twin."""
    spec = ARMS[arm]
    return next(a for a in PAPER_ARMS if (ARMS[a].prompt, ARMS[a].dissimilar) == (spec.prompt, spec.dissimilar))
