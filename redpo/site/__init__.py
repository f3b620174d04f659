"""The generated parts of the documentation: the profile reference, the results pages and the README's claims block.

Each is written from the code or the committed results at build time, never by hand, so none can drift:
``mkdocs build`` calls these through ``redpo/site/mkdocs_hooks.py``, and ``python -m redpo readme`` rewrites the
README's block. Nothing here imports a model library.
"""
