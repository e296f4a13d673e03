"""Pluggable judges for RSE (response similarity) and ICE (identity consistency): every judge, importable from here.

Two kinds of judges:

- **LLM judges** ([`LocalChatJudge`], [`OpenAICompatibleJudge`]) read the rubric as their prompt and answer with a
  JSON object. Replies are parsed leniently (JSON, then `key: value` lines); a reply that still cannot be parsed, or
  that misses a field or has one out of range, is re-asked with the parse error. Items that fail every attempt are
  returned as `None`, counted in `judge.failures`, and left out of every mean: a failure is never a score of zero.
- **Model-free judges**: [`AutomaticJudge`] (ROUGE-L, chrF, optional embedding cosine, mapped to 1–5; good for
  ranking models, *not* comparable to LLM-judge scores) and [`IdentityClaimJudge`] (first-person claims naming a
  known model or organisation).
- **Plain functions** ([`FunctionJudge`], what [`as_judge`] wraps a function in).

Where each part lives: the interface in [`~trl_distill.evaluation.judge_base`], the LLM judges in
[`~trl_distill.evaluation.chat_judges`], the model-free ones in [`~trl_distill.evaluation.model_free_judges`], function
judges in [`~trl_distill.evaluation.function_judge`], the strict reading of returned verdicts in
[`~trl_distill.evaluation.verdicts`], the rubrics and reply parsing in [`~trl_distill.evaluation.rubrics`], the HTTP
client in [`~trl_distill.core.http_client`].
"""

from .chat_judges import ChatJudge, LocalChatJudge, OpenAICompatibleJudge
from .function_judge import FunctionJudge, as_judge
from .judge_base import Judge
from .model_free_judges import AutomaticJudge, IdentityClaimJudge
from .rubrics import (
    ICE_RUBRIC,
    ICE_SYSTEM_PROMPT,
    RSE_RANGES,
    RSE_RUBRIC,
    RSE_SYSTEM_PROMPT,
    IdentityVerdict,
    JudgeParseError,
    SimilarityScore,
    as_number,
    parse_identity,
    parse_similarity,
)
from .verdicts import identity_verdict, judge_bool, similarity_score


__all__ = [
    "AutomaticJudge",
    "ChatJudge",
    "FunctionJudge",
    "ICE_RUBRIC",
    "ICE_SYSTEM_PROMPT",
    "IdentityClaimJudge",
    "IdentityVerdict",
    "Judge",
    "JudgeParseError",
    "LocalChatJudge",
    "OpenAICompatibleJudge",
    "RSE_RANGES",
    "RSE_RUBRIC",
    "RSE_SYSTEM_PROMPT",
    "SimilarityScore",
    "as_judge",
    "as_number",
    "identity_verdict",
    "judge_bool",
    "parse_identity",
    "parse_similarity",
    "similarity_score",
]
