"""Arms: the names a comparison gives its selections, and what each one selects with.

An arm is a selection strategy (raysys.selection.strategies) plus how it differs from the
plain strategy: `random-2` is random with its own draws (two random arms per seed: their
difference is the noise floor), and an arm ending in `-test` (`similarity-test`,
`rds-test`) aims its strategy at the test tasks rather than the development tasks (the
strategy comparison's held-out split). The loop, the demo and the strategy comparison
read arm names here.
"""
from __future__ import annotations

TEST_TARGETS = "-test"  # an arm's suffix: its strategy aims at the test tasks, not the development tasks


def arm(name: str) -> tuple[str, int]:
    """(the selection strategy, the offset of its selection seed) of an arm: random-2 is
    random with its own draws; similarity-test is similarity aimed at the test tasks."""
    if name == "random-2":
        return "random", 1
    return name.removesuffix(TEST_TARGETS), 0


def aims_at_test(name: str) -> bool:
    return name.endswith(TEST_TARGETS)
