"""Frozen configs of the experiments (`raysys experiment diversity|novelty|similarity`).

Their defaults are sized for a 2-core CPU machine (each run well under 15 minutes); the
paper-scale settings are in jobs/configs/diversity_*.yaml and novelty_*.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from raysys.config import (
    AlignConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    PromptConfig,
    ScoringConfig,
    SelectConfig,
    SynthConfig,
    TaskMapConfig,
    TinyConfig,
    TrainConfig,
    check,
    check_seeds,
    parse_family,
    share,
)


def _strings() -> SynthConfig:
    """Short symbolic rules over 8 letters: prompts of about 30 characters."""
    return SynthConfig(rules=1, alphabet="abcdefgh", x_len=(2, 3), y_len=(1, 3), z_len=(6, 10),
                       verbosity="symbolic")


@dataclass(frozen=True)
class DiversityConfig:
    """Instruction diversity: one model trained from scratch per cell of a grid over
    (distinct rules, examples per rule), every cell processing the same number of training
    examples (`steps` x `train.batch_size`: cells with fewer distinct examples see each
    more often), scored by exact match on rules none of them saw."""

    work_dir: str = "raysys-diversity"
    rules: tuple[int, ...] = (64, 512, 4096)  # grid rows: distinct training rules (one task each)
    examples_per_rule: tuple[int, ...] = (1, 8)  # grid columns (64 x 8 = 512 x 1, 512 x 8 = 4096 x 1)
    steps: int = 1500  # optimizer steps per cell, the same in every cell
    families: tuple[str, ...] = ("unrestricted",)  # one grid per training family
    skews: tuple[float, ...] = (0.0,)  # one grid per power-law skew of examples over rules
    test_families: tuple[str, ...] = ()  # families of the unseen test rules; () = the training family's
    test_rules: int = 64  # unseen rules, never trained on by any cell (shared by all cells)
    test_examples_per_rule: int = 4
    seen_checked: int = 64  # training rules also checked (one example each): memorisation
    seeds: tuple[int, ...] = (0,)  # each seed draws its own rules, test rules and initial weights
    synth: SynthConfig = field(default_factory=_strings)  # string shapes; rules, counts and families come per cell
    tiny: TinyConfig = field(default_factory=lambda: TinyConfig(hidden_size=96, layers=3, heads=4,
                                                                intermediate_size=288, max_positions=256))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        prompt=PromptConfig("plain", 0), batch_size=64, micro_batch_size=64, workers=1, learning_rate=2e-3,
        warmup_ratio=0.05, lr_schedule="linear", max_target_tokens=32))
    max_new_tokens: int = 24  # answer length cap at test time
    cpus_per_cell: int = 1  # CPUs (torch threads) per cell; cells run side by side on the rest
    gpus_per_cell: float = -1  # -1: one GPU per cell when the cluster has GPUs, else none

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "", "work_dir must not be empty")
        for name in ("rules", "examples_per_rule", "seeds"):
            v = getattr(self, name)
            check(len(v) >= 1 and len(set(v)) == len(v), f"{name} must be a non-empty list without repeats")
        check(min(self.rules) >= 1 and min(self.examples_per_rule) >= 1, "rules and examples_per_rule must be >= 1")
        check(self.steps >= 1, "steps must be >= 1")
        check(len(self.families) >= 1 and len(self.skews) >= 1, "families and skews must not be empty")
        for spec in self.families + self.test_families:
            parse_family(spec)
        check(min(self.skews) >= 0, "skews must be >= 0")
        check(self.test_rules >= 1 and self.test_examples_per_rule >= 1, "test_rules, test_examples_per_rule >= 1")
        check(self.seen_checked >= 0 and self.max_new_tokens >= 1, "seen_checked >= 0, max_new_tokens >= 1")
        check(self.cpus_per_cell >= 1, "cpus_per_cell must be >= 1")
        check(self.train.workers == 1 and self.train.micro_batch_size == self.train.batch_size,
               "a diversity cell trains in one process: train.workers = 1, micro_batch_size = batch_size")


@dataclass(frozen=True)
class NoveltyConfig:
    """The novelty check: score held-out tasks with M0, train M0 on tasks of one group
    (a synthetic rule family or a category of real tasks) into M1, score them again with
    M1, and compare the drop of prompt uncertainty on the group's held-out tasks (related)
    with the drop on other groups' tasks (unrelated). Each seed is one draw of the task
    sets, run on its own; the summary gives mean +- std over the draws."""

    work_dir: str = "raysys-novelty"
    pool: str = ""  # any pool raysys reads; "" = a synthetic pool built from `synth`
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(
        rules=4000, examples_per_rule=4, alphabet="abcdefgh", x_len=(2, 3), y_len=(1, 3), z_len=(6, 10),
        families=("repeated:3", "periodic:2", "mirror:2", "unrestricted"), verbosity="symbolic"))
    group: str = "repeated"  # the group M1 is trained on (see group_by; a rule family for synthetic pools)
    group_by: str = "category"  # category: a task's first category; domain: its first NIV2 domain's top level
    train_tasks: int = 200  # tasks of the group that M1 trains on
    related_tasks: int = 40  # held-out tasks of the group, scored by M0 and M1
    unrelated_tasks: int = 40  # held-out tasks of the other groups, scored by M0 and M1
    base_tasks: int = 3000  # M0 = the model trained on this many other tasks first (any group); 0 = the model as is
    seeds: tuple[int, ...] = (0,)  # one draw of the task sets (and its M0, M1) per seed
    model: ModelConfig = field(default_factory=ModelConfig)  # path "" = the built-in tiny model
    tiny: TinyConfig = field(default_factory=lambda: TinyConfig(hidden_size=96, layers=3, heads=4,
                                                                intermediate_size=288, max_positions=256))
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig("plain", 0))  # scoring, train, base_train
    base_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        instances_per_task=4, epochs=6, learning_rate=2e-3, lr_schedule="linear",
        warmup_ratio=0.05, batch_size=64, micro_batch_size=32, workers=2, zero_stage=2))  # M0 from the model
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        instances_per_task=4, epochs=4, learning_rate=1e-3, batch_size=64,
        micro_batch_size=32, workers=2, zero_stage=2))  # M1 from M0
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(
        instances=4, perturbations=8, generation=GenerationConfig(max_new_tokens=16), entropy=False, ifd=False))
    taskmap: TaskMapConfig = field(default_factory=TaskMapConfig)
    actors: int = 0  # scorer actors (one GPU each); 0 = score in the driver's process (small pools)
    same_answers: bool = True  # also score M0's answers under M1: U before and after on the same answers
    unrelated_pool: str = ""  # draw the unrelated tasks from this pool instead of the other groups
    disjoint: bool = False  # no task trained on in two draws (the group needs seeds x train_tasks tasks)

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "", "work_dir must not be empty")
        check(self.group != "", "group must name a category of the pool (a rule family for synthetic pools)")
        check(self.group_by in ("category", "domain"), "group_by must be category or domain")
        check(min(self.train_tasks, self.related_tasks, self.unrelated_tasks) >= 1,
               "train_tasks, related_tasks and unrelated_tasks must be >= 1")
        check(self.base_tasks >= 0 and self.actors >= 0, "base_tasks and actors must be >= 0")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
               "seeds must be a non-empty list without repeats")
        share(self, "prompt", "scoring", "train", "base_train")


SIMILARITY_STRATEGIES = ("similarity", "similarity-aligned", "random")


@dataclass(frozen=True)
class SimilarityConfig:
    """Instruction similarity (INSTA): per seed, draw `target_tasks` target tasks; each
    strategy selects `budget` pool tasks (`similarity`: cosine similarity of instruction
    embeddings to the targets' instructions with the sentence encoder `select.encoder`;
    `similarity-aligned`: the same with that encoder first aligned to the pool's
    instruction style (`align`, once per run); `random`); the model is fine-tuned from
    base on each selection and evaluated on the targets (never trained on), as is the
    base model. Sized for a 2-core CPU machine by default (the built-in tiny model on a
    synthetic pool); the real-model protocol is jobs/configs/similarity_smollm2.yaml."""

    work_dir: str = "raysys-similarity"
    pool: str = ""  # the tasks to select from (any pool raysys reads); "" = a synthetic pool built from `synth`
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(
        rules=300, examples_per_rule=4, alphabet="abcdefgh", x_len=(2, 3), y_len=(1, 3), z_len=(6, 10),
        families=("repeated:3", "periodic:2", "mirror:2", "unrestricted"), verbosity="terse"))
    targets: str = ""  # the target tasks' pool; "" = targets are drawn from `pool` and leave it
    target_tasks: int = 12  # targets drawn per seed (0 = every task of `targets`)
    budget: int = 24  # pool tasks each strategy selects
    strategies: tuple[str, ...] = SIMILARITY_STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)  # each seed draws its targets (and the random selection) anew
    model: ModelConfig = field(default_factory=ModelConfig)  # path "" = the built-in tiny model
    tiny: TinyConfig = field(default_factory=lambda: TinyConfig(hidden_size=64, layers=2, heads=4,
                                                                intermediate_size=128, max_positions=256))
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig("plain", 0))  # train and evaluation
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=16))
    select: SelectConfig = field(default_factory=SelectConfig)  # encoder, similarity_mode / _reduce (strategy, budget, seed: per run)
    align: AlignConfig = field(default_factory=lambda: AlignConfig(view="examples", examples=1, epochs=1))  # its encoder: select.encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        instances_per_task=4, epochs=2, learning_rate=2e-3, batch_size=32, micro_batch_size=16, workers=2,
        backend="ddp"))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(instances=4, tasks_per_batch=16))
    actors: int = 0  # evaluator actors (one GPU each); 0 = evaluate in the driver's process (small target sets)

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "", "work_dir must not be empty")
        check(len(self.strategies) >= 1 and len(set(self.strategies)) == len(self.strategies)
               and set(self.strategies) <= set(SIMILARITY_STRATEGIES),
               f"strategies must be a non-empty list without repeats of {', '.join(SIMILARITY_STRATEGIES)}")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
               "seeds must be a non-empty list without repeats")
        check(self.target_tasks >= 0 and self.budget >= 1 and self.actors >= 0,
               "target_tasks >= 0, budget >= 1, actors >= 0")
        check(self.align.encoder in ("", self.select.encoder),
               "align.encoder is set apart from select.encoder; set select.encoder (the aligned encoder starts from it)")
        share(self, "prompt", "train", "evaluation")
        share(self, "generation", "evaluation")


# the arms of `raysys experiment strategies`: a selection strategy each, and random twice
# (two independent draws per seed: their difference is the noise floor)
COMPARE_STRATEGIES = ("random", "random-2", "prompt-uncertainty", "prompt-uncertainty-low", "perplexity-high",
                      "ifd", "length", "rds", "similarity")
# arms a comparison may add: similarity and rds aimed at the *test* tasks' prompts (INSTA's
# setting: the targets' instructions known, never their answers), against the same strategies
# aimed at the development tasks (the same kind of task, other targets): per-target matching
# or style?
TARGETED_ARMS = ("similarity-test", "rds-test")


def contrast(text: str) -> tuple[str, str]:
    """("a", "b") of a contrast "a - b" between two arms of a comparison (a minus b)."""
    a, sep, b = text.partition(" - ")
    check(bool(sep and a.strip() and b.strip()),
          f"contrast {text!r}: write it as 'arm - other arm', e.g. 'similarity-test - similarity'")
    return a.strip(), b.strip()


@dataclass(frozen=True)
class StrategiesConfig:
    """Is selecting worth it? Per seed a fresh draw of `candidates` pool tasks, scored once
    by the base model (prompt uncertainty, perplexity, IFD, RDS+ embeddings: one pass);
    each strategy selects from them to the same budget of training tokens (`budget`,
    `budget_unit`); the base model is fine-tuned on each selection and evaluated on the
    held-out *test* tasks by likelihood (NLL per token, label accuracy; Rouge-L on a
    sample). `random` and `random-2` are two independent random draws. `rds` and
    `similarity` aim at the held-out *development* tasks (a `dev_fraction` of the held-out
    tasks, never evaluated on); the arms `rds-test` and `similarity-test` (TARGETED_ARMS)
    aim at the test tasks' prompts instead. Sized for a 2-core CPU machine by default (the built-in
    tiny model on a synthetic pool); the real-model protocol is
    jobs/configs/strategies_smollm2.yaml."""

    work_dir: str = "raysys-strategies"
    pool: str = ""  # the tasks to select from (any pool raysys reads); "" = a synthetic pool built from `synth`
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(
        rules=240, examples_per_rule=4, alphabet="abcdefgh", x_len=(2, 3), y_len=(1, 3), z_len=(6, 10),
        families=("repeated:3", "periodic:2", "mirror:2", "unrestricted"), verbosity="terse"))
    heldout: str = ""  # the held-out tasks' pool; "" = `heldout_tasks` tasks drawn from `pool` leave it
    heldout_tasks: int = 24  # held-out tasks (drawn once, seed 0; 0 = every task of `heldout`)
    dev_fraction: float = 0.5  # of the held-out tasks: the development share (targets of rds / similarity)
    candidates: int = 96  # pool tasks drawn per seed, scored, and selected from (0 = the whole pool)
    budget: int = 6000  # per selection, in budget_unit (about 24 of the default pool's tasks)
    budget_unit: str = "tokens"  # tokens | examples | tasks
    strategies: tuple[str, ...] = COMPARE_STRATEGIES
    seeds: tuple[int, ...] = (0, 1)
    model: ModelConfig = field(default_factory=ModelConfig)  # path "" = the built-in tiny model
    tiny: TinyConfig = field(default_factory=lambda: TinyConfig(hidden_size=64, layers=2, heads=4,
                                                                intermediate_size=128, max_positions=256))
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig("plain", 0))  # score, train and evaluation
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=16))
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(instances=2, perturbations=4,
                                                                         entropy=False, tasks_per_batch=16))
    select: SelectConfig = field(default_factory=SelectConfig)  # encoder, similarity mode (strategy, budget: per arm)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        instances_per_task=2, epochs=2, learning_rate=2e-3, batch_size=16, micro_batch_size=8, workers=2,
        backend="ddp"))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(instances=8, answer_instances=2,
                                                                      tasks_per_batch=16))
    actors: int = 0  # scorer / evaluator actors; 0 = in the driver's process (small pools)
    keep_models: bool = False  # keep each arm's exported model (else removed once evaluated; the run's
    # checkpoints stay in <arm>/model.train: with LoRA, the adapters only)
    contrasts: tuple[str, ...] = ()  # paired differences beside "- random", e.g. "similarity-test - similarity"

    def __post_init__(self) -> None:
        check_seeds(self)
        check(self.work_dir != "", "work_dir must not be empty")
        check(len(self.strategies) >= 1 and len(set(self.strategies)) == len(self.strategies)
              and set(self.strategies) <= set(COMPARE_STRATEGIES + TARGETED_ARMS) and "random" in self.strategies,
              f"strategies must be a list without repeats of {', '.join(COMPARE_STRATEGIES + TARGETED_ARMS)}, "
              "random among them")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
              "seeds must be a non-empty list without repeats")
        check(self.heldout_tasks >= 0 and self.candidates >= 0 and self.budget >= 1 and self.actors >= 0,
              "heldout_tasks, candidates and actors must be >= 0, budget >= 1")
        check(0.0 < self.dev_fraction < 1.0, "dev_fraction must be in (0, 1)")
        for text in self.contrasts:
            check(set(contrast(text)) <= set(self.strategies) and len(set(contrast(text))) == 2,
                  f"contrast {text!r}: both arms must be among the strategies, and differ")
        check(self.heldout or self.heldout_tasks >= 2, "heldout_tasks must be >= 2 when drawn from the pool")
        check(self.evaluation.likelihood, "evaluation.likelihood must be on: NLL is the comparison's metric")
        share(self, "prompt", "scoring", "train", "evaluation")
        share(self, "generation", "scoring", "evaluation")
        SelectConfig(budget=self.budget, budget_unit=self.budget_unit)  # the budget's own checks
        check(self.select.budget_unit in ("tasks", self.budget_unit),
              "select.budget_unit is set apart from budget_unit; set budget_unit once, at the top")
        object.__setattr__(self, "select", replace(self.select, budget_unit=self.budget_unit))
