"""The scoring benchmark's smoke test: `bench_scoring.py --quick` runs end to end on the
real data and prints a table whose engine-vs-reference agreement is within tolerance."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

COLUMNS = ["model", "pool", "tasks", "prompts", "tgt tok", "ref s", "ref p/s", "ref tok/s", "eng s", "eng p/s",
           "eng tok/s", "eng/ref", "max|dlogp|", "max|dp|", "max|dU|", "max U", "max p", "MFU"]


def parse_table(out: str) -> list[dict[str, str]]:
    """The rows of the printed table, by column name (the header names some columns with
    two words, so rows are split on whitespace and the '|' separators dropped)."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("model ") and "max|dU|" in line)
    assert set(lines[head + 1]) == {"-"}
    rows = []
    for line in lines[head + 2:]:
        if not line.strip():
            break
        cells = [c for c in line.split() if c != "|"]
        assert len(cells) == len(COLUMNS), line
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def test_bench_scoring_quick(shared_data):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scoring.py"), "--quick",
                           "--shared", str(shared_data)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_table(proc.stdout)
    assert [(r["model"], r["pool"]) for r in rows] == [("tiny", "niv2"), ("tiny", "alpaca")]
    # the quick NIV2 pool is one classification task (COPA: labels 1/2), n = 2, k = 2: per
    # instance 3 prompts, 2 label items and y alone (IFD); Alpaca: 6 tasks x (3 + 1)
    assert [int(r["prompts"]) for r in rows] == [2 * (3 + 2 + 1), 6 * (3 + 1)]
    for r in rows:
        assert float(r["ref s"]) > 0 and float(r["eng s"]) > 0 and r["eng/ref"].endswith("x")
        # the engine computes the reference's numbers (float32 rounding apart)
        assert float(r["max|dlogp|"]) < 1e-5, r
        assert float(r["max|dp|"]) < 1e-6 and float(r["max|dU|"]) < 1e-6, r
        assert 0 < float(r["max p"]) <= 1 and float(r["max U"]) > 0, r


def test_findings_cost_counts_and_estimates(tmp_path):
    """benchmarks/findings_cost.py on hand-made results: the loop's shared round 0 counted
    once per seed, a missing count estimated from the same strategy's counted runs, FLOPs
    as 2N per read token and 6N per trained token."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import findings_cost

    rows = []
    for strategy, scored in (("prompt-uncertainty", [100, None]), ("random", [10, 30])):
        for seed in (0, 1):
            rows.append({"strategy": strategy, "seed": seed, "round": 0, "score_tokens": 0, "train_tokens": 5,
                         "eval_tokens": 7, "seconds": 60.0})
            rows.append({"strategy": strategy, "seed": seed, "round": 1, "score_tokens": scored[seed],
                         "train_tokens": 9, "eval_tokens": None if seed else 8, "seconds": 30.0})
    pd.DataFrame(rows).to_csv(tmp_path / "active_loop.csv", index=False)
    got, seconds = findings_cost.loop_rows(tmp_path / "active_loop.csv")
    by = {r["stage"]: r for r in got}
    assert seconds == 2 * 60 + 4 * 30  # round 0 once per seed
    # scoring: PU seed 1 unknown -> PU's counted mean (100); random 10 + 30
    assert by["scoring"] == {**by["scoring"], "runs": 4, "counted": 3, "tokens": 100 + 100 + 10 + 30}
    assert by["training"]["tokens"] == 2 * 5 + 4 * 9 and by["training"]["counted"] == 6
    # evaluation: round 0 (7, 7), round 1 (8, -, 8, -): missing -> mean of the counted (7, 7, 8, 8)
    assert by["evaluation"]["tokens"] == round(7 + 7 + 8 + 8 + 2 * 7.5) and by["evaluation"]["counted"] == 4


def test_bench_dtype_quick():
    """benchmarks/bench_dtype.py --quick: float32, bfloat16 and float32 answers with bfloat16
    forwards timed, and each bfloat16 setting against float32 by the numbers the issue asks
    for (answers changed, delta p and U, Spearman, top-B)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_dtype.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("float32", "bfloat16 "))
            and " against " not in line}
    assert set(rows) == {"float32", "bfloat16", "float32+bf16-forwards"} and rows["float32"][-1] == "1.00x"
    against = {line.split(" against ")[0]: dict(kv.rsplit(" ", 1) for kv in line.split(": ", 1)[1].split(", "))
               for line in lines if " against float32: " in line}
    assert set(against) == {"bfloat16", "float32+bf16-forwards"}
    for facts in against.values():
        assert int(facts["instances"]) == 12 and 0.0 <= float(facts["answers_changed"]) <= 1.0
        assert float(facts["max_dU"]) < 0.05 and -1.0 <= float(facts["spearman_U"]) <= 1.0
        assert {"top1_jaccard", "top10_jaccard", "top25_jaccard"} <= set(facts)
    # float32's answers whatever the forwards: none changed, and p moved (bfloat16 forwards)
    mixed = against["float32+bf16-forwards"]
    assert float(mixed["answers_changed"]) == 0.0 and 0.0 < float(mixed["max_dp0"]) < 0.05
    assert "matmul peak of the day" in proc.stdout


