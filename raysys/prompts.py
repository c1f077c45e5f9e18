"""Prompt templates, pure: a task's definition, demonstrations and an instance input in,
prompt text out.

- "tk": the TK-Instruct (Super-NaturalInstructions) encoding: "Definition: ...", up to
  `demonstrations` positive examples, then "Now complete the following example -" with
  the instance input and "Output: ". Punctuation rule as in TK-Instruct: a "." is added
  after a definition, example input or output that does not end in punctuation.
- "alpaca": the Stanford Alpaca template (with or without an input section); it shows no
  demonstrations.
- "plain": the instruction, then "Input: ..." and "Output: " on lines of their own, with
  no header and no demonstrations: for small models trained from scratch on short
  synthetic prompts (the instruction-diversity experiments).
- "chat": the text of one of those (`body`, TK by default) as the user turn of the
  model's own chat template, with the generation prompt after it (the assistant turn the
  answer goes in); the body's trailing spaces are dropped, since the template itself
  marks where the answer starts. The template comes from the tokenizer as a `ChatFrame`
  (head + user text + tail), read once by `chat_frame`.

A conversation task (raysys.schema) is rendered by the model's chat template whatever the
template setting: its turns (context, then the last user turn) with the generation prompt
after them (`Conversations`, read from the tokenizer with the same checks as the frame).

Every prompt of an instruction task is `prefix + suffix`: the prefix depends only on the
task (definition and demonstrations, shared by all of its instances, and the part
instruction perturbations change), the suffix only on the instance. Scoring relies on that split; a chat prompt
keeps it (the chat header joins the prefix, the end of the user turn the suffix).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Sequence

from raysys.errors import RaysysError
from raysys.schema import Demonstration, Instance, Message, Task, prompt_turns

BODIES = ("tk", "alpaca", "plain")  # text templates (prompt_parts)
TEMPLATES = BODIES + ("chat",)  # chat: a body inside the model's chat template (Template)

ALPACA_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_HEADER_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
)


def _punct(text: str) -> str:
    """TK-Instruct's rule: end with punctuation (add '.' when missing)."""
    return text if text and text[-1] in string.punctuation else text + "."


def tk_prefix(definition: str, demonstrations: Sequence[Demonstration] = (), n_demos: int = 2) -> str:
    out = "Definition: " + _punct(definition.strip()) + "\n\n"
    for idx, demo in enumerate(demonstrations[:n_demos]):
        out += f" Positive Example {idx + 1} -\n"
        out += "Input: " + _punct(demo.input.strip()) + "\n"
        out += " Output: " + _punct(demo.output.strip()) + "\n\n"
    return out


def tk_suffix(instance_input: str) -> str:
    return "Now complete the following example -\nInput: " + _punct(instance_input.strip()) + "\nOutput: "


def alpaca_prefix(instruction: str, has_input: bool) -> str:
    header = ALPACA_HEADER_INPUT if has_input else ALPACA_HEADER_NO_INPUT
    return header + "### Instruction:\n" + instruction + "\n\n"


def alpaca_suffix(instance_input: str) -> str:
    if instance_input:
        return "### Input:\n" + instance_input + "\n\n### Response:"
    return "### Response:"


def prompt_parts(
    template: str,
    definition: str,
    instance_input: str,
    demonstrations: Sequence[Demonstration] = (),
    n_demos: int = 2,
) -> tuple[str, str]:
    """(prefix, suffix) of the prompt for one instance; see the module docstring."""
    if template == "tk":
        return tk_prefix(definition, demonstrations, n_demos), tk_suffix(instance_input)
    if template == "alpaca":
        return alpaca_prefix(definition, bool(instance_input)), alpaca_suffix(instance_input)
    if template == "plain":
        return definition.strip() + "\n", "Input: " + instance_input + "\nOutput: "
    raise ValueError(f"unknown template {template!r}")


def format_prompt(
    template: str,
    definition: str,
    instance_input: str,
    demonstrations: Sequence[Demonstration] = (),
    n_demos: int = 2,
) -> str:
    prefix, suffix = prompt_parts(template, definition, instance_input, demonstrations, n_demos)
    return prefix + suffix


# ---------------------------------------------------------------- chat


@dataclass(frozen=True)
class ChatFrame:
    """A model's chat template around one user turn: a prompt is head + user text + tail
    (tail ends with the generation prompt); `end` is the text that closes the assistant's
    turn (its first token is the tokenizer's eos, where an answer stops)."""

    head: str
    tail: str
    end: str


_USER = "RAYSYS-USER-TURN-4f1c"  # stands for the user text while the template is rendered
_ANSWER = "RAYSYS-ANSWER-9b2e"


