"""Multi-node on one machine: a `ray.cluster_utils.Cluster` of a head and two worker
nodes (separate raylets, one CPU each). Scoring actors and Ray Train workers
land on different nodes, and their results equal a single-process computation."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from raysys.config import GenerationConfig, PromptConfig, ScoringConfig, SynthConfig, TrainConfig
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.markov import generate


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # three nodes of 1 CPU: the stages ask 1 CPU per actor / worker (and leave one for Ray
    # Data's tasks), so no two of them can share a node
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


def _nodes_of(class_name: str) -> set[str]:
    from ray._private.state import actors

    return {a["Address"]["NodeID"] for a in actors().values() if class_name in a["ActorClassName"]}


@pytest.mark.ray
def test_scoring_actors_spread_over_nodes_and_match_one_process(cluster, tiny_model_dir, tiny_lm, tmp_path):
    from raysys.scoring.pipeline import score_pool
    from raysys.scoring.scorer import TaskScorer

    tasks = generate(SynthConfig(rules=12, examples_per_rule=2, seed=5))
    write_parquet_tasks(tasks, tmp_path / "pool.parquet")
    cfg = ScoringConfig(instances=1, perturbations=2, generation=GenerationConfig(4), tasks_per_batch=3)
    score_pool(str(tmp_path / "pool.parquet"), str(tiny_model_dir), str(tmp_path / "s.parquet"), cfg, actors=2,
               progress=False)
    assert len(_nodes_of("TaskBatch")) == 2  # the two actors on two nodes
    got = pq.read_table(tmp_path / "s.parquet").to_pydict()
    want, _ = TaskScorer("", cfg, loaded=tiny_lm, device="cpu").score(tasks)
    assert got["task_id"] == [r["task_id"] for r in want]
    # float32 forwards in processes with different thread counts sum in different orders
    # (2026-12-05: one task's U 1.3e-9 apart), so the same tolerance as test_racing's
    assert got["prompt_uncertainty"] == pytest.approx([r["prompt_uncertainty"] for r in want], abs=1e-6)


@pytest.mark.ray
def test_training_workers_spread_over_nodes_and_match_a_single_node_run(cluster, tiny_model_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from raysys.io import write_json
    from raysys.training.trainer import train_model

    tasks = generate(SynthConfig(rules=8, examples_per_rule=4, seed=6))
    ids = [t.task_id for t in tasks]
    cfg = TrainConfig(epochs=1, batch_size=8, micro_batch_size=4, workers=2, backend="ddp", prompt=PromptConfig(demonstrations=0),
                      max_source_tokens=256, max_target_tokens=32, learning_rate=1e-3)
    run = train_model(tasks, ids, str(tiny_model_dir), str(tmp_path / "out"), cfg, progress=False)
    assert run.examples == 32 and (tmp_path / "out" / "config.json").is_file()
    assert len(_nodes_of("RayTrainWorker")) == 2
    # the same training on a one-node local cluster (`raysys train` in its own process)
    write_parquet_tasks(tasks, tmp_path / "pool.parquet")
    write_json(tmp_path / "ids.json", ids)
    r = subprocess.run([sys.executable, "-m", "raysys.cli", "train", "--pool", str(tmp_path / "pool.parquet"),
                        "--tasks", str(tmp_path / "ids.json"), "--model", str(tiny_model_dir), "--out",
                        str(tmp_path / "single"), "--backend", "ddp", "--workers", "2", "--epochs", "1",
                        "--batch-size", "8", "--micro-batch-size", "4", "--demonstrations", "0",
                        "--max-source-tokens", "256", "--max-target-tokens", "32", "--learning-rate", "1e-3",
                        "--verbose"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    # --verbose: Ray's and its workers' output stays on the terminal, and no log is written
    assert "Started a local Ray instance" in r.stderr and "(RayTrainWorker pid=" in r.stdout + r.stderr
    assert "log:" not in r.stderr and not (tmp_path / "raysys.log").exists()
    single = json.loads((tmp_path / "single" / "raysys_train.json").read_text())["epochs"][0]
    # the same loss; not to the last digit: the reported loss is rank 0's, and which of the
    # dataset's blocks each worker streams is decided at run time (measured: 1.4e-4 apart)
    assert run.epochs[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)
