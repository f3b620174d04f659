"""Stage 05, the plateau: RE score against the number of generated samples per relation, and why it stops rising.

- :mod:`redpo.plateau.generate`: each plateau arm generated once, up to the largest N;
- :mod:`redpo.plateau.runs`: the RE grid trained on every prefix N of those generations;
- :mod:`redpo.plateau.curves`: the plateau rule, the valid-sample yield, ``metrics/plateau.json`` and its tables;
- :mod:`redpo.plateau.figures`: the two plateau figures.

``curves`` and ``figures`` read saved files only and import no model library, so ``python -m redpo figures``
redraws them without torch.
"""
