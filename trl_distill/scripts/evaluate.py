"""`trl-distill evaluate {rse,ice}`: distillation quantification from the command line.

Examples:

```bash
# RSE of a student against a teacher, both generated here, scored by the automatic judge
trl-distill evaluate rse --prompts prompts.jsonl --model ./student --reference_model ./teacher --output rse.json

# RSE from pre-generated files, scored by an OpenAI-compatible judge (key read from $OPENAI_API_KEY)
trl-distill evaluate rse --prompts prompts.jsonl --responses student.jsonl --references gpt4o.jsonl \
    --judge http --judge_url https://api.openai.com/v1 --judge_model gpt-4o-mini

# ICE: write the prompts, generate elsewhere, then score the responses
trl-distill evaluate ice --identity_name Qwen --identity_organisation "Alibaba Cloud" --write_prompts ice.jsonl
trl-distill evaluate ice --identity_name Qwen --identity_organisation "Alibaba Cloud" --responses answers.jsonl
```

File formats (JSON or JSONL):
- `--prompts`: rows `{"dataset": ..., "prompt": ...}`, optionally with `"response"` and `"reference"`; or an object
  `{dataset: [prompt, ...]}`.
- `--responses` / `--references` (RSE): rows with `"response"` (or plain strings), one per prompt row, in order.
- `--responses` (ICE): rows with `"prompt"` and `"response"` (the rows of `--write_prompts` plus a response).
"""

import argparse
import json
import math
import os
import sys

from ..evaluation.identity import IdentityFact, split_names
from .utils import parse_args_with_config


def _read_rows(path: str) -> list | dict:
    if not os.path.exists(path):
        raise SystemExit(f"error: file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not path.endswith(".jsonl"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is neither JSON nor JSON Lines ({error}).") from error


def _write_json(path: str, data) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_finite(data), f, ensure_ascii=False, indent=2)


def _finite(value):
    # JSON has no NaN: write null for an undefined mean
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _load_model(path: str, flag: str = "--model"):
    import torch

    from .utils import load_pretrained

    model, tokenizer = load_pretrained(path, f"model ({flag})")
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer


def _add_judge_arguments(parser: argparse.ArgumentParser, choices: list[str], default: str) -> None:
    group = parser.add_argument_group("judge")
    group.add_argument(
        "--judge", choices=choices, default=default, help=f"Which judge scores the responses ({default})."
    )
    group.add_argument("--judge_model", help="Judge model: a local path/name (local) or the served model name (http).")
    group.add_argument("--judge_url", help="Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1.")
    group.add_argument(
        "--api_key_env", default="OPENAI_API_KEY", help="Environment variable holding the judge API key (http)."
    )
    group.add_argument("--judge_timeout", type=float, default=60.0, help="Seconds per judge request (http).")
    group.add_argument("--judge_retries", type=int, default=2, help="Re-asks after an unparsable judge reply.")


def _make_judge(args, progress: bool):
    from ..evaluation.judges import AutomaticJudge, IdentityClaimJudge, LocalChatJudge, OpenAICompatibleJudge

    if args.judge == "auto":
        return AutomaticJudge(embedding_model=getattr(args, "embedding_model", None))
    if args.judge == "rule":
        return IdentityClaimJudge()
    if not args.judge_model:
        raise SystemExit(f"error: --judge {args.judge} needs --judge_model.")
    if args.judge == "local":
        return LocalChatJudge(args.judge_model, max_retries=args.judge_retries, show_progress=progress)
    if not args.judge_url:
        raise SystemExit("error: --judge http needs --judge_url (the API root, e.g. http://localhost:8000/v1).")
    return OpenAICompatibleJudge(
        args.judge_url,
        args.judge_model,
        api_key_env=args.api_key_env or None,
        timeout=args.judge_timeout,
        max_retries=args.judge_retries,
        show_progress=progress,
    )


