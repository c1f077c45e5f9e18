"""Synthetic string-rewriting task pools (one Markov-algorithm step per task).

A rule x -> y rewrites the **leftmost** occurrence of x in z by y; when x does not occur
in z, z is returned unchanged (a "no-op" instance). Each rule is one task; its
instruction states the rule in natural language, its instances are (z, rewrite(z)).

Rule families, each with a parameter k (`SynthConfig.families`, e.g. "repeated:3"):
- unrestricted: x is a random string with length in x_len;
- repeated:k  : x is one character repeated k times ("ccc");
- periodic:k  : x is a random word w of length k written twice (w + w, "abab");
- mirror:k    : x is a random word w of length k followed by its reverse ("abba").
y is always a random string with length in y_len, and every (x, y) pair is distinct
across seen and unseen rules. Examples are spread over rules uniformly or by a power law
(`skew`: rule r gets a share proportional to (r + 1) ** -skew, at least one each).
Held-out unseen rules are separate tasks with metadata split="unseen".
Instructions are natural language (verbosity terse or verbose) or the bare rule "x -> y"
(symbolic, as in the instruction-diversity experiments, where prompts must stay short).

Everything is drawn from one random.Random(seed): the same config gives the same pool.
"""
from __future__ import annotations

import random
from typing import Iterable, Iterator

from raysys.config import SynthConfig, parse_family
from raysys.errors import ConfigError
from raysys.schema import Demonstration, Instance, Task

SOURCE = "synthetic"

TERSE_TEMPLATES = (
    'Replace the leftmost occurrence of "{x}" with "{y}"; if "{x}" is absent, return the input unchanged.',
    'Rewrite the string: change the first "{x}" into "{y}", or leave it as is when "{x}" does not occur.',
    'Substitute "{y}" for the leftmost "{x}" in the given string; strings without "{x}" stay the same.',
    'Find the first "{x}" in the input and replace it by "{y}"; otherwise output the input.',
)

VERBOSE_TEMPLATES = (
    'In this task you are given a string of letters. Your job is to find the leftmost occurrence '
    'of the substring "{x}" and replace it with "{y}", changing nothing else. The text "{y}" is '
    'written only once. If the substring "{x}" does not appear anywhere in the string, simply '
    'return the original string exactly as it was given.',
    'You will receive an input string. Apply the rewriting rule "{x}" -> "{y}": locate the first, '
    'leftmost place where "{x}" occurs and substitute "{y}" for it. Only this first occurrence is '
    'rewritten; all other characters are copied unchanged. When "{x}" is not found in the input, '
    'the output is identical to the input.',
    'Consider the input string. The task is a single string rewrite: the first time the pattern '
    '"{x}" appears, reading from left to right, it is replaced by "{y}". Everything else stays the '
    'same, so "{y}" appears in place of that one "{x}" only. If "{x}" never appears in the input, '
    'copy the input to the output unchanged.',
)


def rewrite(z: str, x: str, y: str) -> str:
    """z with its leftmost occurrence of x replaced by y (z itself when x is absent)."""
    return z.replace(x, y, 1)


def instruction_text(x: str, y: str, verbosity: str, template: int) -> str:
    if verbosity == "symbolic":
        return f"{x} -> {y}"
    templates = TERSE_TEMPLATES if verbosity == "terse" else VERBOSE_TEMPLATES
    return templates[template % len(templates)].format(x=x, y=y)


