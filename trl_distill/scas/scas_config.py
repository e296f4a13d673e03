import math
from dataclasses import dataclass, field

from trl import SFTConfig

from .scoring import Q_NLL_SCOPES, SCORE_KEYS
from .selection import STRATEGIES


@dataclass
class SCASConfig(SFTConfig):
    r"""
    Configuration class for the [`SCASTrainer`] (Student-Centric Answer Selection).

    Every field of [`~trl.SFTConfig`] applies unchanged; the fields below control how the trained answer of each
    prompt is chosen from a candidate pool. With a plain SFT dataset (one answer per prompt) they are unused and the
    trainer trains exactly as [`~trl.SFTTrainer`].

    Parameters:
        > Parameters that control the learning cost

        lmbda (`float`, *optional*, defaults to `0.5`):
            λ of the learning cost `S = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ`: the weight of the answer–question term.
        feature_module (`str`, *optional*):
            Module name of the feature layer (from `model.named_modules()`, exact or dotted suffix). When unset, the
            last decoder layer's MLP up-projection is found automatically (Llama, Qwen2, Mistral and similar).
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass when scoring the pool.
        q_nll_scope (`str`, *optional*, defaults to `"prompt_with_gen"`):
            The prompt positions of `d_Q`: with the assistant header (`"prompt_with_gen"`) or without it
            (`"prompt_no_gen"`), as the released scorer's option of the same name.

        > Parameters that control the selection

        selection_strategy (`str`, *optional*, defaults to `"scas"`):
            `"scas"` (lowest learning cost group), or a baseline: `"best_teacher"` (the most accurate teacher's answer
            for every prompt), `"random"` (a random correct answer), `"min_nll"` (lowest answer NLL `d_A`).
        selection_score_key (`str`, *optional*, defaults to `"learning_cost"`):
            The score the `"scas"` strategy ranks by: `"learning_cost"` (`S`), or one of the released scorer's
            ablation scores `"scas_score_no_diag"`, `"nll_weight_score"`, `"similarity_score"`,
            `"similarity_score_no_diag"`, `"answer_mean_nll_score"` (see docs/scas.md).
        selection_group (`int`, *optional*, defaults to `1`):
            SCAS rank group to draw the answer from (1 = lowest learning cost); other groups are for ablations.
        num_groups (`int`, *optional*, defaults to `5`):
            `G`, the number of rank groups `g(r) = min(G, max(1, ceil(r·G/n)))`.
        only_correct (`bool`, *optional*, defaults to `True`):
            Only verified-correct candidates (`correct` column) compete.
        correct_threshold (`float`, *optional*, defaults to `1.0`):
            With `reward_funcs` given to [`SCASTrainer`], a candidate is correct when its summed reward is at or above
            this value (binary verifiers give 1.0 for a right answer).
        strict (`bool`, *optional*, defaults to `False`):
            Raise an error, before training, on prompts without an eligible candidate instead of skipping them with a
            warning.
        rescore_every (`int`, *optional*, defaults to `1`):
            Re-score the pool with the current student and re-select every this many epochs; `0` scores and selects
            once, before training (as the released code does).
        selection_seed (`int`, *optional*):
            Seed of the per-prompt draws inside a rank group. Defaults to `seed`.
    """

    lmbda: float = field(
        default=0.5,
        metadata={"help": "λ of the learning cost S = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ."},
    )
    feature_module: str | None = field(
        default=None,
        metadata={"help": "Module name of the feature layer; the last decoder layer's MLP up-projection if unset."},
    )
    scoring_batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass when scoring."})
    q_nll_scope: str = field(
        default="prompt_with_gen",
        metadata={"help": "d_Q over the prompt with or without the assistant header.", "choices": list(Q_NLL_SCOPES)},
    )
    selection_strategy: str = field(
        default="scas",
        metadata={"help": "`scas`, or a baseline: `best_teacher`, `random`, `min_nll`.", "choices": list(STRATEGIES)},
    )
    selection_score_key: str = field(
        default="learning_cost",
        metadata={"help": "Score the `scas` strategy ranks by.", "choices": list(SCORE_KEYS)},
    )
    selection_group: int = field(default=1, metadata={"help": "SCAS rank group to draw from (1 = lowest cost)."})
    num_groups: int = field(default=5, metadata={"help": "Number of rank groups G."})
    only_correct: bool = field(default=True, metadata={"help": "Only verified-correct candidates compete."})
    correct_threshold: float = field(
        default=1.0, metadata={"help": "With reward_funcs: the summed reward at which a candidate is correct."}
    )
    strict: bool = field(default=False, metadata={"help": "Error on prompts without an eligible candidate."})
    rescore_every: int = field(
        default=1, metadata={"help": "Re-score and re-select every this many epochs; 0 = once, before training."}
    )
    selection_seed: int | None = field(default=None, metadata={"help": "Seed of the draws; defaults to `seed`."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda must lie in [0, 1] (the weight of the answer–question term), got {self.lmbda}.")
        if self.scoring_batch_size < 1:
            raise ValueError(f"scoring_batch_size must be >= 1, got {self.scoring_batch_size}.")
        if self.selection_strategy not in STRATEGIES:
            raise ValueError(f"selection_strategy must be one of {STRATEGIES}, got {self.selection_strategy!r}.")
        if self.q_nll_scope not in Q_NLL_SCOPES:
            raise ValueError(f"q_nll_scope must be one of {Q_NLL_SCOPES}, got {self.q_nll_scope!r}.")
        if self.selection_score_key == "scas_score":
            self.selection_score_key = "learning_cost"
        if self.selection_score_key not in SCORE_KEYS:
            raise ValueError(f"selection_score_key must be one of {SCORE_KEYS}, got {self.selection_score_key!r}.")
        if not math.isfinite(self.correct_threshold):
            raise ValueError(f"correct_threshold must be a finite number, got {self.correct_threshold}.")
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {self.num_groups}.")
        if not 1 <= self.selection_group <= self.num_groups:
            raise ValueError(
                f"selection_group must lie in [1, num_groups={self.num_groups}], got {self.selection_group}."
            )
        if self.rescore_every < 0:
            raise ValueError(
                f"rescore_every must be >= 0 (0 = score once, before training), got {self.rescore_every}."
            )
        if self.selection_seed is None:
            self.selection_seed = self.seed
