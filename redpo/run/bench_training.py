"""``python -m redpo bench training``: the cost of a unit of training work, per machine type, precision and padding.

Parts (``--backends``, comma-separated; default all six):

- ``re`` (or ``re:144``, ``re:680``): an RE run, train and predict, at each size of
  :data:`redpo.extraction.bench.RE_SIZES`, in fp32 and bf16 autocast, padded to each batch's longest sequence and to
  ``encoder.max_length`` (:func:`redpo.extraction.bench.time_re_run`);
- ``dpo`` (or ``dpo:<registry model>``): DPO steps of the profile's generator (or that model) in the same four
  settings, on half A's pairs, as training runs them now (its memory plan, completion-only scoring);
  ``dpo_first_edition`` (or ``dpo_first_edition:<model>``): the first edition's step, the profile's batch unplanned
  and every position scored (:func:`redpo.dpo.bench.time_dpo_steps`). Each plan is its own workload, and its
  speed-ups are over the first edition's step of the same model where that was timed;
- ``re_equivalence``: bf16 against fp32 RE runs on one K-shot split x ``EQUIVALENCE_SEEDS`` classifier seeds, the
  paired bootstrap CI of F1(bf16) - F1(fp32) that every claim uses;
- ``dpo_equivalence``: a probe adapter in each precision, its held-out reward accuracy with a 95% Wilson interval
  and whether bf16's accuracy lies inside fp32's interval, and the oracle's agreement with the samples each one
  writes, compared paired by relation and split (:func:`dpo_equivalence`);
- ``dpo_seed_noise``: the same comparison between two fp32 probes of different training seeds, the yardstick of
  ``dpo_equivalence``: how far two adapters differ when nothing but training noise separates them.

bf16 is timed only where the machine has native bf16 (:func:`redpo.models.precision.native_bf16`); elsewhere its
rows say why they are missing. Every invocation adds its measurements to ``metrics/bench_training.json`` under this
machine's type, keeping earlier ones (a repeated timing becomes a spread), so one file holds every machine type and
parts can run one at a time under the shared lock. The *first edition* settings are fp32 with batch-longest
padding: the RE collator (``DataCollatorWithPadding``) and TRL's preference collator both pad to the batch's
longest sequence, and neither had a precision setting.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redpo.analysis.audit import wilson
from redpo.analysis.stats import PairedCells, paired_f1_bootstrap, paired_mean_bootstrap
from redpo.config import ConfigError, Profile
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.replay import replay_models
from redpo.core.sample import generated_only
from redpo.data.splits import profile_schema
from redpo.dpo.bench import PRECISION_PROBES, probe_equivalence, seed_probes, step_name, time_dpo_steps
from redpo.dpo.pairs import build_and_save_pairs, load_pairs, pairs_path
from redpo.extraction.bench import RE_SIZES, equivalence_runs, time_re_run
from redpo.extraction.oracle import correctness, ensure_oracle
from redpo.generation.store import ArmResult
from redpo.models.precision import machine_type

PARTS = ("re", "dpo", "dpo_first_edition", "re_equivalence", "dpo_equivalence", "dpo_seed_noise")
DPO_PARTS = {"dpo": "training", "dpo_first_edition": "first edition"}
"""The DPO timing parts and the step each times (:data:`redpo.dpo.bench.PATHS`)."""
PRECISIONS = ("fp32", "bf16")
PADDINGS = ("longest", "fixed")
FIRST_EDITION = ("fp32", "longest")
"""The settings every committed run trained with (see the module docstring)."""
EQUIVALENCE_SEEDS = (0, 1)
CI_LEVEL = 0.95
"""Level of the probe adapters' reward-accuracy intervals: the level of every claim's CI."""
BENCH_FILE = "bench_training.json"
DOCS_BLOCK = re.compile(r"(<!-- bench_training:(?P<profile>[A-Za-z0-9._-]+) start\b[^\n]*-->\n).*?"
                        r"(\n<!-- bench_training:(?P=profile) end -->)", re.DOTALL)
"""The block of ``docs/benchmarks.md`` that holds a committed file's table (:func:`fill_docs`)."""