def test_bench_decode_quick():
    """benchmarks/bench_decode.py --quick: both ways timed with their decode's share, and
    p_i0 from the decode changes no answer and no p beyond float32 rounding."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decode.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line[:22].strip() for line in lines[2:4]] == ["p_i0 by a forward", "p_i0 from the decode"]
    for line in lines[2:4]:
        assert 0 < float(line.split()[-2].rstrip("%")) <= 100  # the decode's share
    last = lines[-1]
    assert last.startswith("decode-scored answers 12 of 12; answers equal 60 of 60 items")
    assert float(last.split("max |dp| ")[1].split(";")[0]) < 1e-6 and float(last.split("max |dU| ")[1]) < 1e-6


def test_bench_decode_batches_quick():
    """bench_decode.py --batches: the decode alone at each generation batch, the same answers
    (the batch changes only the padding) and likelihoods within float32 rounding."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decode.py"), "--quick",
                           "--batches", "2", "8"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["2", "8"] and all(float(r[1]) > 0 for r in rows)
    for r in rows:
        assert r[5] == "12/12," and float(r[-1]) < 1e-5, r


def test_bench_scale_table_from_its_results(tmp_path):
    """bench_scale.table from step summaries written by hand: the full run's seconds summed
    over its shards and its top B the truth, racing's forwards and Jaccard against it,
    lm-eval's seconds per task extrapolated to the pool; a missing shard leaves the
    Jaccard unknown. timed_command times a command and reports a non-negative memory rise;
    ship_fast keeps FAST_COLUMNS of the fast run's scores and counts its forwards and choice;
    round_seconds times each racing round from its part files."""
    import argparse
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scale import FAST_COLUMNS, round_seconds, ship_fast, table, timed_command

    a = argparse.Namespace(shards=2, budget=2, tasks=6, k=4)
    u = {"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.5, "e": 0.2, "f": 0.05}
    for i, ids in enumerate((["a", "b", "c"], ["d", "e", "f"])):
        pq.write_table(pa.table({"task_id": ids, "prompt_uncertainty": [u[t] for t in ids]}),
                       tmp_path / f"full-{i}.parquet")
        (tmp_path / f"full-{i}.json").write_text(json.dumps({"seconds": 10.0 + i, "tasks": 3, "forwards": 12,
                                                             "peak_memory_rise": 1e9 * (i + 1)}))
    (tmp_path / "fast.json").write_text(json.dumps({"seconds": 7.0, "tasks": 6, "forwards": 12, "flags": "--x",
                                                    "peak_memory_rise": 5e8, "chosen": ["a", "d"]}))
    (tmp_path / "peer.json").write_text(json.dumps({"seconds_per_task": 10.5, "tasks": 2}))
    peer, full, fast = table(a, tmp_path)
    assert peer["seconds"] == 63.0 and peer["speedup"] == 1.0
    assert full["seconds"] == 21.0 and full["speedup"] == 3.0 and full["memory"] == 2e9 and full["jaccard"] == 1.0
    assert fast["forwards"] == 0.5 and fast["jaccard"] == 1 / 3 and fast["speedup"] == 9.0  # {a, d} vs {a, b}
    (tmp_path / "full-1.json").unlink()
    assert [r["jaccard"] for r in table(a, tmp_path)] == [None, None, None]
    r = timed_command([sys.executable, "-c", "print('hi')"], tmp_path / "log")
    assert r["seconds"] > 0 and r["peak_memory_rise"] >= 0 and (tmp_path / "log").read_text() == "hi\n"
    scores = [{"task_id": t, "prompt_uncertainty": u[t], "n_instances": 1, "n_perturbations": 4 if t in "ad" else 2,
               "decided_early": t not in "ad", "racing_selected": t in "ad", "extra": 0} for t in "fedcba"]
    pq.write_table(pa.Table.from_pylist(scores), tmp_path / "scores.parquet")
    shipped = ship_fast(tmp_path / "scores.parquet", tmp_path)
    assert shipped == {"tasks": 6, "forwards": 16, "chosen": ["a", "d"]}
    assert pq.read_table(tmp_path / "fast.parquet").column_names == list(FAST_COLUMNS)
    run = tmp_path / "scores.parquet.parts" / "abc"
    for r, ends in enumerate(((100.0, 104.0), (107.0,), (108.5, 109.0))):
        (run / f"round-{r}").mkdir(parents=True)
        for i, end in enumerate(ends):
            (run / f"round-{r}" / f"part-{i}").write_text("")
            os.utime(run / f"round-{r}" / f"part-{i}", (end, end))
    os.utime(tmp_path / "scores.parquet", (110.0, 110.0))
    assert round_seconds(tmp_path / "scores.parquet", 12.0) == [6.0, 3.0, 2.0]  # began at 98


def test_racing_cli_bench_compares_what_both_checkouts_wrote(tmp_path):
    """bench_racing_cli.same: equal files pass; a changed U, a changed spend and another top B
    are each reported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_racing_cli import same

    rows = [{"task_id": "a", "prompt_uncertainty": 0.25, "n_perturbations": 10, "racing_selected": True},
            {"task_id": "b", "prompt_uncertainty": 0.125, "n_perturbations": 5, "racing_selected": False}]

    def write(name, changes):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist([{**r, **changes.get(r["task_id"], {})} for r in rows]), path)
        return path

    base = write("base", {})
    assert same(base, write("equal", {})) == "max |dU| 0, perturbations spent equal, top B equal"
    assert same(base, write("u", {"b": {"prompt_uncertainty": 0.5}})).startswith("max |dU| 0.38")
    assert "spent DIFFERENT" in same(base, write("spent", {"b": {"n_perturbations": 7}}))
    assert "top B DIFFERENT" in same(base, write("top", {"b": {"racing_selected": True}}))


def test_top_overlap_by_hand():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_dtype import top_overlap

    a, b = [0.9, 0.8, 0.1, 0.2, 0.5], [0.8, 0.9, 0.5, 0.1, 0.2]
    assert top_overlap(a, b, 0.4) == 1.0  # top 2: {0, 1} both
    assert top_overlap(a, b, 0.6) == 0.5  # top 3: {0, 1, 4} and {0, 1, 2}: 2 shared of 4
    assert top_overlap(a, b, 0.01) == 0.0  # top 1: {0} and {1}


def test_bench_peer_quick(shared_data):
    """benchmarks/bench_peer.py --quick: lm-eval's token-level log-likelihoods equal the
    engine's on the same ids, and the end-to-end table has its three ways."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("lm_eval") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("lm-eval is not installed (pip install -e .[bench])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_peer.py"), "--quick",
                           "--shared", str(shared_data)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    exact = [line.split() for line in lines if line.startswith(("niv2 ", "alpaca "))]
    assert [r[0] for r in exact] == ["niv2", "alpaca"]
    for r in exact:  # pool tasks pairs tokens | peer p/s raysys p/s ratio | max|dlogp| max|dU|
        assert float(r[-2]) < 1e-5 and float(r[-1]) < 1e-6, r
    ways = {line.split()[0]: line.split() for line in lines if line.startswith(("peer ", "full ", "racing "))}
    assert set(ways) == {"peer", "full", "racing"}
    assert float(ways["full"][4]) == 1.0 and 0 <= float(ways["racing"][4]) <= 1.0  # top-B Jaccard
    assert "12/12 greedy answers equal raysys's" in next(line for line in lines if line.startswith("peer "))


def test_bench_race_replay_quick():
    """benchmarks/bench_race_replay.py --quick: racing replayed on a synthetic full run; a
    race whose first round is all K perturbations spends the full run and finds its top B."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_race_replay.py"), "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert len(rows) == 2 * 3 * 2 * 2  # budgets x first rounds (2, 3 and K) x deltas x rules (t, moderated)
    assert {r[3] for r in rows} == {"t", "moderated"}
    for b, first, delta, rule, rounds, forwards, jaccard, misplaced in rows:
        assert 0 < float(forwards.rstrip("%")) <= 100 and 0 <= float(jaccard) <= 1
        if first == "10":
            assert (rounds, forwards, jaccard, misplaced) == ("1", "100.0%", "1.000", "0")
        else:
            assert float(forwards.rstrip("%")) < 100  # racing decided some tasks early


def test_bench_call_quick(tmp_path):
    """bench_call.py --quick: both ways of handing the pool to Ray Data give the pool's rows
    in order (the script asserts it) and every row of its table has its two figures."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_call.py"), "--quick", "--tasks", "8"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""},
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = lines[lines.index("-" * 56) + 1:]
    assert [r[:40].strip() for r in rows] == ["Ray Data read tasks (read_parquet)", "read by the driver (from_arrow)",
                                              "score_pool, warm (raysys now)"]
    assert all(float(x) > 0 for r in rows for x in r[40:].split())


