"""A selection as a training file (`raysys select --export FILE`): the selected tasks'
training examples exactly as `raysys train` draws them (raysys.training.data.
training_instances: up to instances_per_task per task, from the train config's seed; the
first reference output), in the layout of the trainer a team already uses:

- `messages` (default; JSONL): one `{"messages": [...], "task_id", "instance_id"}` per
  line. A conversation keeps its own turns (system and earlier turns included); an
  instruction task is one user turn (its instruction, then a blank line and the instance
  input when there is one) and the reference as the assistant's. The conversational
  dataset of TRL's SFTTrainer, axolotl's chat_template and LLaMA-Factory's sharegpt loader.
- `alpaca` (a JSON array): `{"instruction", "input", "output"}`, with `system` and
  `history` (`[[user, assistant], ...]`) where a conversation has them: LLaMA-Factory's
  Alpaca layout. A conversation's last user turn is its instruction.

Demonstrations are not written (the trainer's own chat template makes the prompt); the
selection's provenance (strategy, budget, seed, scores, pool, model and the counts) goes
beside the file as FILE.provenance.json. Both are written atomically. Pure but for the
writing.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raysys.config import TrainConfig
from raysys.errors import RaysysError
from raysys.io import write_json, write_jsonl
from raysys.schema import Instance, Task
from raysys.training.data import training_instances

EXPORT_FORMATS = {"messages": ".jsonl", "alpaca": ".json"}


def check_export(path: str, fmt: str) -> None:
    """RaysysError for an export that cannot be written as asked (checked before any work)."""
    if fmt not in EXPORT_FORMATS:
        raise RaysysError(f"--export-format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if not str(path).endswith(EXPORT_FORMATS[fmt]):
        raise RaysysError(f"{path}: a {fmt} export is a {EXPORT_FORMATS[fmt]} file")


def user_text(task: Task, inst: Instance) -> str:
    """The user's turn of an example: a conversation's last user turn; an instruction
    task's instruction, then a blank line and the input when there is one."""
    if task.conversation:
        return inst.input
    return task.instruction + ("\n\n" + inst.input if inst.input else "")


def as_messages(task: Task, inst: Instance) -> dict[str, Any]:
    turns = [{"role": m.role, "content": m.content} for m in inst.context]
    turns += [{"role": "user", "content": user_text(task, inst)}, {"role": "assistant", "content": inst.outputs[0]}]
    return {"messages": turns, "task_id": task.task_id, "instance_id": inst.id}


def as_alpaca(task: Task, inst: Instance) -> dict[str, Any]:
    row: dict[str, Any] = {"instruction": inst.input if task.conversation else task.instruction,
                           "input": "" if task.conversation else inst.input, "output": inst.outputs[0]}
    context = list(inst.context)
    if context and context[0].role == "system":
        row["system"] = context.pop(0).content
    if context:
        row["history"] = [[u.content, a.content] for u, a in zip(context[::2], context[1::2])]
    return row


def export_selection(tasks: Sequence[Task], task_ids: Sequence[str], cfg: TrainConfig, path: str,
                     fmt: str = "messages", provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the selected tasks' training examples to `path` in `fmt` and the provenance
    beside it (FILE.provenance.json); returns the provenance written."""
    check_export(path, fmt)
    pairs = training_instances(tasks, task_ids, cfg)
    rows = [(as_messages if fmt == "messages" else as_alpaca)(task, inst) for task, inst in pairs]
    facts = {**(provenance or {}), "format": fmt, "file": Path(path).name, "n_tasks": len(dict.fromkeys(task_ids)),
             "n_examples": len(rows), "instances_per_task": cfg.instances_per_task, "train_seed": cfg.seed}
    if fmt == "messages":
        write_jsonl(path, rows)
    else:
        write_json(path, rows)
    write_json(provenance_path(path), facts)
    return facts


def provenance_path(path: str) -> str:
    return f"{path}.provenance.json"
