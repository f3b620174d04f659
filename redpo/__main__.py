"""``python -m redpo run|figures|pack-replay|snapshot|data|models|engine|bench|dpo|audit|readme``: the CLI.

Exit codes: 0 success; 1 a notebook or model failed; 2 bad input, busy or refused (a bad profile or override,
data that ``data --check`` refuses, an unknown model, a results folder another run holds); 130 interrupted by
Ctrl-C, 143 by SIGTERM. Every expected failure prints ``error:`` lines naming the cause and no traceback (a dataset
prints one line per problem); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redpo.config import (
    DPO_HALVES,
    REPO_ROOT,
    ConfigError,
    available_profiles,
    data_dir,
    load_profile,
    parse_override,
)
from redpo.core.io import DataError, ResultsDir, write_json
from redpo.core.lock import ResultsInUse, hold_results
from redpo.core.manifest import record_rebuilt_files
from redpo.core.replay import ReplayMiss
from redpo.data.fetch import default_mirror, fetch_data
from redpo.data.fewrel import carve_fewrel
from redpo.data.overview import overview_lines
from redpo.models.registry import ModelError
from redpo.run.console import format_table
from redpo.run.runner import NotebookFailed, RunnerError, run, stop_on_signals
from redpo.site.readme import refresh_blocks

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_SIGNAL = 128
"""Interrupted: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a signal."""
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, RunnerError, DataError, ModelError, ResultsInUse, ReplayMiss,
)
"""Errors that are the user's to fix: one ``error:`` line and exit 2, no traceback."""

BENCHMARKS: dict[str, str] = {
    "generation": "redpo.generation.bench:bench_generation",
    "determinism": "redpo.generation.bench:bench_determinism",
    "lora": "redpo.dpo.lora_check:bench_lora",
    "training": "redpo.run.bench_training:bench_training",
    "grid": "redpo.extraction.grid_bench:bench_grid",
    "output": "redpo.extraction.output_bench:bench_output",
}
"""``python -m redpo bench NAME`` -> ``"module:function"``, imported only when that benchmark runs.

The function takes ``(profile: Profile, results: ResultsDir, *, backends: list[str])`` (``--backends``, or its own
default when not given) and returns a JSON-safe dict, which the CLI prints and saves as
``metrics/bench_NAME.json``. Register one by adding a line here.
"""