def test_the_scale_runs_details_are_what_the_replay_reads():
    """bench_scale keeps DETAIL_COLUMNS of the full run's details; bench_race_replay races
    on exactly those (a column it needs and the scale run drops fails here)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_race_replay import settings_table, synthetic
    from bench_scale import DETAIL_COLUMNS

    slim = [{c: d[c] for c in DETAIL_COLUMNS} for d in synthetic(tasks=20, k=6)]
    rows = settings_table(slim, [0.1], [2], [0.05], ("t",))
    assert len(rows) == 1 and 0 <= rows[0]["jaccard"] <= 1


def test_the_scale_pilots_numbers():
    """docs/scoring.md's pilot of the fast way on shard 0, recomputed from the shipped
    results: its spend, its tasks decided early, its top 100's overlap with the full
    float32 run and the largest |U - U_float32| of the tasks it raced to K; and the full
    run's seconds per shard and in all."""
    import json

    import pyarrow.parquet as pq

    from raysys.scoring.race_rule import top_b

    res = ROOT / "docs" / "results" / "scale"
    full = pq.read_table(res / "full-0.parquet").to_pylist()
    pilot = pq.read_table(res / "pilot-fast-0.parquet").to_pylist()
    meta = json.loads((res / "pilot-fast-0.json").read_text())
    assert len(pilot) == len(full) == 1000 and meta["forwards"] == sum(r["n_perturbations"] for r in pilot)
    assert round(100 * meta["forwards"] / 20_000) == 52 and meta["forwards"] == 10_497
    assert sum(r["decided_early"] for r in pilot) == 823 and sum(r["n_perturbations"] == 20 for r in pilot) == 177
    truth = top_b([r["prompt_uncertainty"] for r in full], [r["task_id"] for r in full], 100)
    chosen = {r["task_id"] for r in pilot if r["racing_selected"]}
    assert chosen == set(meta["chosen"]) and round(len(chosen & truth) / len(chosen | truth), 3) == 0.980
    u = {r["task_id"]: r["prompt_uncertainty"] for r in full}
    assert round(max(abs(r["prompt_uncertainty"] - u[r["task_id"]]) for r in pilot if r["n_perturbations"] == 20),
                 3) == 0.013
    shards = [json.loads((res / f"full-{i}.json").read_text()) for i in range(5)]
    assert [round(f["seconds"]) for f in shards] == [2081, 2047, 1866, 1932, 1944]  # docs/scoring.md's table
    assert round(sum(f["seconds"] for f in shards)) == 9870 and sum(f["forwards"] for f in shards) == 100_000
    full_s = shards[0]["seconds"]
    assert (round(full_s), round(meta["seconds"]), round(full_s / meta["seconds"], 2)) == (2081, 1290, 1.61)


