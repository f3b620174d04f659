"""The hand check: a seeded sample of each arm's generated samples, judged by a person, beside the oracle.

Why: the oracle (an RE classifier trained on the real training split) is the run's only correctness measure, and
it is itself a model with a blind spot for exactly the failures generation makes: a near copy of a demonstration
with the entities swapped reads, to a classifier, like a fine sample of its relation. A few dozen samples read by
a person say what the oracle's agreement is worth, and what the samples that are not correct are instead.

Two steps, each a file under ``results/<profile>/audit/``:

* :func:`draw_arm` writes ``<arm>_todo.jsonl``: ``per_arm`` generated samples (never the manual copies), stratified
  so that they spread over the relations and the K-shot splits, each with the relation's explanation and the
  closest demonstration of its split (its relation's K-shot samples) with its near-copy score. The oracle's label
  is left out, so that it cannot sway the judge.
* The judge copies it to ``<arm>.jsonl`` and fills ``judgement`` (one of :data:`JUDGEMENTS`) and a one-line
  ``reason`` on every line. :func:`summarise` validates every judged file (each problem one ``error:`` line naming
  file:line) and writes ``summary.json`` and ``summary.md``: the counts per judgement, the share correct with a
  Wilson CI, and the oracle's agreement on the same samples, looked up by marked text in the committed
  ``metrics/correctness_*_labels.jsonl``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from redpo.config import Profile
from redpo.core.io import DataError, ResultsDir, atomic_write, iter_jsonl, read_samples, write_json
from redpo.core.sample import RESample, generated_only
from redpo.core.tables import json_safe, markdown_table, share
from redpo.data.splits import generation_splits, kshot_dir, load_profile_kshot, profile_schema, write_profile_kshots
from redpo.generation.parse import near_copy_score
from redpo.generation.store import arm_paths

JUDGEMENTS = ("correct", "wrong relation", "wrong direction", "malformed", "near copy")
"""What a judged sample is, one of five, checked in this order of precedence when several apply: a near copy of a
demonstration is a near copy whatever its label (the reason says if the label is also wrong); a broken sentence
or markers on a nonsense span is malformed; the right relation type with the roles reversed is a wrong
direction; any other relation (the reason names it) is a wrong relation."""
CORRECT = "correct"
ORACLE_FILES = "correctness_*_labels.jsonl"
"""The oracle's per-sample labels in ``metrics/`` (notebooks 02 and 03), one row per generated sample."""

SampleKey = tuple[str, int, int, str, str]
"""(arm, K, split seed, relation, marked text): how a sample is found in the oracle's label files."""


