"""Pairwise comparison of two models' answers by a judge model loaded through raysys.

Both models answer the same instances (raysys.evaluation.evaluate, greedy). For each
instance the judge sees the method's pairwise prompt (the Vicuna/FastChat GPT-4 review
prompt the Active Instruction Tuning study used) twice, once with A's answer first and
once with B's first, and must start its reply with the two scores (1-10). Summing each
model's scores over both orders cancels the judge's position bias; the pair is a win for
A, a loss, or a tie. A reply whose first line does not hold two numbers is counted as
`invalid` (reported, never silently dropped); the pair is then not counted as a win, a
loss or a tie. Net wins = wins - losses.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

JUDGE_PROMPT = (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant 1's Answer]\n{answer_1}\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{answer_2}\n[The End of Assistant 2's Answer]\n\n"
    "[System]\nWe would like to request your feedback on the performance of two AI assistants in response to "
    "the user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level of details of "
    "their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score "
    "indicates better overall performance.\nPlease first output a single line containing only two values "
    "indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space. In the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias "
    "and ensuring that the order in which the responses were presented does not affect your judgment.\n\n"
)
_SCORES = re.compile(r"^\s*(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)\s*$")


def judge_prompt(question: str, answer_1: str, answer_2: str) -> str:
    return JUDGE_PROMPT.format(question=question, answer_1=answer_1, answer_2=answer_2)


def parse_scores(reply: str) -> tuple[float, float] | None:
    """The two scores of the reply's first non-empty line, or None."""
    for line in reply.splitlines():
        if line.strip():
            m = _SCORES.match(line)
            return (float(m.group(1)), float(m.group(2))) if m else None
    return None


def verdict(a_first: tuple[float, float] | None, b_first: tuple[float, float] | None) -> str:
    """'win' / 'lose' / 'tie' for A from the two orders' scores, or 'invalid'."""
    if a_first is None or b_first is None:
        return "invalid"
    a = a_first[0] + b_first[1]
    b = a_first[1] + b_first[0]
    return "win" if a > b else "lose" if a < b else "tie"


def tally(verdicts: Sequence[str]) -> dict[str, Any]:
    counts = {k: sum(v == k for v in verdicts) for k in ("win", "lose", "tie", "invalid")}
    return {**counts, "pairs": len(verdicts), "net_wins": counts["win"] - counts["lose"]}


def compare_models(pool: str, model_a: str, model_b: str, judge: str, out: str, cfg=None, *,
                   task_ids: Sequence[str] | None = None, judge_max_new_tokens: int = 32, actors: int = 1,
                   gpus_per_actor: float | None = None, trust_remote_code: bool = False,
                   num_cpus: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Answers of A and B on the pool's instances (evaluate_pool, resumable), each pair
    judged in both orders on an actor pool; pairwise.json (atomic) with the counts."""
    import pyarrow.parquet as pq

    from raysys.actors import generate_rows
    from raysys.config import EvalConfig, GenerationConfig
    from raysys.evaluation.evaluate import evaluate_pool
    from raysys.io import write_json
    from raysys.models import check_model_path

    cfg = cfg or EvalConfig()
    check_model_path(judge)
    answers = {}
    for name, model in (("a", model_a), ("b", model_b)):
        details = f"{out}.{name}.answers.parquet"
        evaluate_pool(pool, model, f"{out}.{name}.metrics.json", cfg, task_ids=task_ids, actors=actors,
                      gpus_per_actor=gpus_per_actor, details=details, trust_remote_code=trust_remote_code,
                      num_cpus=num_cpus, progress=progress)
        answers[name] = {(r["task_id"], r["instance_id"]): r for r in pq.read_table(details).to_pylist()}
    keys = [k for k in answers["a"] if k in answers["b"]]
    rows = []
    for i, k in enumerate(keys):
        q, a, b = answers["a"][k]["prompt"], answers["a"][k]["prediction"], answers["b"][k]["prediction"]
        rows.append({"pair": i, "order": "ab", "prompt": judge_prompt(q, a, b)})
        rows.append({"pair": i, "order": "ba", "prompt": judge_prompt(q, b, a)})
    judge_cfg = EvalConfig(generation=GenerationConfig(judge_max_new_tokens, cfg.generation.max_prompt_tokens, 16),
                           tasks_per_batch=16)
    replies = generate_rows(rows, judge, judge_cfg, actors=actors, gpus_per_actor=gpus_per_actor,
                            trust_remote_code=trust_remote_code, num_cpus=num_cpus)
    by_pair: dict[int, dict[str, str]] = {}
    for r in replies:
        by_pair.setdefault(r["pair"], {})[r["order"]] = r["answer"]
    pairs, verdicts = [], []
    for i, k in enumerate(keys):
        ab, ba = by_pair[i]["ab"], by_pair[i]["ba"]
        v = verdict(parse_scores(ab), parse_scores(ba))
        verdicts.append(v)
        pairs.append({"task_id": k[0], "instance_id": k[1], "answer_a": answers["a"][k]["prediction"],
                      "answer_b": answers["b"][k]["prediction"], "judge_a_first": ab, "judge_b_first": ba,
                      "verdict": v})
    result = {"model_a": model_a, "model_b": model_b, "judge": judge, "pool": pool, **tally(verdicts),
              "pairs_detail": pairs}
    write_json(out, result)
    return result