def _parts(backends: Sequence[str], profile: Profile) -> list[tuple[str, str, str]]:
    """``--backends`` items -> ``(part, argument, setting)``; refused with the list of what exists. A timed part
    may name one precision (``dpo@bf16``), or one precision and padding (``dpo@bf16/longest``), so that a long part
    runs in short locked pieces."""
    out = []
    for item in backends:
        spec, _, setting = item.partition("@")
        part, _, arg = spec.partition(":")
        precision, _, padding = setting.partition("/")
        timed = part in ("re", *DPO_PARTS)
        if (part not in PARTS or (arg and not timed) or (part == "re" and arg and not arg.isdigit())
                or precision not in ("", *PRECISIONS) or padding not in ("", *PADDINGS) or (setting and not timed)
                or (setting and not precision)):
            raise ConfigError(f"unknown bench training part {item!r}; use {', '.join(PARTS)}, re:<size>, "
                              "dpo:<registry model>, dpo_first_edition:<registry model>, each of the timed ones "
                              "optionally @fp32 or @bf16, or one setting, as @bf16/longest")
        out.append((part, arg or (profile.generator.model if part in DPO_PARTS else ""), setting))
    return out


def _settings(native: bool) -> list[tuple[str, str]]:
    return [(p, pad) for p in PRECISIONS for pad in PADDINGS if native or p == "fp32"]


def _append(entries: dict[str, Any], key: str, result: dict[str, Any], report: dict[str, Any], path: Path) -> None:
    """Add one measurement and save the file at once, summarised: a part that dies later (a killed process, a
    setting that runs out of memory) leaves what it measured in the tables as well as in the runs."""
    entries.setdefault(key, {"runs": []})["runs"].append(result)
    write_json(path, summarised(report))


def summarised(report: dict[str, Any]) -> dict[str, Any]:
    """Every machine's entries with their medians, its speed-up table, and the docs' markdown, from the runs."""
    for machine in report.get("machines", {}).values():
        for entries, field in ((machine.get("re", {}), "run_seconds"), (machine.get("dpo", {}), "step_seconds")):
            for key, entry in entries.items():
                entries[key] = _summarise(entry, field)
        machine["table"] = speedups(machine)
    report["markdown"] = markdown(report)
    return report


def _summarise(entry: dict[str, Any], seconds: str) -> dict[str, Any]:
    """Median and spread of the runs' ``seconds`` field (and its CPU seconds)."""
    def stats(values: list[float]) -> dict[str, Any]:
        return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values),
                "n": len(values)}

    walls = [r[seconds] for r in entry["runs"]]
    cpus = [r[seconds.replace("seconds", "cpu_seconds")] for r in entry["runs"]]
    return {**entry, "wall": stats(walls), "cpu": stats(cpus)}


def _dpo_step_seconds(run: dict[str, Any]) -> dict[str, Any]:
    """A DPO timing run's step: the last timed step (the first pays one-off allocations)."""
    last = run["steps"][-1]
    return {**run, "step_seconds": last["seconds"], "step_cpu_seconds": last["cpu_seconds"]}


