"""Task pools: readers for every supported format (load.py: `load_pool` is the entry point),
the synthetic rewriting generator (markov.py, synthetic.py), the canonical Parquet
writer (canonical.py) and pools as files (subset.py)."""