# ---- helpers --------------------------------------------------------------------------------------------
def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``-p key=value`` items -> ``{key: value}``; a later item wins over an earlier one."""
    return dict(parse_override(item) for item in items or [])


# ---- commands ---------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    only = [n for part in args.only or [] for n in part.split(",")]
    run(args.profile, parse_overrides(args.param), only=only, results_dir=args.results_dir,
        notebooks_dir=args.notebooks_dir, progress=not args.no_progress)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from redpo.data.check import check_dataset, check_profile, draft_relations

    if args.draft_relations:
        print(f"wrote {draft_relations(Path(args.draft_relations))}; write each TODO explanation, then run "
              f"`python -m redpo data --check {args.draft_relations}`")
        return 0
    if args.fewrel:
        dest = carve_fewrel(args.fewrel, args.relations, args.sizes, args.seed)
        print(f"wrote {dest}; run on it with -p dataset.name=custom -p dataset.path={dest} -p dataset.relations=null")
        return 0
    if args.check is not None:  # the same check `run` makes before any notebook (redpo.data.check)
        profile = load_profile(args.profile, parse_overrides(args.param))
        folder = Path(args.check) if args.check else profile.dataset_dir
        report = check_dataset(folder) if args.check else check_profile(profile)
        for line in report.warnings:
            print(f"warning: {line}")
        for line in report.errors:
            print(f"error: {line}", file=sys.stderr)
        sizes = ", ".join(f"{split} {sum(c.values()):,}" for split, c in report.counts.items())
        print(f"{folder}: {'ok' if report.ok else f'{len(report.errors)} error(s)'} ({sizes or 'no split read'})")
        return 0 if report.ok else EXIT_USAGE
    if args.fetch:
        mirror = args.mirror or default_mirror()
        log = fetch_data(data_dir(), mirror)
        done = Counter(line.split(" ", 1)[0] for line in log)
        print(
            f"data from {mirror or 'the pinned download'} into {data_dir()}: "
            + ", ".join(f"{n} {what}" for what, n in sorted(done.items()))
        )
    profile = load_profile(args.profile, parse_overrides(args.param))
    print("\n".join(overview_lines(profile)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from redpo.models.load import registry_table, resolve_model  # lazily: loading the model stack takes seconds

    if args.prepare:
        info = resolve_model(args.prepare)
        row = {"name": info.name, "source": info.source, "sha256": info.sha256, "path": info.path}
        print(format_table([row]))
    else:
        print(format_table(registry_table()))
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    """Build llama-server for this machine (once; a finished build is reused) and print where it is."""
    from redpo.models.llama_cpp import build_llama_server, find_build

    build = build_llama_server(jobs=args.jobs, progress=not args.no_progress) if args.build else find_build()
    if build is None:
        print("llama-server: not built for this machine; run `python -m redpo engine --build` (or `make setup`)")
        return 0
    print(format_table([{"engine": "llama.cpp", "server": str(build.server), "version": build.version,
                         "built in": f"{build.info.get('build_seconds')} s"}]))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    module, _, func = BENCHMARKS[args.bench].partition(":")
    bench: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), func)
    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    with hold_results(results.root):  # a bench writes there and starts servers there, as a run does
        report = bench(profile, results, **({"backends": chosen} if chosen else {}))
        path = write_json(results.metrics / f"bench_{args.bench}.json", report)
        record_rebuilt_files(results, (f"metrics/bench_{args.bench}.json",))
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"saved {path}", file=sys.stderr)
    return 0


MODEL_LIBRARIES = ("torch", "transformers", "peft", "trl")


def cmd_figures(args: argparse.Namespace) -> int:
    """Rebuild every figure, table and ``claims.md`` from the saved metrics; it loads no model and says so."""
    import time

    from redpo.analysis import plots, report  # lazily: matplotlib is only needed here

    start = time.perf_counter()
    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    if not (results.root / "metrics").is_dir():
        raise ConfigError(f"{results.root}/metrics does not exist; run `python -m redpo run --profile "
                          f"{profile.name}` first")
    with hold_results(results.root):
        built = report.build_all(results, profile.claims)  # first: the claims forest plot draws the report's effects
        for name, out in plots.draw_all(results).items():
            print(f"figure {name}: {out if isinstance(out, str) else ', '.join(p.name for p in out)}")
        for group in report.TABLES:
            print(f"tables {group}: {built[group] if isinstance(built[group], str) else ', '.join(built[group])}")
        print(f"claims.md: {', '.join(f'{i} {v}' for i, v in enumerate(built['claims'], 1))}")
        record_rebuilt_files(results)
    loaded = [m for m in MODEL_LIBRARIES if m in sys.modules]
    print(f"rebuilt in {time.perf_counter() - start:.1f}s; model libraries imported: {', '.join(loaded) or 'none'}")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    """Notebook 03's pairs or one adapter, outside a notebook: ``--build-pairs`` first, then ``--half A`` and
    ``--half B``, each under ``accelerate launch -m redpo dpo ...`` on several GPUs if wanted. The notebook reuses
    whatever this trained (same fingerprint). Under ``accelerate launch`` only rank 0 takes the results lock: the
    other ranks are the same training."""
    import contextlib
    import os

    from redpo.dpo.adapters import adapter_dir, ensure_adapter
    from redpo.dpo.pairs import build_and_save_pairs
    from redpo.dpo.summary import seconds_per_step

    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    first_rank = int(os.environ.get("RANK", "0")) == 0
    with hold_results(results.root) if first_rank else contextlib.nullcontext():
        if args.build_pairs:
            pairs, leakage = build_and_save_pairs(profile, results)
            sizes = {h: len(ds) for h, ds in pairs.datasets.items()}
            print(f"pairs {sizes}, leakage ok: {leakage['ok']} -> {results.dpo}")
            return 0 if leakage["ok"] else EXIT_FAILED
        log = ensure_adapter(profile, results, args.half, progress=not args.no_progress)
    print(f"adapter {args.half}: {log['steps']} steps, {seconds_per_step(log)} s/step, held-out reward accuracy "
          f"{log['held_out']['reward_accuracy']}{' (reused)' if log['reused'] else ''} -> "
          f"{adapter_dir(results, args.half)}")
    return 0


def cmd_pack_replay(args: argparse.Namespace) -> int:
    """Write ``results/<profile>/replay/`` from a finished run (its generator and adapters must be here), or with
    ``--pin-only`` pin the archives already there (no model needed)."""
    from redpo.core.replay import pin_archives
    from redpo.run.replay import pack_results

    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    with hold_results(results.root):
        if args.pin_only:
            sizes, written = pin_archives(results)
            print("pinned the archives as they are" if written else "already pinned: every record matches its pin")
        else:
            sizes = pack_results(profile, results)
    for name, size in sizes.items():
        print(f"{results.root / 'replay' / name}: {size / 1e6:.2f} MB")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Archive the caches of a run in progress into ``results/<profile>/replay/`` (no ``models.json``), so that a
    fresh clone of the commit that holds them resumes the run instead of starting it again."""
    from redpo.core.replay import snapshot

    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    for name, size in snapshot(results).items():
        print(f"{results.root / 'replay' / name}: {size / 1e6:.2f} MB")
    return 0


