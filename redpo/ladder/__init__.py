"""Stage 06, the gap ladder: where generated training data loses to manual data, rung by rung.

Each rung changes one thing about the training set, with the RE setup fixed, and is paired cell by cell with its
neighbour and with manual data:

- **L0** manual: the K-shot split;
- **L1** a perfect generator: K *other* real training sentences per relation, through the generated-data path;
- **L2** style: positives real or generated x negatives real or generated;
- **L3** label noise: generated samples the oracle agrees with, against unfiltered ones at the same counts;
- **L4** diversity: near copies removed, against unfiltered ones at the same counts;
- **L5** count: the arm's own first N per relation, for each N of ``ladder.n_values``;
- **L6** generator: another generator's samples (``ladder.generator``);
- **L7** encoder: manual and the best generated rung trained with ``ladder.encoder``.

- :mod:`redpo.ladder.pools`: the generations the rungs draw from;
- :mod:`redpo.ladder.sets`: the rungs' training sets;
- :mod:`redpo.ladder.runs`: the RE runs and ``metrics/ladder.json``.

The paired comparisons, the table, the gap decomposition and the figure read ``metrics/ladder.json`` only
(:mod:`redpo.analysis.ladder`).
"""
