"""Figure helpers that decide layout: a wrong offset makes the names of neighbouring points overprint."""

import matplotlib

matplotlib.use("Agg")

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from redpo.analysis.plots import FIGURES, FORMATS, _label_points, draw, show
from redpo.analysis.stats import INCONCLUSIVE, NOT_RUN
from redpo.config import REPO_ROOT
from redpo.core.io import MissingMetrics, ResultsDir, write_json


def test_label_points_sends_the_left_of_two_close_points_below_left() -> None:
    # cpu-full's split means: obo and obo_nodiv sit 0.03 apart in x and 0.003 in y, baseline 0.055 and 0.02 from
    # obo_nodiv; gold is far from all three. The axes span what the real figure spans.
    frame = pd.DataFrame({"arm": ["obo", "obo_nodiv", "baseline", "gold"], "x": [0.472, 0.441, 0.386, 0.129],
                          "y": [0.637, 0.634, 0.655, 0.822]})
    fig, ax = plt.subplots()
    ax.set(xlim=(0.11, 0.49), ylim=(0, 1.02))
    _label_points(ax, frame, "x", "y", "arm")
    names = {text.get_text(): (text.xyann, text.get_horizontalalignment()) for text in ax.texts}
    plt.close(fig)
    right, left = ((5, 4), "left"), ((-5, -11), "right")
    assert names["gold"] == right and names["baseline"] == right  # no neighbour within reach
    assert names["obo_nodiv"] == left  # obo sits 0.03 to its right: its name would print over obo_nodiv's
    assert names["obo"] == right


ARMS = ("obo", "aao", "gold")


def _check_message_figures(results: ResultsDir) -> None:
    for name in ("generation_diversity", "diversity_vs_correctness"):
        fig = draw(results, name)
        assert any("two or more generated samples" in t.get_text() for ax in fig.axes for t in ax.texts), name
        assert (results.figures / f"{name}.png").is_file()


def test_diversity_figures_say_why_when_no_relation_can_be_compared(tmp_path: Path) -> None:
    """A small or custom dataset can leave no relation with two generated samples in every arm: the metrics then
    hold no macro value, and the figures must still be drawn, saying so, instead of failing the notebook."""
    results = ResultsDir("tiny", root=tmp_path)
    write_json(results.metrics / "correctness_icl.json", {"arms": {
        "obo": {"n": 3, "oracle_agreement": 0.5, "direction_flip_rate": 0.0, "negative_share": 0.0}}})
    undefined = {"tfidf_cos": None, "tfidf_cos_masked": None, "self_bleu": None, "distinct_2": None}
    for relations, macro in (([], {}), (["r"], undefined)):  # no relation at all; one with < 2 samples somewhere
        block = {"relations": relations, "arms": {arm: {"relations": relations, "macro": macro} for arm in ARMS}}
        splits = {"k4_s1": block}
        write_json(results.metrics / "generation_icl.json", {"diversity": {"splits": splits}})
        _check_message_figures(results)


def test_the_plateau_figure_says_how_many_runs_each_band_rests_on(tmp_path: Path) -> None:
    """cpu-full's plateau trains one classifier seed on 3 splits: a ±sd band over 3 runs must say it is 3."""
    results = ResultsDir("tiny", root=tmp_path)
    summary = [{"arm": "obo", "data": data, "n": n, "runs": 3, "mean": 0.2 + n / 100, "sd": 0.01}
               for data in ("gen", "mix") for n in (4, 8)]
    plateau = [{"arm": "obo", "data": data, "plateau_n": 8} for data in ("gen", "mix")]
    write_json(results.metrics / "plateau.json",
               {"arms": ["obo"], "n_values": [4, 8], "summary": summary, "plateau": plateau})
    fig = draw(results, "plateau_f1")
    assert "over 3 runs per point" in fig.get_suptitle()
    plt.close(fig)


def _claims_detail(results: ResultsDir, verdicts: dict[int, str]) -> None:
    effect = {"estimate": 0.02, "low": -0.01, "high": 0.05}
    write_json(results.tables / "claims_detail.json", [
        {"claim": n, "verdict": v, "comparisons": [{"label": f"a{n} vs b{n}", "primary": True, "margin": 0.0,
                                                    "upper": None, "unit": "Δ micro-F1 points",
                                                    "effect": None if v == NOT_RUN else effect}]}
        for n, v in verdicts.items()])


def test_the_forest_plot_keeps_a_claim_not_run_as_a_marked_row(tmp_path: Path) -> None:
    """A claim with no data keeps its row, marked "not run" in its own colour; the legend names "not run" only when
    a row is, so a report where every claim ran draws the figure it drew before the verdict existed."""
    results = ResultsDir("tiny", root=tmp_path)
    _claims_detail(results, {3: INCONCLUSIVE, 4: NOT_RUN})
    ax = draw(results, "claims_forest").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["holds", "does not hold", "inconclusive",
                                                                    "not run"]
    assert [t.get_text() for t in ax.texts] == ["not run"] and len(ax.get_yticks()) == 2
    _claims_detail(results, {3: INCONCLUSIVE})
    ax = draw(results, "claims_forest").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["holds", "does not hold", "inconclusive"]
    plt.close("all")


def test_a_figure_with_nothing_to_draw_is_one_printed_line_in_a_notebook(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every claim not run (every arm came back empty): no forest plot, and the notebook says why instead of failing."""
    results = ResultsDir("tiny", root=tmp_path)
    _claims_detail(results, {3: NOT_RUN, 4: NOT_RUN})
    with pytest.raises(MissingMetrics, match=r"no primary comparison with data \(claims 3, 4: not run\)"):
        draw(results, "claims_forest")
    show(results, "claims_forest")
    assert capsys.readouterr().out == (f"figure claims_forest not drawn: {results.tables / 'claims_detail.json'} "
                                       "holds no primary comparison with data (claims 3, 4: not run)\n")
    write_json(results.metrics / "plateau.json", {"arms": ["obo"], "n_values": [1, 2], "summary": [], "plateau": [],
                                                  "quotas": {"n1_k4_s1_obo": {"empty_arms": ["obo"]}}})
    show(results, "plateau_f1")
    assert capsys.readouterr().out.endswith("holds no RE runs (arms with no valid sample to train on: obo)\n")
    assert not (results.figures / "plateau_f1.png").exists()


@pytest.mark.slow  # rebuilds every figure of a committed run: ~6-11 s each
@pytest.mark.parametrize("profile", ["cpu-full", "cpu"])
def test_every_committed_figure_is_rebuilt_from_its_declared_inputs_alone(profile: str, tmp_path: Path) -> None:
    """Each registry entry declares the files its figure is drawn from (showyourwork-style), and the docs link the
    figure to them: drawn in a folder that holds only those files, every committed figure comes back byte for
    byte. An undeclared input fails the draw (MissingMetrics); a wrong one changes the bytes."""
    committed = ResultsDir(profile, root=REPO_ROOT / "results")
    drawn = sorted(path.stem for path in committed.figures.glob("*.png"))
    assert drawn and set(drawn) <= set(FIGURES), drawn  # every committed figure is in the registry
    for name in drawn:
        spec = FIGURES[name]
        results = ResultsDir(name, root=tmp_path / profile)
        for rel in spec.inputs:
            if (committed.root / rel).is_file():
                (results.root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(committed.root / rel, results.root / rel)
        draw(results, name, close=True)
        for fmt in FORMATS:
            rebuilt = (results.figures / f"{name}.{fmt}").read_bytes()
            assert rebuilt == (committed.root / "figures" / f"{name}.{fmt}").read_bytes(), (profile, name, fmt)