def re_equivalence(profile: Profile) -> dict[str, Any]:
    """bf16 against fp32 on one split x two seeds, with the paired bootstrap CI of the F1 difference."""
    runs = equivalence_runs(profile, k=profile.fewshot.k[0], split_seed=profile.fewshot.seeds[0],
                            seeds=EQUIVALENCE_SEEDS)
    gold = runs["runs"]["fp32"][0]["predictions"]["gold"]
    cells = PairedCells(gold=gold, a=[r["predictions"]["pred"] for r in runs["runs"]["bf16"]],
                        b=[r["predictions"]["pred"] for r in runs["runs"]["fp32"]],
                        splits=[runs["split_seed"]] * len(EQUIVALENCE_SEEDS))
    effect = paired_f1_bootstrap(cells, runs["negative_label"], n_boot=profile.claims.bootstrap_replicates,
                                 seed=profile.claims.bootstrap_seed)
    slim = {p: [{k: v for k, v in r.items() if k != "predictions"} for r in rs] for p, rs in runs["runs"].items()}
    def agreement(x: dict[str, Any], y: dict[str, Any]) -> float:
        return round(sum(a == b for a, b in zip(x["predictions"]["pred"], y["predictions"]["pred"],
                                                strict=True)) / len(gold), 4)

    by = runs["runs"]
    return {**{k: v for k, v in runs.items() if k != "runs"}, "runs": slim,
            "delta_micro_f1": effect.to_json(), "ci_contains_zero": effect.low <= 0 <= effect.high,
            "prediction_agreement": [agreement(x, y) for x, y in zip(by["bf16"], by["fp32"], strict=True)],
            # The yardstick: how often two seeds of the same precision agree (training noise alone).
            "seed_agreement": {p: agreement(rs[0], rs[1]) for p, rs in by.items() if len(rs) > 1}}


def probe_agreement(profile: Profile, results: ResultsDir,
                    samples: Mapping[str, Mapping[tuple[int, int], ArmResult]]) -> dict[str, Any]:
    """The oracle's label of every sample each probe adapter wrote (kept, with its split, so any share can be
    recomputed) and its agreement with the relation each was written for. A replaying folder's oracle answers only
    for the committed samples, so there the profile's oracle is trained in a scratch folder (one training on the
    train split)."""
    schema = profile_schema(profile)
    with tempfile.TemporaryDirectory(prefix="redpo-bench-oracle-") as scratch:
        where = results if replay_models(results) is None else ResultsDir(profile, root=Path(scratch))
        oracle = ensure_oracle(profile, where, progress=False)
        out = {}
        for precision, by_split in samples.items():
            rows: list[dict[str, Any]] = []
            for (k, seed), arm in sorted(by_split.items()):
                made = generated_only(arm.all_samples())
                rows += [{"k": k, "seed": seed, "relation": s.relation, "oracle": label, "marked": s.to_marked()}
                         for s, label in zip(made, oracle.label(made), strict=True)]
            out[precision] = {
                **correctness([r["relation"] for r in rows], [r["oracle"] for r in rows], schema),
                "arm": next(iter(by_split.values())).arm if by_split else None, "splits": len(by_split),
                "agrees": sum(r["relation"] == r["oracle"] for r in rows), "samples": rows,
            }
    return out


def _cluster_shares(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int, str], float]:
    """Oracle agreement per relation on a split: the unit of the probes' comparison (one call's samples are alike)."""
    counts: dict[tuple[int, int, str], list[int]] = {}
    for r in rows:
        c = counts.setdefault((r["k"], r["seed"], r["relation"]), [0, 0])
        c[0] += r["relation"] == r["oracle"]
        c[1] += 1
    return {key: agree / n for key, (agree, n) in counts.items()}


