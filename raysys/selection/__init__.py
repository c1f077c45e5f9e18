"""Task selection: strategies (a dict of plain functions), stratification, INSTA similarity
and encoder alignment, and the selected.json contract. See raysys.selection.strategies."""
from raysys.selection.candidates import Candidates, build_candidates
from raysys.selection.select import Selection, read_task_ids, select_tasks, write_selection
from raysys.selection.strategies import NEEDS_EMBEDDINGS, NEEDS_SCORES, STRATEGIES

__all__ = ["Candidates", "NEEDS_EMBEDDINGS", "NEEDS_SCORES", "STRATEGIES", "Selection", "build_candidates",
           "read_task_ids", "select_tasks", "write_selection"]
