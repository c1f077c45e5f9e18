"""The novelty check's pure parts: which tasks play which role, and the ratio.

Roles, drawn from one seed (a draw; the experiment runs one per seed), disjoint:
- train: `train_tasks` tasks of the chosen group (a task's group is its first category:
  the rule family for synthetic pools, the NIV2 category for real ones; with
  `group_by: domain` its first NIV2 domain's top level); M1 = M0 trained
  on them;
- related: `related_tasks` other tasks of the group, never trained on;
- unrelated: `unrelated_tasks` tasks of the other groups, never trained on (or of another
  pool, `unrelated_pool`: a positive control when its answers look unlike the group's);
- base: `base_tasks` of the remaining tasks (any group) that M0 is trained on first.

The change of a held-out task is U1 - U0 (prompt uncertainty under M1 minus under M0).
The novelty ratio is the related tasks' mean change over the unrelated tasks' mean
change (None when the latter is exactly 0), with `direction` saying whether both
decreased (the finding: related tasks' uncertainty falls far more), both increased, or
they moved in opposite directions (a negative ratio). The relative ratio does the same
with each task group's relative change, mean(U1) / mean(U0) - 1. Over several draws,
`summarize` gives each quantity's mean and sample std (ddof 1) over the draws, the
pooled ratio (mean related change / mean unrelated change) and how many draws went
each direction.

What a draw can show: U cannot fall below 0, so the ratio is at most the related tasks'
U under M0 over the unrelated tasks' fall (`ceiling`): when training lowers every task's
U by 80 %, no ratio much above 1.25 can appear, whatever the method's effect. Each model
scores its own greedy answers; `same_answers` scores M0's answers under M1 as well (the
`same_` quantities), so a change of U is not a change of which answer is scored. With
`disjoint`, no task is trained on in two draws (`taken`).
"""
from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raysys.config.experiments import NoveltyConfig
from raysys.errors import ConfigError
from raysys.schema import Task


def group_of(task: Task, by: str = "category") -> str:
    """A task's group: its first category (the rule family of a synthetic task, the NIV2
    category of a real one), or with `by="domain"` the top level of its first NIV2 domain
    ("Biology -> Virology" -> "Biology": the MMLU-derived tasks share one category and
    differ by domain)."""
    if by == "domain":
        domains = task.metadata.get("domains") or []
        return str(domains[0]).split(" -> ")[0].strip() if domains else "(none)"
    return task.categories[0] if task.categories else "(none)"


@dataclass(frozen=True)
class Roles:
    train: tuple[str, ...]
    related: tuple[str, ...]
    unrelated: tuple[str, ...]
    base: tuple[str, ...]

    def heldout(self) -> list[str]:
        return list(self.related) + list(self.unrelated)


def draw_roles(tasks: Sequence[Task], cfg: NoveltyConfig, seed: int, taken: Sequence[str] = (),
               others: Sequence[str] = ()) -> Roles:
    """One draw's four disjoint task sets, none of the `taken` tasks trained on (earlier
    draws' training tasks, with `disjoint`); the unrelated tasks drawn from `others` when
    given (the tasks of `unrelated_pool`), else from the other groups; a pool too small
    for them is a ConfigError with the counts."""
    rng = random.Random(f"novelty:{seed}")
    apart = set(others)
    ids_in = sorted(t.task_id for t in tasks if group_of(t, cfg.group_by) == cfg.group and t.task_id not in apart)
    ids_out = sorted(apart) if apart else sorted(t.task_id for t in tasks if group_of(t, cfg.group_by) != cfg.group)
    if not ids_in:
        groups = sorted({group_of(t, cfg.group_by) for t in tasks})
        raise ConfigError(f"no task of group {cfg.group!r} in the pool; its groups: {', '.join(groups[:20])}")
    need_in = cfg.train_tasks + cfg.related_tasks
    taken = set(taken)
    free = [t for t in ids_in if t not in taken]
    if len(ids_in) < need_in or len(ids_out) < cfg.unrelated_tasks or len(free) < cfg.train_tasks:
        raise ConfigError(f"group {cfg.group!r} has {len(ids_in)} tasks ({len(free)} not trained on in an earlier "
                          f"draw) and the others {len(ids_out)}: need train_tasks + related_tasks = {need_in}, "
                          f"train_tasks = {cfg.train_tasks} of those not trained on before, and unrelated_tasks = "
                          f"{cfg.unrelated_tasks}")
    rng.shuffle(ids_in)
    rng.shuffle(ids_out)
    train = [t for t in ids_in if t not in taken][:cfg.train_tasks]
    trained = set(train)
    related = [t for t in ids_in if t not in trained][:cfg.related_tasks]
    unrelated = ids_out[:cfg.unrelated_tasks]
    drawn = trained | set(related)
    rest = [t for t in ids_in if t not in drawn] + ids_out[cfg.unrelated_tasks:]
    rng.shuffle(rest)
    if len(rest) < cfg.base_tasks:
        raise ConfigError(f"base_tasks = {cfg.base_tasks} but only {len(rest)} tasks are left after the "
                          f"{need_in + cfg.unrelated_tasks} train and held-out tasks")
    return Roles(tuple(train), tuple(related), tuple(unrelated), tuple(rest[:cfg.base_tasks]))


