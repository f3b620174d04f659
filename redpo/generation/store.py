"""What a generation arm produced, and its three files under ``generations/``: samples, stats, raw responses.

The samples file (KnowPrompt JSONL) is what the RE model trains on; the stats and responses files keep every
reject reason and raw reply, so yield and reject tables can be rebuilt from disk without a model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from redpo.core.io import ResultsDir, read_json, read_samples, write_json, write_samples
from redpo.core.manifest import record_arm
from redpo.core.sample import RESample

ArmKey = tuple[str, int, int]
"""An arm on one K-shot split: ``(arm name, K, seed)``."""


@dataclass
class RelationStats:
    """Per relation and arm: what was asked, what came back valid, and why the rest was rejected."""

    relation: str
    manual: bool = False
    attempts: int = 0
    valid: int = 0
    surplus: int = 0
    """Valid samples beyond ``n_per_relation`` that an AAO call returned; dropped, not counted as valid."""
    new_tokens: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    stop: str = ""
    """``n_reached``, ``budget`` or ``manual``."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rejects": dict(sorted(self.rejects.items()))}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> RelationStats:
        return cls(**{**row, "rejects": Counter(row.get("rejects", {}))})


@dataclass(frozen=True)
class ResponseRecord:
    """One raw response with its parse outcome, kept for the notebooks' reject-reason tables."""

    relation: str
    step: int
    attempt: int
    n_requested: int
    key: str
    cached: bool
    n_new_tokens: int
    text: str
    valid: list[str]
    """Marked text of the samples kept from this response."""
    rejects: list[dict[str, str]]
    """``{"reason", "text"}`` for every line that was dropped (surplus lines get reason ``surplus``); a sample the
    consistency judge rejected also carries ``"judged"``, the label the judge gave it."""


@dataclass
class ArmResult:
    """The samples of one arm per relation, the stats behind them, and every raw response."""

    arm: str
    name: str
    """File stem: the arm, plus ``_<adapter>`` for an adapter-driven run (e.g. ``obo_dpo``)."""
    samples: dict[str, list[RESample]]
    stats: dict[str, RelationStats]
    records: list[ResponseRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    """Model, adapter, K, K-shot seed, profile, steps, seconds and cache counters."""

    def all_samples(self) -> list[RESample]:
        return [s for rel in self.samples.values() for s in rel]

    def reject_counts(self) -> Counter[str]:
        return sum((st.rejects for st in self.stats.values()), Counter())


def arm_stem(name: str, k: int | None = None, seed: int | None = None) -> str:
    """``obo`` or ``obo_k8_s1``: one file set per arm and K-shot split."""
    return name if k is None else f"{name}_k{k}_s{seed}"


def _generations_dir(results_dir: ResultsDir | Path) -> Path:
    if isinstance(results_dir, ResultsDir):
        return results_dir.generations
    path = Path(results_dir) / "generations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def arm_paths(
    results_dir: ResultsDir | Path, name: str, k: int | None = None, seed: int | None = None
) -> dict[str, Path]:
    """Samples (KnowPrompt JSONL), stats (JSON) and raw responses (JSON) of one arm."""
    base = _generations_dir(results_dir) / arm_stem(name, k, seed)
    return {
        "samples": base.with_name(base.name + ".jsonl"),
        "stats": base.with_name(base.name + ".stats.json"),
        "responses": base.with_name(base.name + ".responses.json"),
    }


def save_arm(result: ArmResult, results_dir: ResultsDir | Path) -> dict[str, Path]:
    """Write the arm's three files atomically; the samples file is what the RE model trains on."""
    paths = arm_paths(results_dir, result.name, result.info.get("k"), result.info.get("kshot_seed"))
    write_json(paths["responses"], [asdict(r) for r in result.records])
    write_json(paths["stats"], {
        "info": result.info,
        "relations": list(result.samples),
        "stats": {rel: st.to_json() for rel, st in result.stats.items()},
        "rejects": dict(result.reject_counts().most_common()),
    })
    write_samples(paths["samples"], result.all_samples())
    if "model" in result.info and isinstance(results_dir, ResultsDir):  # a consistent arm names its judge too
        made_by = {**result.info["model"], **({"judge": result.info["judge"]} if "judge" in result.info else {})}
        record_arm(results_dir, paths["samples"].name.removesuffix(".jsonl"), made_by)
    return paths


def load_arm(
    results_dir: ResultsDir | Path, name: str, *, k: int | None = None, seed: int | None = None
) -> ArmResult:
    """Read back what :func:`save_arm` wrote (``name`` is the arm, or ``<arm>_<adapter>``)."""
    paths = arm_paths(results_dir, name, k, seed)
    meta = read_json(paths["stats"])
    samples: dict[str, list[RESample]] = {rel: [] for rel in meta["relations"]}
    for s in read_samples(paths["samples"]):
        samples.setdefault(s.relation, []).append(s)
    stats = {rel: RelationStats.from_json(row) for rel, row in meta["stats"].items()}
    records = [ResponseRecord(**row) for row in read_json(paths["responses"])] if paths["responses"].is_file() else []
    return ArmResult(meta["info"]["arm"], name, samples, stats, records, meta["info"])


# ---- empty arms ------------------------------------------------------------------------------------------
def generated_valid(result: ArmResult) -> int:
    """Valid samples the model wrote for the arm (the manual negative-label copies are not counted)."""
    return sum(st.valid for st in result.stats.values() if not st.manual)


def empty_arm_line(name: str, by_split: Mapping[str, ArmResult], consequence: str) -> str:
    """``arm obo: no valid sample in split k4_s1 (18 calls; rejects: too_short 17, same_entity 1) — <consequence>``:
    what an arm that came back empty cost and why its replies were rejected, summed over the splits named."""
    stats = [st for res in by_split.values() for st in res.stats.values() if not st.manual]
    rejects = sum((st.rejects for st in stats), Counter())
    rejects.pop("surplus", None)
    top = ", ".join(f"{reason} {n}" for reason, n in rejects.most_common(3))
    top += ", …" if len(rejects) > 3 else ""
    where = f"split{'s' if len(by_split) > 1 else ''} {', '.join(by_split)}"
    return (f"arm {name}: no valid sample in {where} ({sum(st.attempts for st in stats)} calls; rejects: "
            f"{top or 'none'}) — {consequence}")


def empty_arm_lines(arms: Mapping[ArmKey, ArmResult], consequence: str = "nothing to train") -> list[str]:
    """One :func:`empty_arm_line` per arm that wrote no valid sample in some split, in arm order.

    A small generator on a hard dataset can have every reply rejected; that is a result, not an error, but every
    stage after it has nothing to train on, and the notebook says so here instead of leaving a row missing."""
    empty: dict[str, dict[str, ArmResult]] = {}
    for (name, k, seed), result in arms.items():
        if not generated_valid(result):
            empty.setdefault(name, {})[f"k{k}_s{seed}"] = result
    return [empty_arm_line(name, by_split, consequence) for name, by_split in empty.items()]


PLATEAU_PREFIX = "plateau_"
"""Notebook 05's longer generations are saved as ``plateau_<arm>_k<K>_s<seed>.*``, beside notebook 02's files."""


def plateau_name(result: ArmResult) -> ArmResult:
    """The same run under the name ``plateau_<name>``, so saving it leaves notebook 02/03's files alone."""
    name = PLATEAU_PREFIX + result.name
    return replace(result, name=name, info={**result.info, "name": name, "plateau_of": result.name})
