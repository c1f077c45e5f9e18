"""RDS+ embeddings (raysys.models.pooling): the pooling by hand, the scorer's stored
embeddings and the forward-only ones against a direct computation with the model's own
hidden states, and the rds strategy against a direct cosine ranking."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysys.config import GenerationConfig, ScoringConfig, SelectConfig, SynthConfig
from raysys.models.pooling import position_weighted_mean
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.markov import generate
from raysys.scoring.items import sample_instances
from raysys.scoring.scorer import TaskScorer

CFG = ScoringConfig(instances=3, perturbations=2, generation=GenerationConfig(5, batch=4), tasks_per_batch=4)


def test_position_weighted_mean_by_hand():
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]],
                      [[9.0, 9.0], [3.0, 0.0], [0.0, 3.0]]])  # row 1 left-padded: its first position is padding
    m = torch.tensor([[1, 1, 1], [0, 1, 1]])
    got = position_weighted_mean(h, m)
    want = torch.tensor([[(1 * 1 + 2 * 0 + 3 * 2) / 6, (1 * 0 + 2 * 1 + 3 * 2) / 6],
                         [(1 * 3 + 2 * 0) / 3, (1 * 0 + 2 * 3) / 3]])
    assert torch.allclose(got, want)
    right = position_weighted_mean(torch.tensor([[[3.0, 0.0], [0.0, 3.0], [9.0, 9.0]]]), torch.tensor([[1, 1, 0]]))
    assert torch.allclose(right, want[1:])  # right padding: the same vector


@pytest.fixture(scope="module")
def tasks():
    return generate(SynthConfig(rules=6, examples_per_rule=4, seed=3, unseen_rules=0))


def direct(lm, scorer: TaskScorer, task) -> np.ndarray:
    """The task's RDS+ embedding from the model's own last hidden states, prompt by prompt."""
    from functools import partial

    from raysys.scoring.items import TaskPrompts

    prompts = TaskPrompts.original(task, scorer.template)
    vecs = []
    for inst in sample_instances(task, CFG.instances, CFG.seed):
        ids = scorer.runner.fit_prompt(partial(prompts.text, 0, inst), CFG.prompt.demonstrations).ids
        with torch.no_grad():
            h = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        w = torch.arange(1, len(ids) + 1, dtype=torch.float32)
        vecs.append(((w / w.sum())[:, None] * h).sum(0).numpy())
    return np.mean(vecs, axis=0)


def test_scores_and_forward_only_embeddings_match_a_direct_computation(tasks, tiny_lm):
    scorer = TaskScorer("", CFG, loaded=tiny_lm)
    rows, _ = scorer.score(tasks)  # batches of 4 prompts of different lengths: left padding in the decode
    alone = scorer.embed(tasks)  # right padding, no decode
    for task, row, e in zip(tasks, rows, alone):
        want = direct(tiny_lm, scorer, task)
        assert np.allclose(row["rds_embedding"], want, atol=1e-5), task.task_id
        assert np.allclose(e, want, atol=1e-5), task.task_id
    given, _ = scorer.score(tasks[:2], answers=["x"] * sum(min(3, len(t.instances)) for t in tasks[:2]))
    assert given[0]["rds_embedding"] is None  # nothing decoded: no prefill to take it from


def test_rds_strategy_is_a_cosine_ranking(tasks, tiny_lm, tiny_model_dir, tmp_path):
    """Candidates by their stored embeddings, targets embedded now with the scores' own
    model and config; overall max and per-target round robin, as INSTA's similarity."""
    import json

    from raysys.config.mapping import to_dict
    from raysys.selection.run import run_select

    cfg = CFG
    scorer = TaskScorer(str(tiny_model_dir), cfg)
    rows, _ = scorer.score(tasks[:4])
    scores = tmp_path / "scores.parquet"
    meta = {"raysys_model": str(tiny_model_dir), "raysys_scoring_config": json.dumps(to_dict(cfg))}
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata(meta), scores)
    targets = tmp_path / "targets.parquet"
    write_parquet_tasks(tasks[4:], targets)
    sel = run_select(SelectConfig(strategy="rds", budget=3), str(tmp_path / "sel.json"), scores=str(scores),
                     targets=str(targets))

    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    cand = unit([r["rds_embedding"] for r in rows])
    tgt = unit([direct(tiny_lm, scorer, t) for t in tasks[4:]])
    sim = cand @ tgt.T  # (4 candidates, 2 targets)
    assert list(sel.task_ids) == [rows[i]["task_id"] for i in np.argsort(-sim.max(axis=1))[:3]]
    per = run_select(SelectConfig(strategy="rds", budget=2, similarity_mode="per-target"),
                     str(tmp_path / "sel2.json"), scores=str(scores), targets=str(targets))
    first = int(np.argmax(sim[:, 0]))  # target 0's nearest, then target 1's nearest other one
    second = max((i for i in range(4) if i != first), key=lambda i: sim[i, 1])
    assert list(per.task_ids) == [rows[first]["task_id"], rows[second]["task_id"]]
    # the targets were embedded once, kept beside them, and read back by the second selection
    from raysys.selection.rds import target_embeddings

    kept = list(tmp_path.glob("targets.parquet.rds-*.npy"))
    assert len(kept) == 1 and np.allclose(np.load(kept[0]), tgt, atol=1e-6)
    np.save(kept[0], -np.load(kept[0]))  # a cache that is read back, not recomputed, shows it
    assert np.allclose(target_embeddings(targets, scores), -tgt, atol=1e-6)
    write_parquet_tasks(tasks[3:], targets)  # other targets: another key, embedded anew
    assert np.allclose(target_embeddings(targets, scores)[1:], tgt, atol=1e-6)
    assert len(list(tmp_path.glob("targets.parquet.rds-*.npy"))) == 2