def _rse_inputs(args) -> tuple[dict, dict | None, dict | None]:
    data = _read_rows(args.prompts)
    if isinstance(data, dict):
        if not all(isinstance(v, list) for v in data.values()):
            raise SystemExit(f"error: {args.prompts} must map dataset names to lists of prompts, or hold rows.")
        rows = [{"dataset": name, "prompt": p} for name, prompts in data.items() for p in prompts]
    else:
        rows = [{"dataset": "default", "prompt": r} if isinstance(r, str) else dict(r) for r in data]
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise SystemExit(f"error: row {i} of {args.prompts} has no 'prompt' field (fields: {sorted(row)}).")
        row.setdefault("dataset", "default")

    def column(name: str, path: str | None) -> dict | None:
        if path is not None:
            values = _read_rows(path)
            if isinstance(values, dict):
                if not all(isinstance(v, list) for v in values.values()):
                    raise SystemExit(
                        f"error: {path} must map dataset names to lists of texts, or hold one row per prompt."
                    )
                return values
            if len(values) != len(rows):
                raise SystemExit(
                    f"error: {path} has {len(values)} rows but {args.prompts} has {len(rows)}; give one per prompt."
                )
            for row, value in zip(rows, values):
                row[name] = value if isinstance(value, str) else value.get(name, value.get("response"))
        if all(row.get(name) is not None for row in rows):
            out: dict[str, list] = {}
            for row in rows:
                out.setdefault(row["dataset"], []).append(row[name])
            return out
        return None

    prompts: dict[str, list] = {}
    for row in rows:
        prompts.setdefault(row["dataset"], []).append(row["prompt"])
    return prompts, column("response", args.responses), column("reference", args.references)


def _run_rse(args) -> int:
    from ..evaluation.rse import rse

    progress = not args.no_progress
    prompts, responses, references = _rse_inputs(args)
    if responses is None and not args.model:
        raise SystemExit("error: give the tested model's responses (--responses or a 'response' field) or --model.")
    if references is None and not args.reference_model:
        raise SystemExit(
            "error: give the reference responses (--references or a 'reference' field) or --reference_model."
        )
    model = tokenizer = reference_model = reference_tokenizer = None
    if responses is None:
        model, tokenizer = _load_model(args.model)
    if references is None:
        reference_model, reference_tokenizer = _load_model(args.reference_model, "--reference_model")
    judge = _make_judge(args, progress)
    result = rse(
        prompts,
        responses=responses,
        references=references,
        model=model,
        tokenizer=tokenizer,
        reference_model=reference_model,
        reference_tokenizer=reference_tokenizer,
        **_judge_settings(args, judge),
    )
    return _report(result, judge, args.output, "pair(s)")


def _judge_settings(args, judge) -> dict:
    """What `rse` and `ice` take alike from the command line: the judge and the generation settings."""
    return dict(
        judge=judge, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, show_progress=not args.no_progress
    )


def _report(result, judge, output: str, items: str) -> int:
    """Prints the table and judge failures, writes the JSON file."""
    print(result.format_table())
    if judge.num_failures:
        print(f"warning: the judge failed on {judge.num_failures} {items}; they are left out of the means.")
    _write_json(output, result.to_dict())
    print(f"wrote {output}")
    return 0


def _run_ice(args) -> int:
    from ..evaluation.ice import build_ice_prompts, ice
    from ..evaluation.mutators import LLMMutator

    progress = not args.no_progress
    identity = IdentityFact(
        name=args.identity_name,
        organisation=args.identity_organisation,
        aliases=split_names(args.alias),
        description=args.identity_description,
    )
    judge = _make_judge(args, progress)
    llm_mutator = None
    if args.llm_mutations:
        if not hasattr(judge, "complete"):
            raise SystemExit("error: --llm_mutations uses the judge's model; choose --judge local or --judge http.")
        llm_mutator = LLMMutator(judge)
    prompts = None
    if args.responses is None:
        prompts = build_ice_prompts(
            identity,
            languages=args.languages,
            num_mutations=args.num_mutations,
            seed=args.seed,
            max_prompts=args.max_prompts,
            llm_mutator=llm_mutator,
        )
    if args.write_prompts:
        if prompts is None:
            raise SystemExit("error: --write_prompts builds new prompts; drop --responses.")
        os.makedirs(os.path.dirname(os.path.abspath(args.write_prompts)), exist_ok=True)
        with open(args.write_prompts, "w", encoding="utf-8") as f:
            for row in prompts:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(prompts)} ICE prompts to {args.write_prompts}; add a 'response' field to each row.")
        return 0
    model = tokenizer = responses = None
    if args.responses is not None:
        responses = _read_rows(args.responses)
        if not isinstance(responses, list):
            raise SystemExit(f"error: {args.responses} must hold a list of rows with 'prompt' and 'response'.")
    elif args.model:
        model, tokenizer = _load_model(args.model)
    else:
        raise SystemExit("error: give --model (to generate answers), --responses (pre-generated) or --write_prompts.")
    settings = _judge_settings(args, judge)
    result = ice(identity, model=model, tokenizer=tokenizer, responses=responses, prompts=prompts, **settings)
    return _report(result, judge, args.output, "response(s)")


