"""Frozen, validated configuration dataclasses, one per stage (the YAML and override
machinery that builds them is raysys.config.mapping; the experiments' configs are
raysys.config.experiments).

A config file is YAML whose top-level keys are the fields of a stage's dataclass
(nested dataclasses are nested mappings). `key=value` overrides on the command line use
dotted paths (`synth.rules=500`); values are parsed as YAML (`families=[repeated:2]`).
Unknown keys and ill-typed values raise ConfigError naming the file and the key.
Configs are never mutated; `dataclasses.replace` makes a changed copy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysys.errors import ConfigError
from raysys.perturb import KINDS as PERTURBATIONS
from raysys.prompts import BODIES, TEMPLATES

FAMILIES = ("unrestricted", "repeated", "periodic", "mirror")
VERBOSITIES = ("terse", "verbose", "symbolic")
ARCHS = ("llama", "t5")


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def check_seeds(cfg) -> None:
    """Seeds are >= 0 (numpy's generators refuse negative ones): `seed` and every one of `seeds`."""
    seeds = [getattr(cfg, "seed", 0), *getattr(cfg, "seeds", ())]
    check(all(isinstance(x, int) and x >= 0 for x in seeds), f"seeds must be integers >= 0, got {seeds}")


def share(cfg, name: str, *parts: str) -> None:
    """Set the nested config `name` of each of `cfg`'s sub-configs `parts` to `cfg.name`
    (called from a frozen config's __post_init__): a setting several stages share is given
    once, at the top. A part that sets it to something else than its default is refused."""
    value = getattr(cfg, name)
    for part in parts:
        sub = getattr(cfg, part)
        own = getattr(sub, name)
        check(own in (value, type(own)()),
               f"{part}.{name} is set apart from {name}; set {name} once, at the top (it is shared by "
               f"{', '.join(parts)})")
        object.__setattr__(cfg, part, dataclasses.replace(sub, **{name: value}))


def _range(name: str, r: tuple[int, int], low: int) -> None:
    check(len(r) == 2 and low <= r[0] <= r[1], f"{name} must be [min, max] with {low} <= min <= max, got {list(r)}")


def parse_family(spec: str) -> tuple[str, int]:
    """'repeated:3' -> ('repeated', 3); 'unrestricted' -> ('unrestricted', 0)."""
    name, _, k = spec.partition(":")
    check(name in FAMILIES, f"unknown rule family {name!r}; one of {', '.join(FAMILIES)}")
    if name == "unrestricted":
        check(k == "", "the unrestricted family takes no parameter k")
        return name, 0
    check(k.isdigit() and int(k) >= 1, f"family {name!r} needs a parameter k >= 1, e.g. '{name}:2'")
    return name, int(k)


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic string-rewriting pool (raysys.pools.markov): one task per rule x -> y."""

    rules: int = 1000  # distinct rules seen in training (one task each)
    examples_per_rule: int = 4  # mean instances per rule (the total is rules * this)
    seed: int = 0
    alphabet: str = "abcdefghij"
    x_len: tuple[int, int] = (2, 4)  # length of x for the unrestricted family
    y_len: tuple[int, int] = (1, 4)
    z_len: tuple[int, int] = (8, 16)  # length of the input string z (at least len(x))
    families: tuple[str, ...] = ("unrestricted",)  # 'name' or 'name:k', assigned round-robin
    skew: float = 0.0  # power-law exponent of examples over rules (0 = uniform)
    noop_share: float = 0.1  # share of instances whose z does not contain x
    unseen_rules: int = 0  # held-out rules, never among the seen ones
    unseen_examples_per_rule: int = 4
    unseen_families: tuple[str, ...] = ()  # default: the same as families
    verbosity: str = "terse"  # terse: 10-20 words; verbose: 30-60 words with redundancy; symbolic: "x -> y"
    demonstrations: int = 0  # worked examples per task (not among its instances)

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.rules >= 0 and self.rules + self.unseen_rules >= 1,
               "rules must be >= 0, and rules + unseen_rules >= 1")
        check(self.examples_per_rule >= 1, "examples_per_rule must be >= 1")
        check(len(set(self.alphabet)) >= 2 and len(set(self.alphabet)) == len(self.alphabet),
               "alphabet needs at least 2 distinct characters, without repeats")
        check(not any(c.isspace() or c == '"' for c in self.alphabet), "alphabet must not contain spaces or quotes")
        _range("x_len", self.x_len, 1)
        _range("y_len", self.y_len, 1)
        _range("z_len", self.z_len, 1)
        check(len(self.families) >= 1, "families must name at least one family")
        for spec in self.families + self.unseen_families:
            parse_family(spec)
        check(self.skew >= 0, "skew must be >= 0")
        check(0.0 <= self.noop_share <= 1.0, "noop_share must be in [0, 1]")
        check(self.unseen_rules >= 0, "unseen_rules must be >= 0")
        check(self.unseen_examples_per_rule >= 1, "unseen_examples_per_rule must be >= 1")
        check(self.verbosity in VERBOSITIES, f"verbosity must be one of {VERBOSITIES}")
        check(self.demonstrations >= 0, "demonstrations must be >= 0")


@dataclass(frozen=True)
class PromptConfig:
    """An instance's prompt (raysys.prompts), the same for scoring, evaluation and training (set once by a loop)."""

    template: str = "tk"  # tk: TK-Instruct (definition + demonstrations); alpaca; plain; chat
    demonstrations: int = 2  # positive examples shown (TK-Instruct uses 2)
    chat_body: str = "tk"  # template chat: the text template written in the chat's user turn

    def __post_init__(self) -> None:
        check(self.template in TEMPLATES, f"template must be one of {TEMPLATES}")
        check(self.chat_body in BODIES, f"chat_body must be one of {BODIES}")
        check(self.demonstrations >= 0, "demonstrations must be >= 0")


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy answers (scoring's own answers, evaluation's predictions)."""

    max_new_tokens: int = 128  # answer length cap
    max_prompt_tokens: int = 0  # longer prompts keep their last tokens; 0 = model limit - max_new_tokens
    batch: int = 32  # prompts per generation batch

    def __post_init__(self) -> None:
        check(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        check(self.max_prompt_tokens >= 0, "max_prompt_tokens must be >= 0")
        check(self.batch >= 1, "batch must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Where the model comes from (raysys.models)."""

    # a folder (or a hub name where the cluster has access); an import source (smollm2-135m-instruct,
    # a .gguf: imported into the model cache once, raysys.models.gguf.model_folder); "" = built-in tiny
    path: str = ""
    trust_remote_code: bool = False  # never on unless the user turns it on
    dtype: str = "float32"  # float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype must be float32, bfloat16 or float16")


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the built-in tiny model (about 0.9M parameters by default)."""

    arch: str = "llama"  # llama (causal) | t5 (seq2seq)
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        check(min(self.hidden_size, self.layers, self.heads, self.intermediate_size, self.max_positions) >= 1,
               "tiny model sizes must be positive")
        check(self.hidden_size % self.heads == 0, "hidden_size must be a multiple of heads")


WEIGHT_DTYPES = ("auto", "float32", "bfloat16")  # auto: bfloat16 on a GPU, float32 on a CPU


@dataclass(frozen=True)
class ScoringConfig:
    """Prompt-uncertainty scoring (raysys.scoring). Defaults follow the method."""

    instances: int = 10  # n instances sampled per task (all of them when a task has fewer)
    perturbations: int = 20  # k perturbed instructions per task, shared by its instances
    drop_rate: float = 0.2  # probability that a word is perturbed
    perturbation: str = "dropout"  # dropout | mask | repeat | extraneous
    perturb_demonstrations: bool = False  # also perturb demonstration inputs (never outputs)
    perturb_system: bool = False  # conversations: also perturb the system turn (the last user turn always)
    mask_token: str = "<mask>"
    seed: int = 0  # instance sampling and perturbations derive from (seed, task_id, j)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the model's own answers
    entropy: bool = True  # classification entropy over the task's label set
    max_labels: int = 10  # label sets larger than this are not scored for entropy
    ifd: bool = True  # IFD = PPL(y | prompt) / PPL(y alone)
    token_budget: int = 8192  # padded tokens per forward pass
    tasks_per_batch: int = 16  # tasks handed to a scorer actor at a time
    racing: int = 0  # B > 0: find the B most prompt-uncertain tasks by racing perturbations (raysys.scoring.race_rule)
    racing_first: int = 3  # perturbations every task gets in racing's first round
    racing_delta: float = 0.05  # racing: 1 - the confidence of each bound on a task's U
    racing_rule: str = "t"  # racing's bounds: t (each task alone) | moderated (variances shrunk toward the pool's)
    answers_from: str = ""  # a scores file: score its answers instead of this model's own (raysys.scoring.answers)
    dtype: str = "auto"  # the weights' dtype: auto (bfloat16 on a GPU, float32 on a CPU) | float32 | bfloat16
    forward_dtype: str = ""  # the likelihood forwards' weights if not dtype's: float32 answers, bfloat16 forwards
    decode_p0: bool = True  # p_i0 from the greedy decode's own logits (no second forward) where its tokens match

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.dtype in WEIGHT_DTYPES, f"dtype must be one of {WEIGHT_DTYPES}")
        check(self.forward_dtype in ("", "float32", "bfloat16"), "forward_dtype must be '', float32 or bfloat16")
        check(self.instances >= 1, "instances must be >= 1")
        check(self.racing >= 0, "racing must be >= 0 (0 = off)")
        check(not self.racing or self.perturbations >= 2, "racing needs perturbations >= 2")
        check(self.racing_first >= 2, "racing_first must be >= 2")
        check(0.0 < self.racing_delta < 1.0, "racing_delta must be in (0, 1)")
        check(self.racing_rule in ("t", "moderated"), "racing_rule must be t or moderated")
        check(not (self.racing and self.answers_from), "racing decodes its own answers: answers_from must be empty")
        check(self.perturbations >= 0, "perturbations must be >= 0")
        check(0.0 <= self.drop_rate <= 1.0, "drop_rate must be in [0, 1]")
        check(self.perturbation in PERTURBATIONS, f"perturbation must be one of {PERTURBATIONS}")
        check(self.max_labels >= 2, "max_labels must be >= 2")
        check(min(self.token_budget, self.tasks_per_batch) >= 1, "batch sizes must be >= 1")


SIMILARITY_MODES = ("overall", "per-target")
SIMILARITY_REDUCE = ("max", "mean")
ALIGN_VIEWS = ("examples", "demonstrations", "perturbed")


@dataclass(frozen=True)
class TaskMapConfig:
    """Task Map categories (raysys.selection.taskmap): a rank rule with configurable shares."""

    ambiguous_share: float = 1 / 3  # the most prompt-uncertain share of tasks is Ambiguous
    easy_share: float = 0.5  # of the rest, this share with the highest prediction probability is Easy

    def __post_init__(self) -> None:
        check(0.0 <= self.ambiguous_share <= 1.0, "ambiguous_share must be in [0, 1]")
        check(0.0 <= self.easy_share <= 1.0, "easy_share must be in [0, 1]")


BUDGET_UNITS = ("tasks", "examples", "tokens")


@dataclass(frozen=True)
class SelectConfig:
    """Task selection (raysys.selection): one strategy, a budget, optional stratification."""

    strategy: str = "prompt-uncertainty"  # a name of raysys.selection.strategies.STRATEGIES
    budget: int = 68  # tasks selected this round, or training examples or tokens (budget_unit)
    budget_unit: str = "tasks"  # tasks | examples | tokens (the selected tasks' training examples / tokens)
    seed: int = 0  # random strategy and tie-breaking
    cls_ratio: float | None = None  # classification share of the budget (the method: 24/68 = 0.353)
    length_strata: bool = False  # stratify by mean reference answer length (words) in bins
    length_bin: int = 10  # width of an answer-length stratum, in words
    taskmap: TaskMapConfig = field(default_factory=TaskMapConfig)  # the ambiguous / easy / difficult strategies
    diversity_threshold: float = 0.9  # uncertainty-diverse: skip a task this similar to one taken
    candidate_factor: int = 3  # uncertainty-kcenter: k-center over the budget x this most uncertain
    encoder: str = ""  # sentence encoder folder for similarity strategies; "" = bundled all-MiniLM-L6-v2
    similarity_mode: str = "overall"  # overall: best pool tasks overall; per-target: top tasks per target in turn
    similarity_reduce: str = "max"  # overall score of a pool task: max or mean similarity over targets

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.budget >= 1, "budget must be >= 1")
        check(self.budget_unit in BUDGET_UNITS, f"budget_unit must be one of {BUDGET_UNITS}")
        check(self.budget_unit == "tasks" or (self.cls_ratio is None and not self.length_strata),
              "cls_ratio and length_strata split a budget of tasks: use budget_unit tasks with them")
        check(self.cls_ratio is None or 0.0 <= self.cls_ratio <= 1.0, "cls_ratio must be in [0, 1]")
        check(self.length_bin >= 1 and self.candidate_factor >= 1, "length_bin and candidate_factor must be >= 1")
        check(-1.0 <= self.diversity_threshold <= 1.0, "diversity_threshold must be in [-1, 1]")
        check(self.similarity_mode in SIMILARITY_MODES, f"similarity_mode must be one of {SIMILARITY_MODES}")
        check(self.similarity_reduce in SIMILARITY_REDUCE, f"similarity_reduce must be one of {SIMILARITY_REDUCE}")


@dataclass(frozen=True)
class AlignConfig:
    """Contrastive alignment of the sentence encoder to a pool's instruction style."""

    encoder: str = ""  # starting encoder folder; "" = bundled all-MiniLM-L6-v2
    view: str = "examples"  # positive of a definition: examples (k input/output pairs), demonstrations, perturbed
    examples: int = 2  # instances shown in an 'examples' view
    heldout_fraction: float = 0.33  # tasks kept out of training to measure same-task retrieval
    queries_per_task: int = 3  # retrieval queries per held-out task
    epochs: int = 2
    batch_size: int = 16  # in-batch negatives
    learning_rate: float = 2e-5
    temperature: float = 0.05  # contrastive softmax temperature (scale 20)
    max_seq_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.view in ALIGN_VIEWS, f"view must be one of {ALIGN_VIEWS}")
        check(0.0 < self.heldout_fraction < 1.0, "heldout_fraction must be in (0, 1)")
        check(min(self.examples, self.queries_per_task, self.epochs, self.max_seq_length) >= 1,
               "examples, queries_per_task, epochs and max_seq_length must be >= 1")
        check(self.batch_size >= 2, "batch_size must be >= 2 (in-batch negatives)")
        check(self.learning_rate > 0 and self.temperature > 0, "learning_rate and temperature must be > 0")


