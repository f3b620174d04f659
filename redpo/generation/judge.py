"""The consistency filter as the generation loop sees it: a judge that labels samples, and what its verdicts do.

A small generator often writes a fluent sentence that expresses another relation than the one it was asked for,
and OBO then shows that sentence as a demonstration of the wrong relation in every later call. A *consistent* arm
(:attr:`redpo.config.ArmSpec.consistent`) asks a judge for the relation of every valid sample of a round, in one
batch, and

- keeps a sample only when the judged label is the relation it was written for;
- rejects the others with the reason :data:`INCONSISTENT`, the judged label recorded beside the text (so the
  responses file says what the judge thought, and a replay can answer from it);
- never shows a rejected sample as a demonstration, and goes on generating for its relation within the arm's
  attempt budget, so the relation is refilled toward its quota.

The loop knows only this interface; who judges (a classifier trained on the K-shot split, or the generator's own
closed-set scores) is built one layer up, in :mod:`redpo.extraction.consistency`, because it needs the RE model.
The judge's identity (:meth:`Judge.identity`) goes into the arm's info, its stats file and the manifest's record of
the arm, so a result always names the judge that filtered it. A paper arm given a judge, or a consistent arm given
none, is an error: the filter is never silent inside the paper's arms, and never silently missing from its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redpo.core.sample import RESample

INCONSISTENT = "inconsistent"
"""The reject reason of a valid sample whose judged relation is not the one it was written for."""


@dataclass(frozen=True)
class Judge:
    """Labels samples with a relation of the schema; ``fingerprint`` content-addresses what judges (weights or
    scorer, and the data it was made from), ``summary`` says how good it is (JSON-safe)."""

    kind: str
    fingerprint: str
    label: Callable[[Sequence[RESample]], list[str]]
    summary: Mapping[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What a result records of its judge: the kind, the fingerprint and the summary."""
        return {"kind": self.kind, "fingerprint": self.fingerprint, "summary": dict(self.summary)}


JudgeFactory = Callable[[str, int, int], Judge]
"""``(arm, K, split seed) -> Judge``: the judge of one consistent arm on one K-shot split."""


def verdicts(judge: Judge, batches: Sequence[Sequence[RESample]]) -> list[list[str]]:
    """The judged label of every sample of every batch, asked of the judge in one call (a round's samples)."""
    flat = [s for batch in batches for s in batch]
    labels = judge.label(flat) if flat else []
    if len(labels) != len(flat):
        raise ValueError(f"judge {judge.kind} returned {len(labels)} labels for {len(flat)} samples")
    out, start = [], 0
    for batch in batches:
        out.append(list(labels[start:start + len(batch)]))
        start += len(batch)
    return out