class AuditError(DataError):
    """A judged file has problems; ``lines`` holds one ``file:line: ...`` message per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(lines[0])
        self.lines = list(lines)


# ---- drawing -----------------------------------------------------------------------------------------------
def arm_samples(profile: Profile, results: ResultsDir, arm: str) -> dict[tuple[int, int], list[RESample]]:
    """``{(K, split seed): generated samples}`` of every generation split that has the arm's file.

    Splits without one are skipped (a new configuration may have run on fewer splits); none at all is an error."""
    found = {}
    for k, seed in generation_splits(profile):
        path = arm_paths(results, arm, k, seed)["samples"]
        if path.is_file():
            found[(k, seed)] = generated_only(read_samples(path))
    if not found:
        raise DataError(f"{results.generations}: no {arm}_k<K>_s<seed>.jsonl for any generation split of profile "
                        f"{profile.name!r}; check the arm name (a file stem under generations/) or run it first")
    return found


def demonstrations(profile: Profile, results: ResultsDir, k: int, seed: int) -> list[RESample]:
    """The split's K-shot samples, the demonstrations every prompt drew from; written from the dataset first when
    the results folder lacks them (``kshot/`` is not committed; notebook 00 writes the same files)."""
    if not (kshot_dir(results.kshot, k, seed) / "train.txt").is_file():
        write_profile_kshots(profile, results.kshot)
    return load_profile_kshot(profile, results.kshot, k, seed)


def closest_demo(sample: RESample, demos: Sequence[RESample]) -> tuple[RESample | None, float]:
    """The demonstration of the sample's relation whose entity-masked sentence is nearest to the sample's, and
    that near-copy score. Only its own relation's: those are the K-shot samples its prompts showed (any relation's
    when the split has none of it)."""
    own = [d for d in demos if d.relation == sample.relation] or list(demos)
    if not own:
        return None, 0.0
    scores = [near_copy_score(sample, [d]) for d in own]
    best = int(np.argmax(scores))  # the first of equals
    return own[best], scores[best]


def stratified_draw(pools: Mapping[tuple[int, int], Sequence[RESample]], n: int, seed: int
                    ) -> list[tuple[tuple[int, int], RESample]]:
    """``n`` samples, spread as evenly as the pools allow over relations first and splits second.

    Round robin over the relations (in a seeded order): each turn takes one sample of that relation, from the
    split that has given the fewest so far (seeded tie-break), so 40 samples over 18 relations give each relation
    2 or 3 and each of five splits about 8. Fewer than ``n`` when the arm has fewer samples."""
    rng = np.random.default_rng(seed)
    cells: dict[str, dict[tuple[int, int], list[RESample]]] = {}
    for split in sorted(pools):
        for s in pools[split]:
            cells.setdefault(s.relation, {}).setdefault(split, []).append(s)
    relations = sorted(cells)
    order = [relations[i] for i in rng.permutation(len(relations))]
    per_split: Counter[tuple[int, int]] = Counter()
    picked: list[tuple[tuple[int, int], RESample]] = []
    while len(picked) < n and any(pool for by_split in cells.values() for pool in by_split.values()):
        for relation in order:
            splits = sorted(s for s, left in cells[relation].items() if left)
            if len(picked) == n or not splits:
                continue
            fewest = min(per_split[s] for s in splits)
            ties = [s for s in splits if per_split[s] == fewest]
            split = ties[int(rng.integers(len(ties)))]
            pool = cells[relation][split]
            picked.append((split, pool.pop(int(rng.integers(len(pool))))))
            per_split[split] += 1
    return picked


def draw_arm(profile: Profile, results: ResultsDir, arm: str, n: int, seed: int) -> Path:
    """Write ``audit/<arm>_todo.jsonl``: the seeded sample to judge, with what a judge needs beside each."""
    schema = profile_schema(profile)
    picked = stratified_draw(arm_samples(profile, results, arm), n, seed)
    demos = {split: demonstrations(profile, results, *split) for split in {split for split, _ in picked}}
    rows = []
    for (k, split_seed), sample in picked:
        demo, score = closest_demo(sample, demos[(k, split_seed)])
        rows.append({
            "arm": arm, "k": k, "split": split_seed, "relation": sample.relation, "marked": sample.to_marked(),
            "explanation": schema.explanations.get(sample.relation, ""),
            "closest_demo": demo.to_marked() if demo else None,
            "closest_demo_relation": demo.relation if demo else None,
            "near_copy_score": round(score, 3),
            "judgement": "", "reason": "",
        })
    todo, text = results.audit / f"{arm}_todo.jsonl", _jsonl(rows)
    judged = todo.with_name(f"{arm}.jsonl")
    if judged.is_file() and todo.is_file() and todo.read_text(encoding="utf-8") != text:
        raise DataError(f"{judged}: judges a different draw than this one (seed {seed}, {n} per arm); keep the "
                        f"judged draw, or move {judged.name} away to judge the new one")
    return atomic_write(todo, text)


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# ---- reading the judgements --------------------------------------------------------------------------------
def read_judged(judged: Path, todo: Path) -> list[dict[str, Any]]:
    """The todo rows of ``todo`` with each one's ``judgement`` and ``reason`` from ``judged``, in todo order.

    Every line of ``judged`` must name a drawn sample (by relation and marked text) once, with a judgement from
    :data:`JUDGEMENTS` and a non-empty one-line reason, and every drawn sample must be judged; every problem is
    one line naming file:line, all reported at once (:class:`AuditError`)."""
    drawn = {(row["relation"], row["marked"]): (lineno, row) for lineno, row in iter_jsonl(todo)}
    errors: list[str] = []
    verdicts: dict[tuple[str, str], tuple[str, str]] = {}
    for lineno, row in iter_jsonl(judged):
        where = f"{judged}:{lineno}"
        key = (row.get("relation"), row.get("marked"))
        judgement, reason = row.get("judgement"), row.get("reason")
        if key not in drawn:
            errors.append(f"{where}: relation {key[0]!r} with marked text {key[1]!r} is not a sample drawn in "
                          f"{todo.name}; copy relation and marked from it unchanged")
        elif key in verdicts:
            errors.append(f"{where}: the sample {key[1]!r} is judged twice; keep one line")
        if judgement not in JUDGEMENTS:
            errors.append(f"{where}: judgement {judgement!r} is not one of {', '.join(JUDGEMENTS)}; pick one")
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
            errors.append(f"{where}: reason must be one non-empty line; say in a line why the judgement holds")
        if key in drawn and key not in verdicts:
            verdicts[key] = (str(judgement), str(reason))
    for key, (lineno, _) in drawn.items():
        if key not in verdicts:
            errors.append(f"{todo}:{lineno}: drawn sample {key[1]!r} is not judged in {judged.name}; add its line")
    if errors:
        raise AuditError(errors)
    return [{**row, "judgement": verdicts[key][0], "reason": verdicts[key][1]} for key, (_, row) in drawn.items()]


def oracle_labels(results: ResultsDir) -> dict[SampleKey, str]:
    """The oracle's label of every generated sample it labelled, from all ``metrics/correctness_*_labels.jsonl``."""
    labels: dict[SampleKey, str] = {}
    for path in sorted(results.metrics.glob(ORACLE_FILES)):
        for _, row in iter_jsonl(path):
            labels.setdefault((row["arm"], int(row["k"]), int(row["seed"]), row["relation"], row["marked"]),
                              row["oracle"])
    return labels


