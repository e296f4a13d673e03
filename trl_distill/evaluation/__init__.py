"""Distillation quantification: RSE and ICE (Lee et al., 2025), judges, and teacher–student token diagnostics.

Modules: `rse` (response similarity), `ice` (identity consistency), `judges` (LLM, HTTP, automatic and rule-based
judges), `mutators` (GPTFuzzer-style template mutations), `identity` (identity facts and claim detection),
`diagnostics` (token-level KL/JS/top-k and a training callback), `cli` (`trl-distill evaluate`). See
docs/quantification.md.
"""