def _word(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _pattern(rng: random.Random, cfg: SynthConfig, family: str, k: int) -> str:
    if family == "unrestricted":
        return _word(rng, cfg.alphabet, rng.randint(*cfg.x_len))
    if family == "repeated":
        return rng.choice(cfg.alphabet) * k
    w = _word(rng, cfg.alphabet, k)
    return w + w if family == "periodic" else w + w[::-1]


def _rules(rng: random.Random, cfg: SynthConfig, families: tuple[str, ...], n: int,
           taken: set) -> list[tuple[str, str, str, int]]:
    """n distinct (x, y, family, k) rules, families assigned round-robin."""
    parsed = [parse_family(f) for f in families]
    out = []
    for i in range(n):
        family, k = parsed[i % len(parsed)]
        for _ in range(1000):
            x = _pattern(rng, cfg, family, k)
            y = _word(rng, cfg.alphabet, rng.randint(*cfg.y_len))
            if x != y and (x, y) not in taken:
                break
        else:
            raise ConfigError(
                f"cannot draw {n} distinct rules of family {family!r} from alphabet {cfg.alphabet!r}: "
                "use a larger alphabet or longer strings, or fewer rules"
            )
        taken.add((x, y))
        out.append((x, y, family, k))
    return out


def _counts(n_rules: int, total: int, skew: float) -> list[int]:
    """Examples per rule: `total` spread by weight (r + 1) ** -skew, at least 1 each."""
    if n_rules == 0:
        return []
    if skew == 0:
        base, extra = divmod(total, n_rules)
        return [base + (r < extra) for r in range(n_rules)]
    weights = [(r + 1) ** -skew for r in range(n_rules)]
    spare = total - n_rules  # one example per rule first
    scale = spare / sum(weights)
    counts = [1 + int(w * scale) for w in weights]
    for r in range(total - sum(counts)):  # remainder to the heaviest rules
        counts[r % n_rules] += 1
    return counts


def _input(rng: random.Random, cfg: SynthConfig, x: str, noop: bool) -> str:
    n = max(rng.randint(*cfg.z_len), len(x))
    if not noop:
        at = rng.randint(0, n - len(x))
        return _word(rng, cfg.alphabet, at) + x + _word(rng, cfg.alphabet, n - len(x) - at)
    for _ in range(100):
        z = _word(rng, cfg.alphabet, n)
        if x not in z:
            return z
    # x is too likely (short x, small alphabet): leave out x's first character.
    return _word(rng, cfg.alphabet.replace(x[0], ""), n)


def _task(rng: random.Random, cfg: SynthConfig, rule: tuple, task_id: str, n_examples: int, split: str) -> Task:
    x, y, family, k = rule
    template = rng.randrange({"verbose": 3, "terse": 4}.get(cfg.verbosity, 1))
    instances = []
    for j in range(n_examples):
        z = _input(rng, cfg, x, rng.random() < cfg.noop_share)
        instances.append(Instance(id=f"{task_id}-{j}", input=z, outputs=(rewrite(z, x, y),)))
    demos = []
    for _ in range(cfg.demonstrations):
        z = _input(rng, cfg, x, False)
        demos.append(Demonstration(input=z, output=rewrite(z, x, y)))
    return Task(
        task_id=task_id,
        instruction=instruction_text(x, y, cfg.verbosity, template),
        instances=tuple(instances),
        demonstrations=tuple(demos),
        is_classification=False,
        categories=(family,),
        source=SOURCE,
        metadata={"x": x, "y": y, "family": family, "k": k, "split": split, "template": template},
    )


def iter_tasks(cfg: SynthConfig, exclude: Iterable[tuple[str, str]] = ()) -> Iterator[Task]:
    """Seen tasks ("rule-NNNNNN") then unseen tasks ("unseen-NNNNNN"); no rule is one of
    the (x, y) pairs in `exclude` (another pool's held-out rules)."""
    rng = random.Random(cfg.seed)
    taken: set = set(exclude)
    seen = _rules(rng, cfg, cfg.families, cfg.rules, taken)
    unseen = _rules(rng, cfg, cfg.unseen_families or cfg.families, cfg.unseen_rules, taken)
    counts = _counts(cfg.rules, cfg.rules * cfg.examples_per_rule, cfg.skew)
    for i, (rule, n) in enumerate(zip(seen, counts)):
        yield _task(rng, cfg, rule, f"rule-{i:06d}", n, "seen")
    for i, rule in enumerate(unseen):
        yield _task(rng, cfg, rule, f"unseen-{i:06d}", cfg.unseen_examples_per_rule, "unseen")


def generate(cfg: SynthConfig, exclude: Iterable[tuple[str, str]] = ()) -> list[Task]:
    return list(iter_tasks(cfg, exclude))


def rule_of(task: Task) -> tuple[str, str]:
    """The (x, y) rule of a synthetic task."""
    return task.metadata["x"], task.metadata["y"]
