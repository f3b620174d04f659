"""Stage 00: dataset formats, splits (K-shot, subsets) and fetching the data."""