BACKENDS = ("deepspeed", "ddp")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning on Ray Train (raysys.training). Defaults: the tiny CPU setting."""

    prompt: PromptConfig = field(default_factory=PromptConfig)  # how the training examples are written
    instances_per_task: int = 200  # up to this many instances per selected task (the method: 200)
    max_source_tokens: int = 1024  # longer prompts keep their last tokens
    max_target_tokens: int = 128  # longer targets keep their first tokens
    epochs: int = 2
    learning_rate: float = 5e-5
    lr_schedule: str = "constant"  # constant | linear (decay to 0 after warmup)
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128  # examples per optimizer step over all workers (via accumulation)
    micro_batch_size: int = 8  # examples per worker per forward pass
    length_grouping: int = 1  # micro batches whose rows a worker sorts by length (less padding); 1: as read
    workers: int = 2  # Ray Train workers (one GPU each on GPU clusters)
    backend: str = "deepspeed"  # deepspeed | ddp
    zero_stage: int = 2  # DeepSpeed ZeRO stage 0-3
    offload_optimizer: bool = False  # ZeRO optimizer states in CPU memory
    offload_params: bool = False  # ZeRO-3 parameters in CPU memory
    bf16: bool = True  # bf16 mixed precision on GPU (CPU runs: see cpu_bf16)
    cpu_bf16: bool = False  # CPU runs: bf16 autocast (weights, gradients, optimizer states stay float32)
    gradient_checkpointing: bool = False
    lora: bool = False  # train LoRA adapters (peft) instead of all weights
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # module names ("q", "v" for T5)
    lora_export: str = "merged"  # merged: an ordinary model folder; adapter: the peft adapter only
    best_by: str = "last"  # last epoch, or "validation": the epoch with the lowest validation loss
    num_to_keep: int = 2  # checkpoints kept in storage
    max_failures: int = 0  # worker-group restarts Ray Train may attempt
    seed: int = 0

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.instances_per_task >= 1, "instances_per_task must be >= 1")
        check(min(self.max_source_tokens, self.max_target_tokens, self.epochs) >= 1,
               "max_source_tokens, max_target_tokens and epochs must be >= 1")
        check(self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate > 0 and weight_decay >= 0")
        check(self.lr_schedule in ("constant", "linear"), "lr_schedule must be constant or linear")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)")
        check(min(self.micro_batch_size, self.workers, self.length_grouping) >= 1,
               "micro_batch_size, workers and length_grouping must be >= 1")
        check(self.batch_size >= 1 and self.batch_size % (self.micro_batch_size * self.workers) == 0,
               f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size x workers "
               f"({self.micro_batch_size} x {self.workers})")
        check(self.backend in BACKENDS, f"backend must be one of {BACKENDS}")
        check(self.zero_stage in (0, 1, 2, 3), "zero_stage must be 0, 1, 2 or 3")
        check(not self.offload_params or self.zero_stage == 3, "offload_params needs zero_stage 3")
        check(not self.offload_optimizer or self.zero_stage >= 1, "offload_optimizer needs zero_stage >= 1")
        check(self.lora_r >= 1 and self.lora_alpha >= 1 and 0 <= self.lora_dropout < 1, "bad LoRA settings")
        check(self.lora_export in ("merged", "adapter"), "lora_export must be merged or adapter")
        check(self.best_by in ("last", "validation"), "best_by must be last or validation")
        check(self.num_to_keep >= 1 and self.max_failures >= -1, "num_to_keep >= 1, max_failures >= -1")

    @property
    def accumulation(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.workers)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on held-out tasks (raysys.evaluation): per instance the likelihood of its
    reference answer (NLL per token; for classification tasks, the most likely label's
    accuracy) and, on the first `answer_instances` of them, greedy answers (Rouge-L, exact
    match)."""

    instances: int = 100  # instances per task (all of them when fewer; NIV2's test split has 100)
    answer_instances: int = 100  # of those, how many get a greedy answer (Rouge-L, exact match); 0 = none
    likelihood: bool = True  # NLL of the reference and label accuracy (a forward pass each, no decode)
    max_labels: int = 10  # classification tasks with 2..max_labels distinct answers get label accuracy
    seed: int = 0  # instance sampling
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tasks_per_batch: int = 16  # tasks handed to an evaluator actor at a time
    dtype: str = "auto"  # the weights' dtype: auto (bfloat16 on a GPU, float32 on a CPU) | float32 | bfloat16

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.dtype in WEIGHT_DTYPES, f"dtype must be one of {WEIGHT_DTYPES}")
        check(self.instances >= 1, "instances must be >= 1")
        check(self.answer_instances >= 0, "answer_instances must be >= 0")
        check(self.max_labels >= 2, "max_labels must be >= 2")
        check(self.likelihood or self.answer_instances > 0,
              "nothing to evaluate: likelihood is off and answer_instances is 0")
        check(self.tasks_per_batch >= 1, "tasks_per_batch must be >= 1")


