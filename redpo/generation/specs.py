"""The generation arms a profile may name, what each one means, and how DPO and RE arms are named after them.

The arm *names* are part of the profile's vocabulary (``redpo.config.GenerationArm`` and ``IclArm``), so a
misspelt arm fails when the profile loads; this module gives each name its meaning. A test checks that the two
lists agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redpo.config import DPO_ARM_SUFFIX

PromptKind = Literal["baseline", "aao", "obo"]


@dataclass(frozen=True)
class ArmSpec:
    """Which prompt an arm uses and whether the dissimilarity sentence is in it."""

    prompt: PromptKind
    dissimilar: bool

    @property
    def many(self) -> bool:
        """Baseline and AAO ask for many samples per call; OBO for one."""
        return self.prompt != "obo"


ARMS: dict[str, ArmSpec] = {
    "baseline": ArmSpec("baseline", dissimilar=False),
    "aao": ArmSpec("aao", dissimilar=True),
    "aao_nodiv": ArmSpec("aao", dissimilar=False),
    "obo": ArmSpec("obo", dissimilar=True),
    "obo_nodiv": ArmSpec("obo", dissimilar=False),
}

BASELINE_ARM = "baseline"
"""Xu et al.'s prompt: notebook 01's arm; every other arm is one of notebook 02's ICL grid."""
ICL_ARMS: tuple[str, ...] = tuple(a for a in ARMS if a != BASELINE_ARM)
DPO_SUFFIX = DPO_ARM_SUFFIX
DPO_ARMS: tuple[str, ...] = tuple(f"{a}{DPO_SUFFIX}" for a in ICL_ARMS)
"""An ICL arm re-run with the DPO adapters (notebook 03) is saved as ``<arm>_dpo``."""
GENERATED_ARMS: tuple[str, ...] = (*ARMS, *DPO_ARMS)
"""Every generation arm in display order; each becomes the RE arm ``gen:<arm>`` when its samples exist."""
MIXED_ARMS: tuple[str, ...] = tuple(a for a in GENERATED_ARMS if a != BASELINE_ARM)
"""The ICL and DPO arms that also get a ``mix:<arm>`` (manual + generated) RE training set."""
LLM_ARM = "llm"
"""The direct-LLM RE baseline's primary row in RE tables: closed-set scoring (never unparseable)."""
LLM_GENERATE_ARM = "llm_generate"
"""Its secondary row: the LLM writes the label name, reported with its unparseable rate."""
LLM_ARMS = (LLM_ARM, LLM_GENERATE_ARM)


def split_dpo_name(arm: str) -> tuple[str, bool]:
    """``"obo_dpo"`` -> ``("obo", True)``; ``"aao"`` -> ``("aao", False)``; an unknown arm is a ValueError."""
    dpo = arm.endswith(DPO_SUFFIX)
    base = arm.removesuffix(DPO_SUFFIX) if dpo else arm
    if base not in ARMS or (dpo and base == BASELINE_ARM):
        raise ValueError(f"unknown arm {arm!r}; use one of {', '.join(ARMS)} or <arm>{DPO_SUFFIX} (e.g. obo_dpo)")
    return base, dpo