def test_the_scale_runs_numbers():
    """docs/scoring.md's fast run and its table, recomputed from docs/results/scale/: seconds,
    forwards, tasks decided early and raced to K, the top 500's overlap with the full float32
    run (the misses' and extras' ranks, the deep miss's deviations), max |U - U_float32| over
    the tasks raced to K, the rounds' seconds and open tasks, lm-eval's time and the ratios."""
    import json

    import pyarrow.parquet as pq

    from raysys.scoring.race_rule import top_b

    res = ROOT / "docs" / "results" / "scale"
    full = [r for i in range(5) for r in pq.read_table(res / f"full-{i}.parquet").to_pylist()]
    fast = pq.read_table(res / "fast.parquet").to_pylist()
    meta, peer = json.loads((res / "fast.json").read_text()), json.loads((res / "peer.json").read_text())
    full_s = sum(json.loads((res / f"full-{i}.json").read_text())["seconds"] for i in range(5))
    assert len(fast) == len(full) == 5000 and meta["forwards"] == sum(r["n_perturbations"] for r in fast) == 37_920
    assert (round(meta["seconds"]), round(meta["seconds"] / 60, 1), round(100 * meta["forwards"] / 100_000, 1)) \
        == (5025, 83.8, 37.9)
    assert round(full_s / meta["seconds"], 2) == 1.96 and round(meta["peak_memory_rise"] / 1e9, 1) == 6.2
    spent = [r["n_perturbations"] for r in fast]
    assert (spent.count(3), sum(r["decided_early"] for r in fast), spent.count(20)) == (1754, 4445, 555)
    assert [sum(n > cut for n in spent) for cut in (3, 5, 7, 10, 15)] == [3246, 2107, 1458, 1013, 555]
    assert [round(x) for x in meta["round_seconds"]] == [3208, 523, 383, 361, 351, 200]
    assert round(100 * meta["round_seconds"][0] / meta["seconds"]) == 64 and round(meta["round_seconds"][0] / 5000, 2) \
        == 0.64 and round(meta["round_seconds"][0] / 60) == 53
    per_forward = [t / (n * (b - a)) for t, n, (a, b) in
                   zip(meta["round_seconds"][1:], (3246, 2107, 1458, 1013, 555), ((3, 5), (5, 7), (7, 10), (10, 15), (15, 20)))]
    assert (round(1000 * min(per_forward)), round(1000 * max(per_forward))) == (69, 91)
    assert round(1000 * sum(meta["round_seconds"][1:]) / (meta["forwards"] - 15_000)) == 79
    u = {r["task_id"]: r["prompt_uncertainty"] for r in full}
    assert round(max(abs(r["prompt_uncertainty"] - u[r["task_id"]]) for r in fast if r["n_perturbations"] == 20),
                 3) == 0.018
    truth = top_b(list(u.values()), list(u), 500)
    chosen = {r["task_id"] for r in fast if r["racing_selected"]}
    assert chosen == set(meta["chosen"]) and round(len(chosen & truth) / len(chosen | truth), 3) == 0.949
    rank = {t: i + 1 for i, t in enumerate(sorted(u, key=lambda t: -u[t]))}
    missed, extra = sorted(rank[t] for t in truth - chosen), sorted(rank[t] for t in chosen - truth)
    assert len(missed) == 13 and missed[0] == 261 and (missed[1], missed[-1]) == (415, 500) and (extra[0], extra[-1]) \
        == (501, 540)
    deep = min(truth - chosen, key=rank.get)
    assert deep == "alpaca-04249" and round(u[deep], 3) == 0.180
    d = pq.read_table(res / "full-4.details.parquet").to_pylist()
    p = {r["perturbation"]: r["p"] for r in d if r["task_id"] == deep}
    assert [round(abs(p[j] - p[0]), 3) for j in (1, 2, 3)] == [0.018, 0.0, 0.036]
    lm_eval = peer["seconds_per_task"] * 5000
    assert (peer["tasks"], round(peer["seconds_per_task"], 2), round(lm_eval)) == (40, 3.38, 16877)
    assert (round(lm_eval / full_s, 2), round(lm_eval / meta["seconds"], 2)) == (1.71, 3.36)
    doc, readme = (ROOT / "docs" / "scoring.md").read_text(), (ROOT / "README.md").read_text()
    for figure in ("| 16,877 |", "| 9,870 (2 h 45 min) |", "**5,025 (83.8 min)**", "**37.9 %** (37,920)", "**0.949**",
                   "| 1.71× |", "**3.36×**", "(1.96×)", "3,208 s, **64 % of the run**", "523, 383, 361, 351 and 200 s"):
        assert figure in doc, figure
    both = len(chosen & truth)
    assert f"in {round(meta['seconds'] / 60)} minutes on 2 cores, {lm_eval / meta['seconds']:.1f}× lm-eval, {both} of" \
        in " ".join(readme.split())


def test_race_replay_reads_a_pool_in_several_files(tmp_path):
    """bench_race_replay --details A B: the shards of one pool replay as that pool does from
    one file (the scale run's five shards, top 500 of 5,000)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_race_replay import synthetic

    rows = synthetic()
    ids = sorted({d["task_id"] for d in rows})
    half = set(ids[: len(ids) // 2])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "all.parquet")
    pq.write_table(pa.Table.from_pylist([d for d in rows if d["task_id"] in half]), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([d for d in rows if d["task_id"] not in half]), tmp_path / "b.parquet")

    def table(*files):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_race_replay.py"), "--details",
                               *map(str, files), "--budgets", "0.1", "--first", "3", "--deltas", "0.2"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.splitlines()

    one, two = table(tmp_path / "all.parquet"), table(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert one[0].startswith(f"{len(ids)} tasks") and two[0].startswith(f"{len(ids)} tasks")
    assert one[1:] == two[1:] and len(one) == 4  # header and one row per rule