def build_parser() -> argparse.ArgumentParser:
    """The `evaluate` argument parser with its `rse` and `ice` subcommands."""
    parser = argparse.ArgumentParser(
        prog="trl-distill evaluate", description="Distillation quantification: RSE and ICE (Lee et al., 2025)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rse_parser = sub.add_parser("rse", help="Response similarity of a model to a reference model.")
    rse_parser.add_argument("--prompts", required=True, help="JSON/JSONL prompts with a 'dataset' field per row.")
    rse_parser.add_argument("--responses", help="Responses of the tested model, one per prompt row.")
    rse_parser.add_argument("--references", help="Responses of the reference model, one per prompt row.")
    rse_parser.add_argument("--model", help="Tested model (path or name) to generate the responses.")
    rse_parser.add_argument("--reference_model", help="Reference model (path or name) to generate the references.")
    rse_parser.add_argument("--embedding_model", help="sentence-transformers model adding cosine to the auto judge.")
    rse_parser.add_argument("--output", default="rse_results.json", help="Where to write the JSON results.")
    _add_judge_arguments(rse_parser, ["auto", "local", "http"], default="auto")

    ice_parser = sub.add_parser("ice", help="Identity consistency of a model under jailbreak-style identity prompts.")
    ice_parser.add_argument("--identity_name", required=True, help="The model's true name, e.g. Qwen.")
    ice_parser.add_argument("--identity_organisation", required=True, help="Its maker, e.g. 'Alibaba Cloud'.")
    ice_parser.add_argument("--alias", action="append", help="Other own names (repeat or comma-separate).")
    ice_parser.add_argument("--identity_description", help="Extra identity facts given to LLM judges.")
    ice_parser.add_argument("--model", help="Model (path or name) to generate the answers.")
    ice_parser.add_argument("--responses", help="JSON/JSONL rows with 'prompt' and 'response'.")
    ice_parser.add_argument("--write_prompts", help="Write the ICE prompts as JSONL and exit.")
    ice_parser.add_argument("--languages", nargs="+", default=["en"], help="Question languages (shipped: en zh).")
    ice_parser.add_argument("--num_mutations", type=int, default=8, help="Mutated templates per language.")
    ice_parser.add_argument("--llm_mutations", action="store_true", help="Let the judge model mutate half of them.")
    ice_parser.add_argument("--max_prompts", type=int, help="Evaluate a seeded random subset of the prompts.")
    ice_parser.add_argument("--seed", type=int, default=0, help="Seed of the template mutations and prompt subset.")
    ice_parser.add_argument("--output", default="ice_results.json", help="Where to write the JSON results.")
    _add_judge_arguments(ice_parser, ["rule", "local", "http"], default="rule")

    for p in (rse_parser, ice_parser):
        p.add_argument("--max_new_tokens", type=int, default=512, help="Generation budget per response.")
        p.add_argument("--batch_size", type=int, default=8, help="Prompts per generation batch.")
        p.add_argument("--no_progress", action="store_true", help="Hide progress bars.")
    return parser


make_parser = build_parser  # the name every command module exports (as `trl/scripts/`)


def main(argv: list[str] | None = None) -> int:
    """
    Entry point of `trl-distill evaluate`.

    Args:
        argv (`list[str]`, *optional*):
            Arguments after `evaluate` (e.g. `["rse", "--prompts", "p.jsonl", ...]`); `sys.argv[1:]` when omitted.

    Returns:
        `int`: the exit status (0 on success).
    """
    args = parse_args_with_config(build_parser(), argv)  # also reads `--config evaluate.yaml`
    if args.command == "rse":
        return _run_rse(args)
    return _run_ice(args)


if __name__ == "__main__":
    sys.exit(main())
