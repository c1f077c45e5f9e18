"""Task pools: readers for every supported format, the synthetic rewriting generator,
and the canonical Parquet writer. `load_pool` is the entry point."""
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import FORMATS, Pool, Skipped, detect_format, load_pool, write_skip_report

__all__ = ["FORMATS", "Pool", "Skipped", "detect_format", "load_pool", "write_parquet_tasks", "write_skip_report"]