def _direction(a: float, b: float) -> str:
    if a < 0 and b < 0:
        return "both decreased"
    if a > 0 and b > 0:
        return "both increased"
    return "opposite directions" if a * b < 0 else "no change"


def novelty_ratio(shift: Sequence[Mapping]) -> dict:
    """From the per-group shift summary (raysys.selection.taskmap.shift_summary with groups
    'related' and 'unrelated'): mean changes, relative changes, and their ratios."""
    by = {r["group"]: r for r in shift}
    missing = {"related", "unrelated"} - set(by)
    if missing:
        raise ValueError(f"shift summary lacks group(s) {sorted(missing)}")
    ch = {g: float(by[g]["mean_change"]) for g in ("related", "unrelated")}
    rel = {g: float(by[g]["relative_change"]) for g in ("related", "unrelated")}
    out = {"related_change": ch["related"], "unrelated_change": ch["unrelated"],
           "related_relative_change": rel["related"], "unrelated_relative_change": rel["unrelated"],
           "ratio": ch["related"] / ch["unrelated"] if ch["unrelated"] != 0 else None,
           "relative_ratio": rel["related"] / rel["unrelated"] if rel["unrelated"] != 0 else None,
           "direction": _direction(ch["related"], ch["unrelated"])}
    for g in ("related", "unrelated"):
        out[f"{g}_before"] = float(by[g]["mean_uncertainty_before"])
        out[f"{g}_after"] = float(by[g]["mean_uncertainty_after"])
        out[f"{g}_tasks"] = int(by[g]["tasks"])
    out["ceiling"] = ceiling(out["related_before"], ch["unrelated"])
    return out


def ceiling(related_before: float, unrelated_change: float) -> float | None:
    """The largest ratio the draw could show: the related tasks' uncertainty falling all
    the way to 0 (a change of -related_before) over the unrelated tasks' fall. None when
    the unrelated tasks' uncertainty did not fall (then any related fall shows)."""
    return related_before / -unrelated_change if unrelated_change < 0 else None


SAME = "same_"  # the same quantities with M0's answers scored under M1 (scoring.answers_from)
SAME_KEYS = ("related_change", "unrelated_change", "related_relative_change", "unrelated_relative_change", "ratio",
             "relative_ratio", "direction", "related_after", "unrelated_after", "ceiling")


def same_answers(shift: Sequence[Mapping]) -> dict:
    """novelty_ratio of the shift from M0 to M1 on M0's own answers, its keys prefixed."""
    r = novelty_ratio(shift)
    return {SAME + k: r[k] for k in SAME_KEYS}


