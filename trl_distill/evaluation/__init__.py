"""Distillation quantification: RSE and ICE (Lee et al., 2025), judges, and teacher–student token diagnostics.

Modules: `rse` (response similarity), `ice` (identity consistency), `judges` (LLM, HTTP, automatic and rule-based
judges), `rubrics` (the judges' rubrics and reply parsing), `http_client` (re-exports `core.http_client`, the OpenAI-compatible client), `mutators` (GPTFuzzer-style template mutations), `identity` (identity facts and claim detection),
`diagnostics` (token-level KL/JS/top-k and a training callback). The command is `trl_distill/scripts/evaluate.py`. See
docs/quantification.md.
"""