def chat_frame(tokenizer: Any, model: str = "the model", need: str = "--template chat") -> ChatFrame:
    """The ChatFrame of a tokenizer's chat template; RaysysError when it has none, when it
    rewrites the user's text (e.g. trims it), or when its end of turn is not the eos token.
    A template that writes the BOS token itself keeps it only when the tokenizer does not
    add one on its own (never two)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RaysysError(f"{model} has no chat template: {need} needs one"
                          + (" (use tk, alpaca or plain)" if need == "--template chat" else ""))

    def render(messages: list[dict], generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    full = render([{"role": "user", "content": _USER}], True)
    if full.count(_USER) != 1:
        raise RaysysError(f"{model}: its chat template does not show the user's text once")
    head, tail = full.split(_USER)
    probe = " Two  words\n "
    if render([{"role": "user", "content": probe}], True) != head + probe + tail:
        raise RaysysError(f"{model}: its chat template changes the user's text (it trims or rewrites it); "
                          f"{need} needs one that keeps it as written")
    bos = getattr(tokenizer, "bos_token", None)
    if bos and head.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        head = head[len(bos):]  # the tokenizer adds its BOS itself
    turn = render([{"role": "user", "content": _USER}, {"role": "assistant", "content": _ANSWER}], False)
    end = turn.split(_ANSWER, 1)[1] if _ANSWER in turn else ""
    first = tokenizer(end, add_special_tokens=False).input_ids[:1]
    if first != [tokenizer.eos_token_id]:
        raise RaysysError(f"{model}: its chat template ends the assistant's turn with {end[:20]!r}, not with the "
                          f"eos token {tokenizer.eos_token!r}; raysys scores and stops answers at eos")
    return ChatFrame(head, tail, end)


class Conversations:
    """A model's chat template over whole conversations (conversation tasks): the turns,
    then the generation prompt. Made by `conversations` after chat_frame's checks (the
    user's text kept as written, the assistant's turn closed by eos); a BOS the template
    writes is left to the tokenizer when it adds its own, as in the frame."""

    def __init__(self, tokenizer: Any, strip_bos: str) -> None:
        self.tokenizer, self.strip_bos = tokenizer, strip_bos

    def prompt(self, turns: Sequence[Message]) -> str:
        text = self.tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in turns],
                                                  tokenize=False, add_generation_prompt=True)
        return text[len(self.strip_bos):] if self.strip_bos and text.startswith(self.strip_bos) else text


def conversations(tokenizer: Any, model: str = "the model", frame: ChatFrame | None = None) -> Conversations:
    """The Conversations of a tokenizer (`frame`: its chat_frame, when read already);
    RaysysError (chat_frame's) when its chat template is missing or unusable."""
    frame = frame or chat_frame(tokenizer, model, "a conversation pool")
    full = tokenizer.apply_chat_template([{"role": "user", "content": _USER}], tokenize=False,
                                         add_generation_prompt=True)
    return Conversations(tokenizer, full[: len(full) - len(frame.head + _USER + frame.tail)])


@dataclass(frozen=True)
class Template:
    """A prompt template resolved for one model: a text template by name, or "chat": the
    `body` template inside the model's chat frame; `chat` renders conversation tasks (None
    when the model's tokenizer was not read, or has no chat template)."""

    name: str = "tk"
    body: str = "tk"  # chat: the text template of the user turn
    frame: ChatFrame | None = None  # chat: the model's (chat_frame)
    chat: Conversations | None = field(default=None, compare=False)

    def parts(self, definition: str, instance_input: str, demonstrations: Sequence[Demonstration] = (),
              n_demos: int = 2) -> tuple[str, str]:
        if self.name != "chat":
            return prompt_parts(self.name, definition, instance_input, demonstrations, n_demos)
        if self.frame is None:
            raise ValueError("the chat template needs the model's ChatFrame (chat_frame)")
        prefix, suffix = prompt_parts(self.body, definition, instance_input, demonstrations, n_demos)
        return self.frame.head + prefix, suffix.rstrip() + self.frame.tail

    def text(self, definition: str, instance_input: str, demonstrations: Sequence[Demonstration] = (),
             n_demos: int = 2) -> str:
        prefix, suffix = self.parts(definition, instance_input, demonstrations, n_demos)
        return prefix + suffix

    def conversation(self, turns: Sequence[Message]) -> str:
        """The prompt of conversation turns (ending with a user turn) by the chat template."""
        if self.chat is None:
            raise ValueError("a conversation needs the model's chat template (template_for with its tokenizer)")
        return self.chat.prompt(turns)

    def prompt(self, task: Task, inst: Instance, n_demos: int = 2) -> str:
        """The unperturbed prompt of one instance of `task`, conversation or not."""
        if task.conversation:
            return self.conversation(prompt_turns(inst))
        return self.text(task.instruction, inst.input, task.demonstrations, n_demos)


def template_for(name: str, body: str = "tk", tokenizer: Any = None, model: str = "the model",
                 conversation: bool = False) -> Template:
    """The Template of a prompt setting (PromptConfig's template and chat_body) for a model:
    chat reads the frame from its tokenizer; the text templates need none. With a
    tokenizer that has a chat template, conversation tasks can be rendered too;
    `conversation`: they must be (RaysysError when the model has no usable chat template)."""
    if name == "chat" or conversation:
        if tokenizer is None:
            raise ValueError("the chat template needs the model's tokenizer")
        frame = chat_frame(tokenizer, model, "--template chat" if name == "chat" else "a conversation pool")
        return Template(name, body, frame if name == "chat" else None, conversations(tokenizer, model, frame))
    try:  # conversation tasks are rendered when the model can; an instruction pool never needs it
        chat = conversations(tokenizer, model) if getattr(tokenizer, "chat_template", None) else None
    except RaysysError:
        chat = None
    return Template(name, chat=chat)


@dataclass(frozen=True)
class FittedPrompt:
    """An instance's original prompt fitted to a model's length (ModelRunner.fit_prompt):
    the most demonstrations whose prompt fits, as TK-Instruct does for long prompts."""

    n_demos: int  # demonstrations shown; its perturbed prompts show as many
    text: str
    ids: tuple[int, ...]  # its token ids, untruncated
    truncated: bool  # too long even without demonstrations: the model sees its last tokens