def dpo_equivalence(probe: dict[str, Any], agreement: Mapping[str, Any] | None = None, *,
                    pair: tuple[str, str] = ("fp32", "bf16"), n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Two probe adapters of :func:`redpo.dpo.bench.probe_equivalence` (``pair``: the reference, then the one
    compared with it) with a Wilson interval on each held-out reward accuracy (few held-out pairs: the normal
    interval would leave [0, 1]) and whether the second's lies inside the first's; and the oracle's agreement with
    each one's samples (:func:`probe_agreement`), compared paired by relation and split: the bootstrap CI of the
    mean per-relation difference, second - first, over the relations both wrote for. A sample's Wilson interval
    is kept to describe each share, but decides nothing: a call's samples are alike, so it would be too narrow."""
    first, second = pair
    n = probe["held_out_pairs"]
    adapters = {}
    for name, a in probe["adapters"].items():
        accuracy = a["reward_accuracy"]
        ci = wilson(round(accuracy * n), n, CI_LEVEL) if accuracy is not None else None
        adapters[name] = {**a, "reward_accuracy_ci": list(ci) if ci else None}
    samples = {name: {**s, "oracle_agreement_ci": list(wilson(s["agrees"], s["n"], CI_LEVEL)) if s["n"] else None}
               for name, s in (agreement or {}).items()}
    out = {**probe, "pair": list(pair), "adapters": adapters, "samples": samples,
           "second_within_first_ci": _within(adapters.get(first, {}), adapters.get(second, {}), "reward_accuracy")}
    if {first, second} <= set(samples):
        a, b = (_cluster_shares(samples[name]["samples"]) for name in pair)
        both = sorted(set(a) & set(b))
        if both:
            effect = paired_mean_bootstrap([b[c] - a[c] for c in both], n_boot=n_boot, seed=seed, level=CI_LEVEL)
            # a relation only one probe wrote for on a split has no pair: counted, so none drops out unseen
            out["delta_oracle_agreement"] = {**effect.to_json(), "clusters": len(both),
                                             "clusters_unpaired": len(set(a) ^ set(b))}
            out["samples_ci_contains_zero"] = effect.low <= 0 <= effect.high
    return out


def _within(first: Mapping[str, Any], second: Mapping[str, Any], field: str) -> bool | None:
    """Whether the second's ``field`` lies inside the first's ``<field>_ci``; ``None`` when either is missing."""
    ci = first.get(f"{field}_ci")
    return None if not ci or second.get(field) is None else ci[0] <= second[field] <= ci[1]


def _compared_probes(profile: Profile, results: ResultsDir, probes: Mapping[str, Mapping[str, Any]]
                     ) -> dict[str, Any]:
    """Two probe adapters trained, their samples judged, and the second compared with the first."""
    probe = probe_equivalence(profile, _half_a_pairs(profile, results), results=results, probes=probes)
    return dpo_equivalence(probe, probe_agreement(profile, results, probe.pop("samples")), pair=tuple(probes),
                           n_boot=profile.claims.bootstrap_replicates, seed=profile.claims.bootstrap_seed)


def _half_a_pairs(profile: Profile, results: ResultsDir) -> Any:
    if not pairs_path(results, "A").is_file():
        build_and_save_pairs(profile, results)
    return load_pairs(results, "A")


def speedups(machine: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per workload: median seconds in each setting, and the speed-up of each over the first edition's."""
    rows = []
    workloads = [(f"RE run, {stem} samples", stem, "run_seconds", machine.get("re", {}))
                 for stem in (key.rsplit("/", 2)[0] for key in machine.get("re", {}))]
    workloads += [(f"DPO step, {stem}", stem, "step_seconds", machine.get("dpo", {}))
                  for stem in (key.rsplit("/", 2)[0] for key in machine.get("dpo", {}))]
    seen: set[str] = set()
    for label, stem, field, entries in workloads:
        if stem in seen:
            continue
        seen.add(stem)
        row: dict[str, Any] = {"workload": label}
        base = _first_edition(entries, stem)
        own = entries.get(f"{stem}/{'/'.join(FIRST_EDITION)}")
        if base is not None and base is not own:
            row["baseline"] = "the first edition's step"
        elif base is not None and own["runs"][0].get("path") == "training":
            row["baseline"] = "its own fp32 (no first-edition step timed)"
        for precision, padding in _settings(True):
            entry = entries.get(f"{stem}/{precision}/{padding}")
            if entry is None:
                continue
            s = _summarise(entry, field)
            row[f"{precision} {padding}"] = s["wall"]["median"]
            row[f"{precision} {padding} cpu"] = s["cpu"]["median"]
            if base is not None:
                b = _summarise(base, field)
                row[f"speed-up {precision} {padding}"] = round(b["wall"]["median"] / s["wall"]["median"], 2)
                row[f"speed-up {precision} {padding} cpu"] = round(b["cpu"]["median"] / s["cpu"]["median"], 2)
        rows.append(row)
    return rows


def _first_edition(entries: dict[str, Any], stem: str) -> dict[str, Any] | None:
    """The baseline of a workload's speed-ups: its own first-edition setting, or for a DPO step on the training's
    path, the first edition's step of the same model (another workload: its own plan and scoring)."""
    setting = "/".join(FIRST_EDITION)
    own = entries.get(f"{stem}/{setting}")
    first = next(e["runs"][0] for key, e in entries.items() if key.rsplit("/", 2)[0] == stem)
    if first.get("path") != "training":
        return own
    return next((e for key, e in entries.items() if key.endswith(f"/{setting}")
                 and e["runs"][0].get("path") == "first edition" and e["runs"][0]["model"] == first["model"]), own)


def markdown(report: dict[str, Any]) -> str:
    """The docs' table: per machine type and workload, median wall seconds (CPU seconds) in each setting, the
    speed-up of bf16 batch-longest over the first edition's settings, and the equivalence checks' numbers. Machine
    types in sorted order, so the saved file (written with sorted keys) renders the same table again."""
    head = ("| machine | workload | fp32 fixed | fp32 longest | bf16 fixed | bf16 longest "
            "| speed-up over the first edition's settings |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for kind, machine in sorted(report.get("machines", {}).items()):
        for row in machine.get("table", []):
            cells = [f"{row[k]} s ({row[k + ' cpu']} s)" if k in row else "n/a"
                     for k in ("fp32 fixed", "fp32 longest", "bf16 fixed", "bf16 longest")]
            best = next((s for s in ("bf16 longest", "fp32 longest", "bf16 fixed", "fp32 fixed") if s in row),
                        "fp32 longest")  # the fastest setting timed (a fixed-padding plan may have only those)
            speed = f"{row.get(f'speed-up {best}', 'n/a')}x ({row.get(f'speed-up {best} cpu', 'n/a')}x cpu)"
            speed += f", over {row['baseline']}" if "baseline" in row else ""
            where = f"{kind} ({machine['machine']['cpu']})"
            lines.append(f"| {where} | {row['workload']} | {' | '.join(cells)} | {speed} |")
    for kind, machine in sorted(report.get("machines", {}).items()):
        eq = machine.get("re_equivalence", {})
        if "delta_micro_f1" in eq:
            d = eq["delta_micro_f1"]
            lines.append(f"\n{kind}: RE micro-F1(bf16) - micro-F1(fp32), split {eq['split_seed']} x seeds "
                         f"{eq['seeds']}: "
                         f"{100 * d['estimate']:+.2f} points [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] "
                         f"(95% CI {'contains' if eq['ci_contains_zero'] else 'excludes'} 0); same prediction on "
                         f"{', '.join(f'{100 * a:.1f}%' for a in eq['prediction_agreement'])} of the test sentences "
                         f"(two seeds of one precision: {_seed_agreement(eq.get('seed_agreement'))}).")
        for part, what in (("dpo_equivalence", "precision"), ("dpo_seed_noise", "training seed")):
            lines += _probe_lines(kind, machine.get(part, {}), what)
    return "\n".join(lines)


def _probe_lines(kind: str, probe: Mapping[str, Any], what: str) -> list[str]:
    """The docs' lines of one probe comparison (:func:`dpo_equivalence`): each probe's held-out reward accuracy and
    samples' agreement, then the two comparisons; ``what`` names what differs between the two probes."""
    lines = []
    for name, a in probe.get("adapters", {}).items():
        lines.append(f"\n{kind}: DPO probe adapter {name}: held-out reward accuracy {a['reward_accuracy']} "
                     f"{a['reward_accuracy_ci']} on {probe['held_out_pairs']} pairs, margin {a['reward_margin']}, "
                     f"training losses {a['losses']}.")
    for name, s in probe.get("samples", {}).items():
        lines.append(f"\n{kind}: DPO probe adapter {name}: the oracle agrees with {s['agrees']} of its {s['n']} "
                     f"{s['arm']} samples on {s.get('splits', 1)} splits, {s['oracle_agreement']} "
                     f"{s['oracle_agreement_ci']} (Wilson, per sample).")
    first, second = probe.get("pair", ("fp32", "bf16"))
    if probe.get("second_within_first_ci") is not None:
        where = "inside" if probe["second_within_first_ci"] else "outside"
        lines.append(f"\n{kind}: {second}'s reward accuracy is {where} {first}'s interval ({what}).")
    if "delta_oracle_agreement" in probe:
        d = probe["delta_oracle_agreement"]
        lines.append(f"\n{kind}: oracle agreement of the probes' samples ({what}), {second} - {first}, mean over "
                     f"{d['clusters']} relations x splits ({d.get('clusters_unpaired', 0)} unpaired): "
                     f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (95% CI "
                     f"{'contains' if probe['samples_ci_contains_zero'] else 'excludes'} 0).")
    return lines


def _seed_agreement(by_precision: Mapping[str, float] | None) -> str:
    """How often two classifier seeds of one precision predict the same label: the yardstick of the agreement."""
    if not by_precision:
        return "not recorded"
    return ", ".join(f"{100 * share:.1f}% in {precision}" for precision, share in sorted(by_precision.items()))


def fill_docs(text: str, results_root: Path) -> str:
    """``text`` with every ``bench_training:<profile>`` block rewritten from ``results_root/<profile>/metrics``'s
    committed file: the docs quote measured numbers only, and a test fails when a block and its file differ."""
    def table(m: re.Match[str]) -> str:
        report = read_json(results_root / m["profile"] / "metrics" / BENCH_FILE)
        return f"{m[1]}{markdown(report)}{m[3]}"

    return DOCS_BLOCK.sub(table, text)


def bench_training(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = PARTS) -> dict[str, Any]:
    """Run the chosen parts on this machine and merge them into ``metrics/bench_training.json``."""
    chosen = _parts(backends, profile)
    path = results.metrics / BENCH_FILE
    report: dict[str, Any] = read_json(path) if path.is_file() else {}
    report.update(profile=profile.name, machines=report.get("machines", {}))
    info = machine_type()
    machine = report["machines"].setdefault(info["type"], {})
    machine["machine"] = info
    settings = _settings(info["native_bf16"])
    for part, arg, only in chosen:
        print(f"bench training: {part}{':' + arg if arg else ''}{'@' + only if only else ''} ...", flush=True)
        timed = [(p, pad) for p, pad in settings if not only or only in (p, f"{p}/{pad}")]
        if part == "re":
            for size in [int(arg)] if arg else RE_SIZES:
                for precision, padding in timed:
                    _append(machine.setdefault("re", {}), f"{size}/{precision}/{padding}",
                            time_re_run(profile, size, precision, padding), report, path)  # type: ignore[arg-type]
        elif part in DPO_PARTS:
            pairs = _half_a_pairs(profile, results)
            for precision, padding in timed:
                run = time_dpo_steps(profile, pairs, arg, precision, padding,  # type: ignore[arg-type]
                                     path=DPO_PARTS[part])
                _append(machine.setdefault("dpo", {}), f"{step_name(run)}/{precision}/{padding}",
                        _dpo_step_seconds(run), report, path)
        elif part == "dpo_seed_noise":  # the yardstick of dpo_equivalence: two fp32 probes of different seeds
            machine[part] = _compared_probes(profile, results, seed_probes(profile))
        elif not info["native_bf16"]:
            machine[part] = {"skipped": "no native bf16 on this machine: bf16 is refused here, nothing to compare"}
        elif part == "re_equivalence":
            machine[part] = re_equivalence(profile)
        else:
            machine[part] = _compared_probes(profile, results, PRECISION_PROBES)
    if not info["native_bf16"]:
        machine["bf16"] = "not timed: this machine has no native bf16 (redpo.models.precision.native_bf16)"
    return summarised(report)
