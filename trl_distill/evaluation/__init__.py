"""Distillation quantification: RSE and ICE (Lee et al., 2025), judges, and teacher–student token diagnostics.

Modules: `rse` (response similarity), `ice` (identity consistency), `judges` (every judge, importable from one place:
`judge_base` the interface, `chat_judges` LLM and HTTP judges, `model_free_judges` automatic and rule-based judges,
`function_judge` plain functions, `verdicts` their strict reading), `rubrics` (the judges' rubrics and reply parsing),
`http_client` (re-exports `core.http_client`, the OpenAI-compatible client), `mutators` (GPTFuzzer-style template
mutations), `identity` (identity facts and claim detection), `diagnostics` (token-level KL/JS/top-k and a training
callback). The command is `trl_distill/scripts/evaluate.py`. See docs/quantification.md.
"""
