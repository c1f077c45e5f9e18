"""Conversational pools (raysys.pools.conversation): `messages` and ShareGPT rows read from
JSONL, a JSON array, Parquet and a Hugging Face folder, with strict one-line errors naming
the file, the row and the turn; scoring a conversation against a direct computation (the
chat template written out by hand, perturbations redrawn, a plain one-prompt-at-a-time
reference); training rows; `raysys select --export` in both layouts, loaded by `datasets`
and trained on for a step by TRL's SFTTrainer; a round trip from Alpaca and Self-Instruct
tasks. The tiny model wears test_chat's ChatML-like template.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from raysys.config import GenerationConfig, PromptConfig, ScoringConfig, TrainConfig
from raysys.errors import RaysysError
from raysys.perturb import perturb_text, rng_for
from raysys.pools.load import load_pool
from raysys.scoring.reference import reference_mean_logprobs
from raysys.scoring.scorer import TaskScorer

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_cli
from test_scorer import greedy

SYSTEM = {"role": "system", "content": "Answer in one word."}
CONVERSATIONS = [  # (task column, turns)
    ("colors", [SYSTEM, {"role": "user", "content": "Name a warm color please."},
                {"role": "assistant", "content": "Red."}, {"role": "user", "content": "And a cold one for the sea?"},
                {"role": "assistant", "content": "Blue."}]),
    ("colors", [{"role": "user", "content": "What color is fresh grass in spring?"},
                {"role": "assistant", "content": "Green."}]),
    ("math", [{"role": "user", "content": "What is two plus two, written as a word?"},
              {"role": "assistant", "content": "Four."}]),
]
SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}


def messages_rows(column: str | None = "category") -> list[dict]:
    return [{**({column: c} if column else {}), "messages": turns} for c, turns in CONVERSATIONS]


def sharegpt_rows(column: str | None = "category") -> list[dict]:
    return [{**({column: c} if column else {}),
             "conversations": [{"from": SHAREGPT[t["role"]], "value": t["content"]} for t in turns]}
            for c, turns in CONVERSATIONS]


def write_rows(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:  # a Hugging Face save_to_disk folder
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("layout", ["messages", "sharegpt"])
@pytest.mark.parametrize("name", ["pool.jsonl", "pool.json", "pool.parquet", "hf-folder"])
def test_conversational_pools_give_the_right_tasks(tmp_path, layout, name):
    path = write_rows((messages_rows if layout == "messages" else sharegpt_rows)(), tmp_path / name)
    r = run_cli("pool", "inspect", path, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["format"] == (layout if name != "hf-folder" else "hf")
    assert (summary["num_tasks"], summary["num_instances"], summary["num_conversation_tasks"]) == (2, 3, 2)
    assert summary["turns_before_the_last"] == {"min": 0, "mean": 1.0, "max": 3}
    tasks = {t.task_id: t for t in load_pool(path).tasks}
    colors = tasks["colors"]
    assert colors.conversation and colors.instruction == "" and colors.categories == ("colors",)
    first = colors.instances[0]
    assert [(m.role, m.content) for m in first.context] == [
        ("system", "Answer in one word."), ("user", "Name a warm color please."), ("assistant", "Red.")]
    assert (first.input, first.outputs, first.id) == ("And a cold one for the sea?", ("Blue.",), "colors-0")
    assert [i.input for i in tasks["math"].instances] == ["What is two plus two, written as a word?"]
    forced = run_cli("pool", "inspect", path, "--json", "--format", layout)
    assert forced.returncode == 0 and json.loads(forced.stdout)["num_tasks"] == 2, forced.stderr


def test_rows_sharing_a_task_column_form_one_task(tmp_path):
    path = write_rows(messages_rows("domain"), tmp_path / "d.jsonl")
    assert len(load_pool(path).tasks) == 3  # "domain" is no default task column: a task per row
    assert [t.task_id for t in load_pool(path).tasks] == ["messages-00000", "messages-00001", "messages-00002"]
    assert [len(t.instances) for t in load_pool(path, task_column="domain").tasks] == [2, 1]
    path = write_rows(messages_rows(), tmp_path / "c.jsonl")
    assert len(load_pool(path, task_column="").tasks) == 3  # --task-column none
    r = run_cli("pool", "inspect", path, "--json", "--task-column", "none")
    assert json.loads(r.stdout)["num_tasks"] == 3, r.stderr
    rows = messages_rows("task_id")
    rows[1]["instance_id"] = rows[0]["instance_id"] = "x"
    r = run_cli("pool", "inspect", write_rows(rows, tmp_path / "dup.jsonl"))
    assert r.returncode != 0 and "line 2: duplicate id 'x' in task 'colors' (first at line 1)" in r.stderr
    del rows[2]["task_id"]
    rows[1]["instance_id"] = "y"
    r = run_cli("pool", "inspect", write_rows(rows, tmp_path / "missing.jsonl"))
    assert r.returncode != 0 and "line 3: missing required field 'task_id'" in r.stderr


def _turns(*pairs) -> list[dict]:
    return [{"from": f, "value": v} for f, v in pairs]


@pytest.mark.parametrize("conversation, message", [
    (_turns(("human", "2+2?"), ("bot", "4")), "field 'conversations[1].from': unknown role 'bot'"),
    (_turns(("human", "2+2?"), ("human", "4")), "turn 1: a human turn where a gpt turn belongs"),
    (_turns(("gpt", "4"), ("human", "2+2?"), ("gpt", "4")), "turn 0: a gpt turn where a human turn belongs"),
    (_turns(("human", "2+2?"), ("gpt", "4"), ("system", "Be kind.")), "turn 2: a system turn may only come first"),
    (_turns(("human", "2+2?")), "turn 0: the last turn must be the gpt's, not the human's"),
    (_turns(("human", ["2+2?"]), ("gpt", "4")), "field 'conversations[0].value' must be a string, got array"),
    (_turns(("human", "2+2?"), ("gpt", None)), "missing required field 'conversations[1].value'"),
    ([], "field 'conversations' holds no turns"),
    (_turns(("human", "  "), ("gpt", "4")), "turn 0: the last user turn is empty"),
    ("hello", "field 'conversations' must be an array, got string"),
])
def test_malformed_conversations_are_one_line_errors(tmp_path, conversation, message):
    good = {"conversations": _turns(("human", "Hi"), ("gpt", "Hello"))}
    path = write_rows([good, {"conversations": conversation}], tmp_path / "bad.jsonl")
    r = run_cli("pool", "inspect", path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"raysys: error: {path}: line 2: ") and message in lines[0], lines
    skipped = run_cli("pool", "inspect", path, "--skip-invalid", "--json")
    assert json.loads(skipped.stdout)["num_tasks"] == 1 and json.loads(skipped.stdout)["num_skipped"] == 1


def test_messages_with_an_unknown_role_and_canonical_conversations(tmp_path):
    bad = [{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]}]
    r = run_cli("pool", "inspect", write_rows(bad, tmp_path / "m.jsonl"))
    assert "line 1: field 'messages[1].role': unknown role 'tool' (one of system, user, assistant)" in r.stderr
    # a canonical file holds conversation tasks as they are; Parquet round trips them
    from raysys.pools.canonical import write_tasks

    tasks = load_pool(write_rows(messages_rows(), tmp_path / "c.jsonl")).tasks
    for out in (tmp_path / "c.parquet", tmp_path / "canonical.jsonl"):
        write_tasks(list(tasks), out)
        assert load_pool(out).tasks == tasks
    row = json.loads((tmp_path / "canonical.jsonl").read_text().splitlines()[0])
    row["instances"][0]["context"] = [{"role": "assistant", "content": "x"}]
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    r = run_cli("pool", "inspect", tmp_path / "bad.jsonl")
    assert "line 1: instance 'colors-0': turn 0: an assistant turn where a user turn belongs" in r.stderr, r.stderr


def test_a_version_1_parquet_pool_reads_as_instruction_tasks(tmp_path):
    import pyarrow.parquet as pq

    from raysys.config import SynthConfig
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.markov import generate

    tasks = generate(SynthConfig(rules=3, examples_per_rule=2, seed=1))
    write_parquet_tasks(tasks, tmp_path / "v2.parquet")
    table = pq.read_table(tmp_path / "v2.parquet").drop_columns(["conversation"])
    inst = table.column("instances").combine_chunks()
    import pyarrow as pa

    flat = inst.flatten()  # the v1 instance struct: id, input, outputs
    v1 = pa.ListArray.from_arrays(inst.offsets, pa.StructArray.from_arrays(
        [flat.field("id"), flat.field("input"), flat.field("outputs")], ["id", "input", "outputs"]))
    pq.write_table(table.set_column(table.schema.get_field_index("instances"), "instances", v1),
                   tmp_path / "v1.parquet")
    assert "context" not in str(pq.read_schema(tmp_path / "v1.parquet"))
    assert load_pool(tmp_path / "v1.parquet").tasks == tuple(tasks)


def by_hand(turns: list[tuple[str, str]]) -> str:
    """test_chat's template written out: each turn <|role|>\\n...</s>\\n, then the generation
    prompt (the <s> the template writes is the tokenizer's own)."""
    return "".join(f"<|{role}|>\n{content}</s>\n" for role, content in turns) + "<|assistant|>\n"


@pytest.mark.parametrize("system", [False, True])
def test_scoring_a_conversation_equals_a_direct_computation(chat_lm, tmp_path, system):
    tasks = load_pool(write_rows(messages_rows(), tmp_path / "c.jsonl")).tasks
    cfg = ScoringConfig(instances=2, perturbations=3, seed=4, drop_rate=0.5, perturb_system=system,
                        generation=GenerationConfig(max_new_tokens=5), entropy=False, ifd=False)
    rows, details = TaskScorer("", cfg, loaded=chat_lm).score(tasks, details=True)
    assert len(details) == 3 * 4
    system_changed = 0
    for task, row in zip(tasks, rows):
        mine = [d for d in details if d["task_id"] == task.task_id]
        for d in mine:
            inst = next(i for i in task.instances if i.id == d["instance_id"])
            turns = [(m.role, m.content) for m in inst.context]
            user = inst.input
            if d["perturbation"]:  # redrawn here: the last user turn first, then the system turn
                rng = rng_for(4, f"{task.task_id}\x1f{inst.id}", d["perturbation"])
                user = perturb_text(inst.input, "dropout", 0.5, rng)
                if system and turns and turns[0][0] == "system":
                    turns[0] = ("system", perturb_text(turns[0][1], "dropout", 0.5, rng))
                    system_changed += turns[0][1] != inst.context[0].content
            assert d["prompt"] == by_hand(turns + [("user", user)])
            original = by_hand([(m.role, m.content) for m in inst.context] + [("user", inst.input)])
            assert d["target"] == greedy(chat_lm, original, 5)
        p = np.exp(reference_mean_logprobs(chat_lm.model, chat_lm.tokenizer, "causal", [d["prompt"] for d in mine],
                                           [d["target"] for d in mine]))
        assert np.max(np.abs(p - np.array([d["p"] for d in mine]))) < 1e-6
        p = p.reshape(-1, 4)  # (instance, j)
        assert abs(row["prompt_uncertainty"] - np.mean(np.abs(p[:, 1:] - p[:, :1]))) < 1e-6
    assert (system_changed > 0) == system  # the flag perturbs the system turn, and only then
    assert len({d["prompt"] for d in details}) > 6  # the perturbations changed the user turns


def test_training_rows_of_a_conversation(chat_lm, tmp_path):
    from raysys.prompts import template_for
    from raysys.training.data import encode, training_examples

    tasks = load_pool(write_rows(messages_rows(), tmp_path / "c.jsonl")).tasks
    template = template_for("tk", tokenizer=chat_lm.tokenizer)  # a conversation takes the chat template anyway
    cfg = TrainConfig(instances_per_task=2, prompt=PromptConfig("tk", 0))
    rows = training_examples(tasks, ["colors"], cfg, template)
    assert [(r["instance_id"], r["target"]) for r in rows] == [("colors-0", "Blue."), ("colors-1", "Green.")]
    assert rows[0]["prompt"] == by_hand([("system", "Answer in one word."), ("user", "Name a warm color please."),
                                         ("assistant", "Red."), ("user", "And a cold one for the sea?")])
    ids, labels = encode(chat_lm.tokenizer, "causal", rows[0]["prompt"], rows[0]["target"], cfg)
    answer = chat_lm.tokenizer("Blue.", add_special_tokens=False).input_ids + [chat_lm.tokenizer.eos_token_id]
    assert [x for x in labels if x != -100] == answer and ids[-len(answer):] == answer
    with pytest.raises(ValueError, match="needs the model's chat template"):
        training_examples(tasks, ["colors"], cfg)  # never rendered as if it were an instruction


def test_pool_show_prints_a_conversation_through_the_chat_template(chat_model, tmp_path):
    pool = write_rows(messages_rows(), tmp_path / "c.jsonl")
    r = run_cli("pool", "show", pool, "--n", "1", "--model", chat_model)
    assert r.returncode == 0, r.stderr
    assert by_hand([("system", "Answer in one word."), ("user", "Name a warm color please."), ("assistant", "Red."),
                    ("user", "And a cold one for the sea?")]) in r.stdout
    r = run_cli("pool", "show", pool)
    assert r.returncode != 0 and "conversations are shown through a model's chat template: give --model" in r.stderr


def test_a_conversation_pool_needs_a_chat_template_before_any_actor(tiny_model_dir, tmp_path):
    from raysys.scoring.pipeline import score_pool

    pool = write_rows(messages_rows(), tmp_path / "c.jsonl")
    with pytest.raises(RaysysError, match="has no chat template: a conversation pool needs one"):
        score_pool(str(pool), str(tiny_model_dir), str(tmp_path / "s.parquet"), ScoringConfig(instances=1))
    assert not (tmp_path / "s.parquet").exists()


def test_round_trip_scored_selected_exported_and_trained_with_trl(ray_local, chat_model, shared_data, tmp_path):
    """Alpaca and Self-Instruct tasks exported as messages (select --export), read back as a
    conversational pool with a multi-turn row, scored on Ray, selected by prompt
    uncertainty and exported again; the export loads with `datasets` and TRL trains on it."""
    from raysys.scoring.pipeline import score_pool

    alpaca = json.loads((shared_data / "alpaca/alpaca_random5000_subset.json").read_text())[:5]
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca))
    seeds = (shared_data / "self_instruct/seed_tasks.jsonl").read_text().splitlines()[:3]
    (tmp_path / "si.jsonl").write_text("\n".join(seeds) + "\n")
    seeds_0 = json.loads(seeds[0])
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text("instances_per_task: 3\n")
    exported = []
    for src in ("alpaca.json", "si.jsonl"):
        out = tmp_path / f"{src}.messages.jsonl"
        r = run_cli("select", "--strategy", "random", "--budget", "10", "--pool", tmp_path / src, "--out",
                    tmp_path / f"{src}.sel.json", "--export", out, "--train-config", train_cfg, in_process=True)
        assert r.returncode == 0, r.stderr
        exported.append(out.read_text())
    first = json.loads(exported[0].splitlines()[0])
    task = alpaca[int(first["task_id"].split("-")[1])]
    assert first["messages"] == [
        {"role": "user", "content": task["instruction"] + ("\n\n" + task["input"] if task["input"] else "")},
        {"role": "assistant", "content": task["output"]}]
    multi = [{"task_id": "multi", "instance_id": f"multi-{i}", "messages": c[1]} for i, c in enumerate(CONVERSATIONS)]
    pool = tmp_path / "conv.jsonl"
    pool.write_text(exported[0] + exported[1] + "".join(json.dumps(m) + "\n" for m in multi))
    tasks = load_pool(pool).tasks  # rows grouped by task_id
    assert [len(t.instances) for t in tasks] == [1] * 8 + [3]  # in selection order: random
    assert {t.task_id for t in tasks[5:8]} == {"seed_task_0", "seed_task_1", "seed_task_2"}
    scores = tmp_path / "scores.parquet"
    score_pool(str(pool), str(chat_model), str(scores), ScoringConfig(
        instances=1, perturbations=2, entropy=False, ifd=False, generation=GenerationConfig(max_new_tokens=4),
        tasks_per_batch=5), progress=False)
    for fmt, name in (("messages", "sel.jsonl"), ("alpaca", "sel.json")):
        r = run_cli("select", "--strategy", "prompt-uncertainty", "--budget", "9", "--scores", scores, "--pool", pool,
                    "--out", tmp_path / "selected.json", "--export", tmp_path / name, "--export-format", fmt,
                    "--train-config", train_cfg, in_process=True)
        assert r.returncode == 0, r.stderr
    facts = json.loads((tmp_path / "sel.jsonl.provenance.json").read_text())
    assert (facts["strategy"], facts["budget"], facts["n_tasks"], facts["n_examples"]) == ("prompt-uncertainty", 9, 9,
                                                                                           11)
    assert facts["scores"] == str(scores) and facts["pool"] == str(pool)
    import datasets

    ds = datasets.load_dataset("json", data_files=str(tmp_path / "sel.jsonl"), split="train")
    assert len(ds) == 11 and ds.column_names == ["messages", "task_id", "instance_id"]
    assert [r["messages"] for r in ds if r["task_id"] == "multi"] == [c[1] for c in CONVERSATIONS]
    alp = json.loads((tmp_path / "sel.json").read_text())
    assert len(alp) == 11 and {"instruction": seeds_0["instruction"], "input": "", "output":
                               seeds_0["instances"][0]["output"]} in alp
    assert {"instruction": "And a cold one for the sea?", "input": "", "output": "Blue.", "system":
            "Answer in one word.", "history": [["Name a warm color please.", "Red."]]} in alp
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=4, report_to=[],
                     use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(chat_model), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(chat_model))
    out = trainer.train()
    assert out.global_step == 1 and np.isfinite(out.training_loss) and out.training_loss > 0
