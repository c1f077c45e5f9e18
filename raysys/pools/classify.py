"""Classification vs generative: the rule used when a source gives no flag.

A source's own flag (Self-Instruct's `is_classification`, a canonical file's column)
always wins. Otherwise `derive_is_classification` applies, in order:

1. **Enough instances to count labels** (n >= MIN_INSTANCES, 10): classification iff the
   reference outputs, lower-cased and stripped, take at most MAX_LABELS (10) distinct
   values and at most n/2 of them. This is the rule of ../shared/data/niv2/index.tsv.
2. **Label set named in the definition** (fewer instances): classification iff every
   reference output is a short label (at most MAX_LABEL_WORDS, 3, words) that the
   definition mentions as a whole word or phrase ("Output yes or no." -> "No").
3. **Free text** (fewer instances, no label set): generative iff the outputs average more
   than MAX_LABEL_WORDS + 2 (5) words.
4. Otherwise unknown (None): one short answer says too little either way.

Pure: looks only at a task's text.
"""
from __future__ import annotations

import re
from dataclasses import replace

from raysys.schema import Task

MIN_INSTANCES = 10
MAX_LABELS = 10
MAX_LABEL_WORDS = 3


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def derive_is_classification(task: Task) -> bool | None:
    """The documented rule above; None means unknown."""
    outputs = [_norm(o) for inst in task.instances for o in inst.outputs]
    outputs += [_norm(d.output) for d in task.demonstrations]
    if not outputs:
        return None
    n = len(task.instances)
    if n >= MIN_INSTANCES:
        distinct = len(set(outputs))
        return distinct <= MAX_LABELS and distinct <= n / 2
    definition = " ".join(task.instruction.lower().split())
    if all(o and len(o.split()) <= MAX_LABEL_WORDS and _mentions(definition, o) for o in outputs):
        return True
    mean_words = sum(len(o.split()) for o in outputs) / len(outputs)
    if mean_words > MAX_LABEL_WORDS + 2:
        return False
    return None


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None


def with_flag(task: Task) -> Task:
    """`task` with is_classification filled by the rule when the source left it unknown."""
    if task.is_classification is not None:
        return task
    return replace(task, is_classification=derive_is_classification(task))