# ---- the summary -------------------------------------------------------------------------------------------
def wilson(successes: int, n: int, level: float) -> tuple[float, float] | None:
    """Wilson score interval of a share (sound at 40 samples and near 0 or 1, where the normal one is not)."""
    if n == 0:
        return None
    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def arm_summary(rows: Sequence[Mapping[str, Any]], labels: Mapping[SampleKey, str], level: float
                ) -> dict[str, Any]:
    """Counts per judgement, the share correct with its CI, and the oracle's agreement on the same samples."""
    n = len(rows)
    counts = Counter(r["judgement"] for r in rows)
    labelled = [(r, o) for r in rows
                if (o := labels.get((r["arm"], int(r["k"]), int(r["split"]), r["relation"], r["marked"]))) is not None]
    hand = [r["judgement"] == CORRECT for r, _ in labelled]
    machine = [o == r["relation"] for r, o in labelled]
    arms, splits = {r["arm"] for r in rows}, {(int(r["k"]), int(r["split"])) for r in rows}
    whole = [o == key[3] for key, o in labels.items() if key[0] in arms and key[1:3] in splits]
    kappa = cohen_kappa_score(hand, machine) if len(set(hand)) > 1 and len(set(machine)) > 1 else None
    pairs = list(zip(hand, machine, strict=True))
    return {
        "n": n,
        "counts": {j: counts.get(j, 0) for j in JUDGEMENTS},
        "correct_share": share(counts.get(CORRECT, 0), n),
        "correct_ci": wilson(counts.get(CORRECT, 0), n, level),
        "oracle": {
            "labelled": len(labelled),
            "agrees": sum(machine),
            "share": share(sum(machine), len(labelled)),
            "by_judgement": {j: sum(m for (r, _), m in zip(labelled, machine, strict=True) if r["judgement"] == j)
                             for j in JUDGEMENTS},
            "arm_labelled": len(whole),
            "arm_agrees": sum(whole),
            "arm_share": share(sum(whole), len(whole)),
        },
        "oracle_vs_correct": {
            "both_correct": sum(h and m for h, m in pairs),
            "hand_only": sum(h and not m for h, m in pairs),
            "oracle_only": sum(m and not h for h, m in pairs),
            "neither": sum(not h and not m for h, m in pairs),
            "agreement": share(sum(h == m for h, m in pairs), len(pairs)),
            "kappa": None if kappa is None else round(float(kappa), 4),
        },
    }