TRAIN_FROM = ("base", "previous")


@dataclass(frozen=True)
class LoopConfig:
    """The active loop: one Ray Tune trial per (strategy, seed); each round scores the
    remaining pool with the current model, selects, trains, and evaluates. The defaults
    are the README demo's (a synthetic pool and the built-in tiny model); the method's
    settings are in jobs/configs/loop_niv2.yaml and loop_alpaca.yaml."""

    work_dir: str = "raysys-loop"  # shared storage: models, scores, selections, Tune state, results
    pool: str = ""  # the task pool (any format raysys reads); "" = a synthetic pool built from `synth`
    synth: SynthConfig = field(
        default_factory=lambda: SynthConfig(rules=2000, examples_per_rule=4, unseen_rules=200, seed=0))
    pool_splits: tuple[str, ...] = ()  # only the pool's tasks of these splits are trainable; () = all
    test_pool: str = ""  # held-out test tasks' pool; "" = the pool itself
    test_splits: tuple[str, ...] = ("test", "unseen")  # test tasks: those of the test pool in these splits; () = all
    test_tasks: int = 40  # at most this many test tasks (the first ones); 0 = all
    model: ModelConfig = field(default_factory=ModelConfig)  # path "" = the built-in tiny model
    tiny: TinyConfig = field(default_factory=TinyConfig)
    strategies: tuple[str, ...] = ("prompt-uncertainty", "random")  # one trial per strategy x seed
    seeds: tuple[int, ...] = (0, 1)  # each seed draws its own initial and validation tasks
    schedule: tuple[int, ...] = (40, 80, 120)  # training tasks after each round; round 0 is random
    validation_tasks: int = 20  # drawn per seed from the pool, never selected
    candidates: int = 200  # score a random sample of this many remaining tasks per round; 0 = all of them
    train_from: str = "base"  # base: train the base model on all tasks so far; previous: continue on the new ones
    score_selected: bool = True  # also score what score-free strategies (random) select, for the results
    targets: str = ""  # target tasks of the similarity (a pool or a .txt) and rds (a pool) strategies
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(demonstrations=0))  # scoring, train, eval
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=20))  # score, eval
    select: SelectConfig = field(default_factory=SelectConfig)  # strategy, budget, seed are set per round
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(
        instances=1, perturbations=4, tasks_per_batch=64, entropy=False, ifd=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=2, batch_size=16, micro_batch_size=8, workers=2, instances_per_task=2, max_source_tokens=512,
        max_target_tokens=64, learning_rate=1e-3, backend="deepspeed", zero_stage=2))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(instances=2, tasks_per_batch=32))
    actors: int = 0  # scorer / evaluator actors per trial (one GPU each); 0 = in the trial's process (small pools)
    max_concurrent_trials: int = 0  # 0 = as many as the cluster can host (GPUs, else CPUs)
    max_failures: int = 0  # times Tune restarts a failed trial from its last finished round

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "", "work_dir must not be empty")
        check(len(self.strategies) >= 1 and len(set(self.strategies)) == len(self.strategies),
               "strategies must be a non-empty list without repeats")  # names, targets: raysys.selection.strategies.check_strategies (the driver)
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
               "seeds must be a non-empty list without repeats")
        check(len(self.schedule) >= 1 and self.schedule[0] >= 1
               and all(b > a for a, b in zip(self.schedule, self.schedule[1:])),
               f"schedule must be increasing training-set sizes >= 1, got {list(self.schedule)}")
        check(self.validation_tasks >= 0 and self.test_tasks >= 0 and self.candidates >= 0,
               "validation_tasks, test_tasks and candidates must be >= 0")
        check(self.train_from in TRAIN_FROM, f"train_from must be one of {TRAIN_FROM}")
        check(self.actors >= 0 and self.max_concurrent_trials >= 0 and self.max_failures >= -1,
               "actors >= 0, max_concurrent_trials >= 0, max_failures >= -1")
        share(self, "prompt", "scoring", "train", "evaluation")
        share(self, "generation", "scoring", "evaluation")

    @property
    def rounds(self) -> int:
        return len(self.schedule)