def cmd_readme(args: argparse.Namespace) -> int:
    """Rewrite the README's claims blocks from the committed claims tables; with ``--check``, only say whether they
    already match (exit 1 when not), as the tests do."""
    root = Path(args.results_dir) if args.results_dir else REPO_ROOT / "results"
    current, message = refresh_blocks(Path(args.file), root, check=args.check)
    print(message if current else f"error: {message}", file=sys.stdout if current else sys.stderr)
    return 0 if current else EXIT_FAILED


def cmd_audit(args: argparse.Namespace) -> int:
    """The hand check (docs/audit.md): draw each arm's sample to judge, or summarise the judged files."""
    from redpo.analysis.audit import audit_command  # lazily: scipy and scikit-learn are only needed here

    profile = load_profile(args.profile, parse_overrides(args.param))
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    with hold_results(results.root):
        print("\n".join(audit_command(profile, results, draw=args.draw, arms=args.arm)))
    return 0


# ---- parser ---------------------------------------------------------------------------------------------
def add_profile_args(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--profile", default=default,
                   help=f"profile name ({', '.join(available_profiles())}) or a YAML path")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="override a profile field, dotted, YAML value (repeatable): -p fewshot.k=[8,16]")


def add_results_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", help="results root (default: REDPO_RESULTS_DIR or ./results)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m redpo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    add_profile_args(run)
    add_results_arg(run)
    run.add_argument("--only", action="append", metavar="NN[,NN]", help="run only these notebooks, e.g. 00,02")
    run.add_argument("--notebooks-dir", type=Path, help="folder of NN_*.ipynb (default: notebooks/)")
    run.add_argument("--no-progress", action="store_true", help="hide papermill's per-cell progress bar and set "
                     "every notebook's `progress` parameter to False (no bars in the executed notebooks)")
    run.set_defaults(func=cmd_run)

    figures = sub.add_parser("figures", help="rebuild every figure, table and claims.md from saved metrics")
    add_profile_args(figures)
    add_results_arg(figures)
    figures.set_defaults(func=cmd_figures)

    pack = sub.add_parser("pack-replay", help="archive a finished run's caches so that others replay it")
    add_profile_args(pack)
    add_results_arg(pack)
    pack.add_argument("--pin-only", action="store_true", help="write replay/pins.json for the archives already there "
                      "(for an archive packed before pins existed), or check every record against it")
    pack.set_defaults(func=cmd_pack_replay)

    snap = sub.add_parser("snapshot", help="archive a running or unfinished run's caches so that a fresh clone "
                          "resumes it (safe while the run goes on)")
    add_profile_args(snap)
    add_results_arg(snap)
    snap.set_defaults(func=cmd_snapshot)

    data = sub.add_parser("data", help="fetch the data and print split sizes and labels")
    add_profile_args(data)
    data.add_argument("--fetch", action="store_true", help="copy (or download) the datasets into REDPO_DATA_DIR")
    data.add_argument("--mirror", help="folder to fetch from (default: REDPO_DATA_MIRROR or ../shared/data)")
    data.add_argument("--check", nargs="?", const="", metavar="PATH",
                      help="check a dataset folder (default: the profile's) before loading any model; exit 2 on errors")
    data.add_argument("--draft-relations", metavar="PATH",
                      help="write PATH/relations.yaml from rel2id.json and the data, explanations to be filled in")
    data.add_argument("--fewrel", metavar="DEST", help="write FewRel's val_wiki.json (REDPO_DATA_DIR/fewrel) as a "
                      "custom dataset folder DEST: each of --relations split, seeded, into --sizes (docs/data.md)")
    data.add_argument("--relations", metavar="PIDS", help="with --fewrel: Wikidata PIDs, comma-separated: P177,P364")
    data.add_argument("--sizes", metavar="N,N,N", help="with --fewrel: train,val,test sentences per relation")
    data.add_argument("--seed", type=int, default=0, help="with --fewrel: the shuffle's seed (default 0)")
    data.set_defaults(func=cmd_data)

    dpo = sub.add_parser("dpo", help="build notebook 03's preference pairs, or train one adapter (also under "
                         "`accelerate launch -m redpo dpo`)")
    add_profile_args(dpo)
    add_results_arg(dpo)
    what = dpo.add_mutually_exclusive_group(required=True)
    what.add_argument("--build-pairs", action="store_true", help="build and check the pairs of both halves")
    what.add_argument("--half", choices=DPO_HALVES, help="train (or reuse) this adapter on dpo/pairs_<half>.jsonl")
    dpo.add_argument("--no-progress", action="store_true", help="hide the training progress bar")
    dpo.set_defaults(func=cmd_dpo)

    audit = sub.add_parser("audit", help="the hand check: draw samples to judge, or summarise the judgements")
    add_profile_args(audit)
    add_results_arg(audit)
    step = audit.add_mutually_exclusive_group(required=True)
    step.add_argument("--draw", action="store_true", help="write audit/<arm>_todo.jsonl for each arm")
    step.add_argument("--summarise", action="store_true", help="check audit/<arm>.jsonl, write audit/summary.*")
    audit.add_argument("--arm", action="append", metavar="NAME", help="only this arm (repeatable)")
    audit.set_defaults(func=cmd_audit)

    models = sub.add_parser("models", help="print the model registry, or prepare one model")
    models.add_argument("--prepare", metavar="NAME", help="resolve/convert/build NAME and print its sha256")
    models.set_defaults(func=cmd_models)

    engine = sub.add_parser("engine", help="show, or build, the llama.cpp server for this machine")
    engine.add_argument("--build", action="store_true", help="build llama-server from the pinned source (once)")
    engine.add_argument("--jobs", type=int, help="parallel compile jobs (default: the free cores)")
    engine.add_argument("--no-progress", action="store_true", help="hide the build's progress bar")
    engine.set_defaults(func=cmd_engine)

    readme = sub.add_parser("readme", help="rewrite the README's results summary from the committed claims tables")
    readme.add_argument("--check", action="store_true", help="change nothing; exit 1 if the block is out of date")
    readme.add_argument("--file", default=str(REPO_ROOT / "README.md"), help="the markdown file (default: README.md)")
    readme.add_argument("--results-dir", help="the results root holding <profile>/tables/claims.csv (default: "
                        "the repository's results/, not REDPO_RESULTS_DIR: the README summarises committed runs)")
    readme.set_defaults(func=cmd_readme)

    bench = sub.add_parser(
        "bench",
        help="micro-benchmarks registered by other modules",
        description=f"registered: {', '.join(BENCHMARKS) or 'none yet'} (see BENCHMARKS in redpo/__main__.py)",
    )
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, target in BENCHMARKS.items():
        b = bench_sub.add_parser(name, help=f"run {target}")
        add_profile_args(b)
        add_results_arg(b)
        b.add_argument("--backends", default="",
                       help="engines, comma-separated (generation's default: transformers,llama_cpp); "
                       "llama_cpp:<model> adds another packaged GGUF, e.g. llama_cpp:qwen2.5-coder-1.5b-instruct; "
                       "training: its parts (re, re:<size>, dpo, dpo:<model>, re_equivalence, dpo_equivalence)")
        b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with stop_on_signals():
        try:
            return args.func(args)
        except NotebookFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_FAILED
        except EXPECTED_ERRORS as err:
            for line in getattr(err, "lines", None) or [str(err)]:  # a refused dataset: one line per problem
                print(f"error: {line}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as runner.Interrupted
            signum = int(getattr(err, "signum", signal.SIGINT))
            print(f"interrupted: {str(err) or f'stopped by {signal.Signals(signum).name}'}", file=sys.stderr)
            return EXIT_SIGNAL + signum


if __name__ == "__main__":
    sys.exit(main())
