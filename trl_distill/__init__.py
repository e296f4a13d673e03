"""trl-distill: student-centric distillation methods for TRL.

Public names are imported lazily, so `import trl_distill` stays cheap and optional extras are only needed by the
method that uses them.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# module (relative to this package) -> public names it defines
_EXPORTS = {
    "core.pool": [
        "validate_pool",
        "to_long_pool",
        "to_grouped_pool",
        "is_candidate_pool",
        "load_released_pool",
        "is_released_pool_dir",
    ],
    "core.data": ["load_data"],
    "core.checkpoints": ["fetch_checkpoint"],
    "core.teachers": ["load_teacher"],
    "core.served_teacher": ["ServedTeacher"],
    "core.http_client": ["ChatCompletionsClient"],
    "core.tokenizers": ["ensure_pad_token"],
    "core.sampler": ["SelectionSampler", "SelectionCallback"],
    "core.divergence": ["generalized_jsd", "generalized_jsd_from_logits", "LMHead"],
    "core.logprobs": ["completion_logprobs", "SequenceBatch", "encode_prompt_completion"],
    "core.generation": ["generate_completions", "stop_token_ids"],
    "core.verifiers": ["exact_match_reward", "numeric_reward", "extract_final_answer"],
    "scas.scas_config": ["SCASConfig"],
    "scas.scas_trainer": ["SCASTrainer"],
    "scas.scoring": ["scas_scores"],
    "scas.selection": ["scas_select"],
    "scas.scas_callback": ["SCASCallback"],
    "dmc.compatibility": ["compatibility", "rank_datasets", "relative_difficulty", "capability"],
    "dmc.dmc_callback": ["DMCCallback", "DMCArguments", "CandidateDatasets"],
    "ogls_sd.ogls_sd_config": ["OGLSSDConfig"],
    "ogls_sd.ogls_sd_trainer": ["OGLSSDTrainer", "teacher_prompt"],
    "ogls_sd.steering": ["steering_direction", "contextual_steering_direction"],
    "camopd.camopd_config": ["CaMOPDConfig"],
    "camopd.camopd_trainer": ["CaMOPDTrainer"],
    "evaluation.rse": ["rse", "RSEResult"],
    "evaluation.ice": ["ice", "ICEResult", "build_ice_prompts"],
    "evaluation.identity": ["IdentityFact"],
    "evaluation.judges": [
        "AutomaticJudge",
        "LocalChatJudge",
        "OpenAICompatibleJudge",
        "IdentityClaimJudge",
        "Judge",
        "ChatJudge",
        "FunctionJudge",
    ],
    "evaluation.mutators": ["LLMMutator", "mutate_templates"],
    "evaluation.diagnostics": ["token_diagnostics", "TokenDiagnosticsCallback"],
    "pool.builder": ["build_pool"],
    "pool.build_pool_config": ["BuildPoolConfig"],
}
_NAME_TO_MODULE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_NAME_TO_MODULE)


def __getattr__(name):
    if name in _NAME_TO_MODULE:
        module = importlib.import_module(f".{_NAME_TO_MODULE[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'trl_distill' has no attribute {name!r}")


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .core.pool import is_released_pool_dir, load_released_pool, to_grouped_pool, to_long_pool, validate_pool  # noqa: F401
    from .core.sampler import SelectionCallback, SelectionSampler  # noqa: F401
