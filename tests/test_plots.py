"""Figure helpers that decide layout: a wrong offset makes the names of neighbouring points overprint."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd

from redpo.analysis.plots import _label_points


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