def render(r: Mapping) -> str:
    def f(v):
        return "undefined (the unrelated tasks' uncertainty did not change)" if v is None else f"{v:.2f}x"

    def c(v):
        return "none (the unrelated tasks' uncertainty did not fall)" if v is None else f"{v:.2f}x"

    lines = [f"{'group':<10} {'tasks':>5} {'U under M0':>11} {'U under M1':>11} {'change':>11} {'relative':>9}"]
    for g in ("related", "unrelated"):
        lines.append(f"{g:<10} {r[f'{g}_tasks']:>5} {r[f'{g}_before']:>11.3e} {r[f'{g}_after']:>11.3e} "
                     f"{r[f'{g}_change']:>+11.3e} {r[f'{g}_relative_change']:>+9.1%}")
    lines.append(f"novelty ratio (related / unrelated mean change): {f(r['ratio'])}; {r['direction']}")
    lines.append(f"relative ratio (related / unrelated relative change): {f(r['relative_ratio'])}")
    lines.append(f"ceiling (the ratio if the related tasks' U fell to 0): {c(r.get('ceiling'))}")
    if SAME + "direction" in r:  # M0's answers were scored under M1 too
        lines.append(f"on M0's answers scored under M1: related {r[SAME + 'related_change']:+.3e}, unrelated "
                     f"{r[SAME + 'unrelated_change']:+.3e}; ratio {f(r[SAME + 'ratio'])} (ceiling "
                     f"{c(r[SAME + 'ceiling'])}); {r[SAME + 'direction']}")
    return "\n".join(lines)


SUMMARIZED = ("related_change", "unrelated_change", "related_relative_change", "unrelated_relative_change",
              "ratio", "relative_ratio", "ceiling", *(SAME + k for k in SAME_KEYS if k != "direction"))


def summarize(draws: Sequence[Mapping]) -> dict:
    """Mean and sample std (None for one draw) of each draw's changes and ratios (draws
    with an undefined ratio are left out of that ratio's mean and counted), the pooled
    ratio of the mean changes (of each model's own answers, and of M0's answers when they
    were scored under M1: `same_pooled_ratio`), and the count of draws per direction. A
    draw's ratio swings wildly, sign included, when its unrelated tasks' change is near 0;
    the pooled ratio averages the changes over the draws first."""
    out: dict = {"draws": len(draws)}
    for k in SUMMARIZED:
        vals = [float(d[k]) for d in draws if d.get(k) is not None]
        out[f"{k}_mean"] = statistics.fmean(vals) if vals else None
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out[f"{k}_undefined"] = len(draws) - len(vals)
    for view in ("", SAME):  # the pooled ratio of each view scored (M0's answers: with same_answers)
        rel, unrel = out[f"{view}related_change_mean"], out[f"{view}unrelated_change_mean"]
        if rel is not None and unrel is not None:
            out[f"{view}pooled_ratio"] = rel / unrel if unrel else None
            out[f"{view}pooled_direction"] = _direction(rel, unrel)
    out["directions"] = {d: sum(1 for x in draws if x["direction"] == d) for d in sorted({x["direction"] for x in draws})}
    return out


def render_summary(s: Mapping) -> str:
    def pm(k: str, fmt: str) -> str:
        m, sd = s[f"{k}_mean"], s[f"{k}_std"]
        if m is None:
            return "undefined"
        return format(m, fmt) + ("" if sd is None else " +- " + format(sd, fmt.lstrip("+")))

    pooled = "undefined" if s["pooled_ratio"] is None else f"{s['pooled_ratio']:.2f}x"
    same = ("undefined" if s.get(SAME + "pooled_ratio") is None else f"{s[SAME + 'pooled_ratio']:.2f}x") + (
        f", {s[SAME + 'pooled_direction']}" if SAME + "pooled_direction" in s else "")
    return "\n".join([
        f"over {s['draws']} draw(s): related change {pm('related_change', '+.3e')}, unrelated {pm('unrelated_change', '+.3e')}",
        f"relative: related {pm('related_relative_change', '+.1%')}, unrelated {pm('unrelated_relative_change', '+.1%')}",
        f"ratio per draw {pm('ratio', '.2f')}; pooled ratio (mean related / mean unrelated change) {pooled}, "
        f"{s['pooled_direction']}; directions: " + ", ".join(f"{k} {v}" for k, v in s["directions"].items()),
        f"ceiling per draw (the ratio if the related tasks' U fell to 0) {pm('ceiling', '.2f')}",
        (f"on M0's answers under M1: ratio per draw {pm(SAME + 'ratio', '.2f')}; pooled ratio {same}; ceiling per "
         f"draw {pm(SAME + 'ceiling', '.2f')}")])