def summarise(profile: Profile, results: ResultsDir, arms: Sequence[str] | None = None) -> dict[str, Any]:
    """Validate every judged file and write ``audit/summary.json`` and ``audit/summary.md``.

    ``arms``: the judged arms to summarise (default: every ``<arm>.jsonl`` beside its ``<arm>_todo.jsonl``, so an
    arm added later joins the summary without naming it). Problems in any file are all reported together."""
    folder = results.audit
    names = list(arms) if arms else sorted(p.name.removesuffix("_todo.jsonl") for p in folder.glob("*_todo.jsonl")
                                           if (folder / p.name.replace("_todo.jsonl", ".jsonl")).is_file())
    if not names:
        raise DataError(f"{folder}: no judged <arm>.jsonl beside an <arm>_todo.jsonl; draw with `python -m redpo "
                        f"audit --profile {profile.name} --draw`, then judge a copy of each todo file")
    errors: list[str] = []
    judged: dict[str, list[dict[str, Any]]] = {}
    for arm in names:
        try:
            judged[arm] = read_judged(folder / f"{arm}.jsonl", folder / f"{arm}_todo.jsonl")
        except AuditError as err:
            errors += err.lines
    if errors:
        raise AuditError(errors)
    labels = oracle_labels(results)
    level = profile.audit.ci_level
    summary = {"profile": profile.name, "ci_level": level, "judgements": list(JUDGEMENTS),
               "arms": {arm: arm_summary(rows, labels, level) for arm, rows in judged.items()}}
    write_json(folder / "summary.json", json_safe(summary))
    atomic_write(folder / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """Two tables: counts with the share correct and the oracle beside them; the oracle's agreement by judgement."""
    pct = f"{summary['ci_level']:.0%}"
    main, by_judgement = [], []
    for arm, s in summary["arms"].items():
        o, ov = s["oracle"], s["oracle_vs_correct"]
        ci = s["correct_ci"]
        main.append({
            "arm": arm, "n": s["n"], **s["counts"],
            f"share correct [{pct} CI]": f"{s['correct_share']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "",
            "oracle agrees (these samples)": _fraction(o["agrees"], o["labelled"]),
            "oracle agrees (whole arm)": _fraction(o["arm_agrees"], o["arm_labelled"]),
            "oracle = hand on 'correct'": _fraction(ov["both_correct"] + ov["neither"], o["labelled"]),
            "kappa": "" if ov["kappa"] is None else f"{ov['kappa']:.2f}",
        })
        by_judgement.append({"arm": arm, **{j: f"{o['by_judgement'][j]} / {s['counts'][j]}" for j in JUDGEMENTS}})
    return (
        f"# Hand check: {summary['profile']}\n\n"
        "Counts per judgement of the seeded sample of each arm (`audit/<arm>.jsonl`, one reason per sample), the "
        "share judged correct with its Wilson CI, and the oracle on the same samples: how often its label is the "
        "intended relation, the same over every sample of the arm on those splits, and how often it agrees with the "
        "hand on whether a sample is correct (with Cohen's kappa).\n\n"
        + markdown_table(pd.DataFrame(main), index=False)
        + "\nThe oracle agrees with the intended relation on this many of the samples of each judgement:\n\n"
        + markdown_table(pd.DataFrame(by_judgement), index=False)
    )


def _fraction(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.2f})" if n else ""


def audit_command(profile: Profile, results: ResultsDir, *, draw: bool, arms: Sequence[str] | None) -> list[str]:
    """``python -m redpo audit``: draw ``arms`` (default ``audit.arms``) with the profile's seed, or summarise
    ``arms`` (default: every judged arm); returns the lines it prints."""
    if draw:
        return [f"{arm}: {draw_arm(profile, results, arm, profile.audit.per_arm, profile.seed)}"
                for arm in arms or profile.audit.arms]
    summary = summarise(profile, results, arms)
    return [f"{arm}: " + ", ".join(f"{n} {j}" for j, n in s["counts"].items())
            + f"; the oracle agrees on {s['oracle']['agrees']}/{s['oracle']['labelled']}"
            for arm, s in summary["arms"].items()] + [f"saved {results.audit / 'summary.md'}"]
