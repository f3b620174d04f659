"""Stage 04: the non-LLM RE classifier, its metrics, the (arm x cell) grid, and the direct-LLM baseline."""