@dataclass(frozen=True)
class DemoConfig:
    """The README's demo (raysys.experiments.demo): a real pretrained model on real tasks, one round of
    selection. Import the model (cached), build a pool and a held-out set from the real
    data, score a random sample of the pool (prompt uncertainty), draw its Task Map, select
    `budget` tasks with each strategy, fine-tune the model on each selection (LoRA, Ray
    Train) and evaluate the held-out tasks with the base model and each fine-tuned one.
    The tiny-model active loop is jobs/configs/loop_demo_tiny.yaml (`raysys loop`)."""

    work_dir: str = "raysys-demo"
    model: str = "smollm2-135m-instruct"  # a `raysys model import` source (a name or a .gguf), or a model folder
    model_cache: str = ""  # where imports are kept; "" = $XDG_CACHE_HOME/raysys/models (~/.cache/raysys/models)
    data_dir: str = ""  # the real tasks; "" = ../shared/data beside the raysys checkout
    pool: tuple[str, ...] = ("niv2", "self_instruct/seed_tasks.jsonl")  # under data_dir; test-split tasks are held out
    heldout: tuple[str, ...] = ("self_instruct/user_oriented_instructions.jsonl",)  # held-out sources, under data_dir
    heldout_per_source: int = 12  # the first tasks of each held-out source
    heldout_from_pool: int = 8  # tasks of the first pool source drawn at random (seed) and held out too
    candidates: int = 40  # pool tasks scored: a random sample (seed); 0 = the whole pool
    budget: int = 4000  # what each strategy selects, in budget_unit (4,000 tokens: about 12 of the pool's tasks)
    budget_unit: str = "tokens"  # tokens | examples | tasks: every strategy trains on as much
    # `random-2`: a second, independent random draw; its difference with random is the noise floor
    strategies: tuple[str, ...] = ("prompt-uncertainty", "random", "random-2")
    seed: int = 0
    show_prompts: int = 1  # scored prompts printed before scoring
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig("chat", 0, "tk"))  # score, train, eval
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=32))  # score, eval
    taskmap: TaskMapConfig = field(default_factory=TaskMapConfig)
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(
        instances=1, perturbations=4, entropy=False, ifd=False, tasks_per_batch=8))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=2, batch_size=8, micro_batch_size=4, workers=2, instances_per_task=8, max_source_tokens=512,
        max_target_tokens=64, learning_rate=1e-3, lr_schedule="constant", backend="ddp", cpu_bf16=True, lora=True,
        lora_r=8, lora_alpha=16, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"), length_grouping=4))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(instances=2, tasks_per_batch=8))

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "" and self.model != "", "work_dir and model must not be empty")
        check(len(self.pool) >= 1, "pool must name at least one source")
        check(min(self.heldout_per_source, self.heldout_from_pool, self.candidates, self.show_prompts) >= 0,
               "heldout_per_source, heldout_from_pool, candidates and show_prompts must be >= 0")
        check(self.budget >= 1 and (self.budget_unit != "tasks" or self.candidates == 0
                                    or self.budget <= self.candidates),
               "budget must be >= 1 (and, in tasks, at most candidates)")
        check(self.budget_unit in BUDGET_UNITS, f"budget_unit must be one of {BUDGET_UNITS}")
        check(len(self.strategies) >= 1 and len(set(self.strategies)) == len(self.strategies),
               "strategies must be a non-empty list without repeats")  # names, targets: raysys.selection.strategies
        share(self, "prompt", "scoring", "train", "evaluation")
        share(self, "generation", "scoring", "evaluation")
