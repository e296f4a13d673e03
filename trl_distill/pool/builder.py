"""`build_pool`: several teachers' verified answers to every prompt, written as the long-form candidate pool.

Layout of `output_dir`:

- `manifest.json`: what defines the pool (teachers and their settings, `n`, verifier, seed, shard size, a hash of
  the prompt dataset). A rerun with other arguments is refused instead of mixing two pools.
- `shards/<k>-<teacher>/<shard>.jsonl`: one teacher's `n` answers to `shard_size` consecutive prompts, written
  atomically as soon as they are verified. A rerun skips the shards that exist; each shard is seeded from
  `(seed, teacher, shard)`, so a killed-and-resumed run writes the same pool as an uninterrupted one, whatever the
  number of processes.
- `shards/<k>-<teacher>/<shard>.answers.jsonl` and `<shard>.failed.jsonl` (endpoint teachers): each answered
  request, appended as it arrives, and each request that failed after its retries. A rerun re-asks only what is not
  in the answers file; the shard itself is written only once every request of it is answered, so a failed request
  is never written as an answer.
- `pool.jsonl`: the long-form pool (see `trl_distill.core.pool`), rows ordered by prompt, then teacher, then sample.
- `summary.json`: per teacher, the accuracy, the answer length and the share of prompts with a correct answer.
"""

import gc
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from accelerate import PartialState
from datasets import Dataset
from tqdm.auto import tqdm

from ..core.engine import distributed_state
from ..core.generation import generate_completions, render_prompt
from ..core.http_client import ChatCompletionsClient, EndpointError
from ..core.pool import validate_pool
from ..core.rewards import as_completions, as_reward_funcs, call_reward_funcs, is_correct, weighted_reward
from ..core.tokenizers import chat_messages, ensure_pad_token
from ..core.verifiers import verifier_name
from .build_pool_config import BuildPoolConfig, TeacherSpec


MANIFEST_VERSION = 1
# columns the builder writes; a prompt dataset may not bring its own
POOL_COLUMNS = ("prompt_id", "prompt", "completion", "teacher", "correct", "reward", "sample_index",
                "completion_tokens", "teacher_model", "generation")  # fmt: skip


class PoolIncompleteError(RuntimeError):
    """Some requests to an endpoint teacher failed after their retries: their shards are not written, the answered
    requests are kept, and rerunning the same command asks only the rest."""


def build_pool(
    teachers: list,
    dataset: Dataset,
    output_dir: str,
    n: int = 4,
    verifier: str | Callable | list = "exact_match",
    show_progress: bool = True,
    **settings,
) -> Dataset:
    """Generates `n` answers per teacher per prompt, verifies them and writes the long-form candidate pool.

    Every row carries `prompt_id`, `prompt`, `completion` (messages for conversational prompts, else text),
    `teacher`, `correct`, `reward` (the verifier's value, `None` when it could not check), `sample_index`,
    `completion_tokens` (in the teacher's tokenizer), `teacher_model`, `generation` (the settings used) and the
    dataset's other columns. Empty answers are counted in the summary as wrong and left out of the pool.

    Args:
        teachers (`list`): model paths, `key=value,...` strings, mappings or [`TeacherSpec`]s.
        dataset (`Dataset`): prompts in a `prompt` column plus the columns the verifier reads (e.g. `answer`); an
            optional unique `prompt_id` column is kept, otherwise the row index is the id.
        output_dir (`str`): where the pool is written (see the module docstring). Rerunning with the same arguments
            resumes; other arguments are refused unless `overwrite=True`.
        n (`int`, defaults to 4): answers per teacher per prompt.
        verifier (`str`, `Callable` or `list`, defaults to `"exact_match"`): TRL reward functions, as `reward_funcs`
            of `GRPOTrainer` (e.g. `trl.rewards.accuracy_reward`): a name (see `trl_distill.core.verifiers`), an
            import path, a callable `(prompts, completions, **columns) -> list[float | None]`, or a list of them
            (summed, see [`trl_distill.core.rewards`]).
        show_progress (`bool`, defaults to `True`): a progress bar per teacher and the summary table.
        **settings: the other fields of [`BuildPoolConfig`] (generation defaults, `shard_size`, `seed`, ...).

    Returns:
        `Dataset`: the long-form pool, identical on every process.
    """
    config = BuildPoolConfig(teachers=teachers, output_dir=output_dir, n=n, verifier=verifier, **settings)
    return PoolBuilder(config, dataset, show_progress=show_progress).run()


def load_pool(output_dir: str) -> Dataset:
    """The pool written by [`build_pool`] in `output_dir`."""
    path = os.path.join(output_dir, "pool.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No finished pool in {output_dir!r} (no pool.jsonl): run build_pool to finish it.")
    pool = Dataset.from_list(_read_jsonl(path))
    validate_pool(pool)
    return pool


def _sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _write_atomic(path: str, text: str) -> None:
    # a kill mid-write leaves only a .tmp file, which is never read
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _is_empty(completion) -> bool:
    text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
    return not text.strip()


def _verifier_names(verifier) -> str | list[str]:
    """The manifest's name of the verifier: one name, or a list for several reward functions."""
    if isinstance(verifier, list | tuple):
        return [verifier_name(v) for v in verifier]
    return verifier_name(verifier)


class PoolBuilder:
    """Runs one `build_pool` call; see [`build_pool`]. Split out so each step reads on its own."""

    def __init__(self, config: BuildPoolConfig, dataset: Dataset, show_progress: bool = True):
        self.config = config
        self.dataset = dataset
        self.show_progress = show_progress
        self.state = distributed_state()
        self.reward_funcs = as_reward_funcs(config.verifier, config.tolerance)
        self.extra_columns = self._check_dataset()
        has_ids = "prompt_id" in dataset.column_names
        self.prompt_ids = list(dataset["prompt_id"]) if has_ids else list(range(len(dataset)))
        self.num_shards = -(-len(dataset) // config.shard_size)
        self._check_verifier()

    # ---- checks before any model is loaded -------------------------------------------------------------------------

    def _check_dataset(self) -> list[str]:
        columns = self.dataset.column_names
        if "prompt" not in columns:
            raise ValueError(
                f"The prompt dataset has no `prompt` column (columns: {columns}); rename its prompt column."
            )
        if len(self.dataset) == 0:
            raise ValueError("The prompt dataset is empty.")
        clashing = sorted(set(columns) & set(POOL_COLUMNS) - {"prompt", "prompt_id", "completion"})
        if clashing:
            raise ValueError(
                f"The prompt dataset has column(s) {clashing}, which the pool writes itself; remove or rename them."
            )
        if "prompt_id" in columns and len(set(self.dataset["prompt_id"])) != len(self.dataset):
            raise ValueError("The `prompt_id` column has repeated values; ids must be unique (or drop the column).")
        for i, prompt in enumerate(self.dataset["prompt"]):
            if not prompt or not isinstance(prompt, str | list):
                raise ValueError(f"Row {i}: `prompt` must be non-empty text or a list of messages, got {prompt!r}.")
        return [c for c in columns if c not in ("prompt", "prompt_id", "completion")]

    def _check_verifier(self) -> None:
        # A dry call shaped like a real shard (the first prompts, `n` empty answers each), before any teacher loads:
        # a verifier that needs a missing column, or that returns one reward per prompt instead of one per
        # completion, fails here and not after the first teacher has generated a shard.
        rows = self.dataset[: min(2, len(self.dataset))]
        n = self.config.n
        prompts = [p for p in rows["prompt"] for _ in range(n)]
        completions = ["" if isinstance(p, str) else [{"role": "assistant", "content": ""}] for p in prompts]
        columns = {c: [v for v in rows[c] for _ in range(n)] for c in self.extra_columns}
        try:
            call_reward_funcs(self.reward_funcs, prompts, completions, columns)
        except Exception as error:
            raise ValueError(
                f"The verifier {_verifier_names(self.config.verifier)} fails on a dry call with the first "
                f"{len(rows['prompt'])} prompt(s) × n={n} empty completions ({len(completions)} completions) and the "
                f"dataset's columns {self.extra_columns}: {error}"
            ) from error

    # ---- manifest ----------------------------------------------------------------------------------------------------

    def manifest(self) -> dict:
        config = self.config
        dataset_hash = hashlib.sha256()
        for start in range(0, len(self.dataset), 1024):
            batch = self.dataset[start : start + 1024]
            keys = ["prompt"] + self.extra_columns
            rows = [{k: batch[k][i] for k in keys} for i in range(len(batch["prompt"]))]
            dataset_hash.update(json.dumps([self.prompt_ids[start : start + 1024], rows], default=str).encode())
        return {
            "version": MANIFEST_VERSION,
            "teachers": [spec.identity() for spec in config.teacher_specs],
            "n": config.n,
            "verifier": _verifier_names(config.verifier),
            "tolerance": config.tolerance,
            "correct_threshold": config.correct_threshold,
            "seed": config.seed,
            "shard_size": config.shard_size,
            "dataset": {"rows": len(self.dataset), "columns": self.extra_columns, "sha256": dataset_hash.hexdigest()},
        }

    def _prepare_output(self, manifest: dict) -> None:
        output_dir, overwrite = self.config.output_dir, self.config.overwrite
        path = os.path.join(output_dir, "manifest.json")
        previous = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
            if previous != manifest and not overwrite:
                raise ValueError(
                    f"{output_dir!r} holds a pool built with other arguments ({_differences(previous, manifest)}). "
                    "Rerun with the same arguments to resume it, choose another output_dir, or pass overwrite=True "
                    "(`--overwrite`) to delete it and start over."
                )
        elif os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
            raise ValueError(
                f"{output_dir!r} is not empty and holds no pool manifest; choose an empty or new output_dir."
            )
        self.state.wait_for_everyone()  # every rank has read the old manifest before it is replaced
        if self.state.is_main_process:
            if previous != manifest:
                for name in ("shards", "pool.jsonl", "summary.json", "manifest.json"):
                    target = os.path.join(output_dir, name)
                    if os.path.isdir(target):
                        shutil.rmtree(target)
                    elif os.path.exists(target):
                        os.remove(target)
            os.makedirs(os.path.join(output_dir, "shards"), exist_ok=True)
            if previous != manifest:
                _write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True))
        self.state.wait_for_everyone()

    # ---- generation --------------------------------------------------------------------------------------------------

    def shard_path(self, teacher_index: int, shard: int) -> str:
        spec = self.config.teacher_specs[teacher_index]
        folder = f"{teacher_index:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.name)}"
        return os.path.join(self.config.output_dir, "shards", folder, f"{shard:05d}.jsonl")

    def shard_seed(self, spec: TeacherSpec, shard: int) -> int:
        return int(_sha256([self.config.seed, spec.name, shard])[:8], 16) % (2**31 - 1)

    def run(self) -> Dataset:
        self._prepare_output(self.manifest())
        for teacher_index, spec in enumerate(self.config.teacher_specs):
            # every rank lists the pending shards before any rank writes one
            pending = [k for k in range(self.num_shards) if not os.path.exists(self.shard_path(teacher_index, k))]
            self.state.wait_for_everyone()
            mine = pending[self.state.process_index :: self.state.num_processes]
            if mine:
                self._generate_teacher(teacher_index, spec, mine)
            self.state.wait_for_everyone()
        self._check_complete()
        if self.state.is_main_process:
            summary = self._merge()
            if self.show_progress:
                print(format_summary(summary))
        self.state.wait_for_everyone()
        return load_pool(self.config.output_dir)

    def _generate_teacher(self, teacher_index: int, spec: TeacherSpec, shards: list[int]) -> None:
        size = self.config.shard_size
        total = sum(min(size, len(self.dataset) - k * size) for k in shards)
        backend = _load_backend(spec, self.config, self.state)
        try:
            # left to tqdm's defaults when shown, so TQDM_DISABLE still silences it
            shown = self.show_progress and self.state.is_local_main_process
            progress = tqdm(total=total, desc=spec.name, unit="prompt", **({} if shown else {"disable": True}))
            with progress:
                for shard in shards:
                    rows = self.dataset[shard * size : (shard + 1) * size]
                    path = self.shard_path(teacher_index, shard)
                    try:
                        records = self._answer_shard(backend, spec, shard, rows, path)
                    except _UnansweredRequests:  # recorded in the shard's failed file; reported once all have run
                        progress.update(len(rows["prompt"]))
                        continue
                    _write_atomic(
                        self.shard_path(teacher_index, shard),
                        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    )
                    progress.update(len(rows["prompt"]))
                    if os.path.exists(_sidecar(path, "answers")):  # the shard holds them now
                        os.remove(_sidecar(path, "answers"))
        finally:
            backend.close()

    def _answer_shard(self, backend, spec: TeacherSpec, shard: int, rows: dict, path: str) -> list[dict]:
        n, seed = self.config.n, self.shard_seed(spec, shard)
        prompts = rows["prompt"]
        answers = backend.generate(prompts, n, seed, path)
        asked = [prompts[i // n] for i in range(len(answers))]
        completions = as_completions(asked, [text for text, _ in answers])
        columns = {c: [rows[c][i // n] for i in range(len(completions))] for c in self.extra_columns}
        summed = weighted_reward(call_reward_funcs(self.reward_funcs, asked, completions, columns))
        rewards = [None if math.isnan(r) else r for r in summed.tolist()]
        passed = is_correct(summed, self.config.correct_threshold)
        generation = {k: getattr(spec, k) for k in ("temperature", "top_p", "max_new_tokens", "system", "backend")}
        generation["seed"] = seed
        first_id = shard * self.config.shard_size
        records = []
        for i, ((_, num_tokens), completion, reward, ok) in enumerate(zip(answers, completions, rewards, passed)):
            records.append(
                {
                    "prompt_id": self.prompt_ids[first_id + i // n],
                    "prompt": prompts[i // n],
                    "completion": completion,
                    "teacher": spec.name,
                    # an empty answer teaches nothing, whatever a lenient verifier says
                    "correct": bool(ok) and not _is_empty(completion),
                    "reward": reward,
                    "sample_index": i % n,
                    "completion_tokens": num_tokens,
                    "teacher_model": spec.model,
                    "generation": generation,
                    **{c: columns[c][i] for c in self.extra_columns},
                }
            )
        return records

    def _check_complete(self) -> None:
        """Raises [`PoolIncompleteError`] when a shard is missing (its endpoint requests failed), naming the files."""
        missing = [
            self.shard_path(t, k)
            for t in range(len(self.config.teacher_specs))
            for k in range(self.num_shards)
            if not os.path.exists(self.shard_path(t, k))
        ]
        if missing:
            failed = [_sidecar(path, "failed") for path in missing if os.path.exists(_sidecar(path, "failed"))]
            raise PoolIncompleteError(
                f"{len(missing)} shard(s) are not finished because requests to an endpoint teacher failed after their "
                f"retries; the failures are listed in {failed[:3]}{' ...' if len(failed) > 3 else ''}. Answered "
                "requests are kept: rerun the same command to ask only the others (raise `max_retries` or `timeout`, "
                "or lower `max_concurrency` / `requests_per_second`, if the server is overloaded)."
            )

    # ---- merge and summary -------------------------------------------------------------------------------------------

    def _merge(self) -> dict:
        stats = {spec.name: _TeacherStats() for spec in self.config.teacher_specs}
        any_correct: set = set()
        lines = []
        for shard in range(self.num_shards):
            per_teacher = [_read_jsonl(self.shard_path(t, shard)) for t in range(len(self.config.teacher_specs))]
            first = shard * self.config.shard_size
            by_prompt = {pid: [] for pid in self.prompt_ids[first : first + self.config.shard_size]}
            for records in per_teacher:
                for record in records:
                    stats[record["teacher"]].add(record)
                    if record["correct"]:
                        any_correct.add(record["prompt_id"])
                    if not _is_empty(record["completion"]):
                        by_prompt[record["prompt_id"]].append(record)
            for records in by_prompt.values():
                lines += [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        if not lines:
            raise ValueError("Every generated answer is empty: the pool would be empty. Check the teachers' outputs.")
        _write_atomic(os.path.join(self.config.output_dir, "pool.jsonl"), "".join(lines))
        num_prompts = len(self.dataset)
        summary = {
            "prompts": num_prompts,
            "n": self.config.n,
            "teachers": {name: s.summary(num_prompts) for name, s in stats.items()},
            "any_teacher_prompts_with_correct": len(any_correct) / num_prompts,
        }
        _write_atomic(os.path.join(self.config.output_dir, "summary.json"), json.dumps(summary, indent=1))
        for folder, _, files in os.walk(os.path.join(self.config.output_dir, "shards")):
            for name in files:
                if ".jsonl.tmp" in name:  # left by a run killed while writing; no process is writing now
                    os.remove(os.path.join(folder, name))
        return summary


class _TeacherStats:
    def __init__(self):
        self.answers = self.correct = self.empty = self.unverified = self.tokens = self.chars = 0
        self.prompts_with_correct: set = set()

    def add(self, record: dict) -> None:
        completion = record["completion"]
        text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        self.answers += 1
        self.correct += record["correct"]
        self.empty += _is_empty(completion)
        self.unverified += record["reward"] is None
        self.tokens += record["completion_tokens"]
        self.chars += len(text)
        if record["correct"]:
            self.prompts_with_correct.add(record["prompt_id"])

    def summary(self, num_prompts: int) -> dict:
        return {
            "answers": self.answers,
            "accuracy": self.correct / self.answers,
            "prompts_with_correct": len(self.prompts_with_correct) / num_prompts,
            "mean_completion_tokens": self.tokens / self.answers,
            "mean_completion_chars": self.chars / self.answers,
            "empty": self.empty,
            "unverified": self.unverified,
        }


def format_summary(summary: dict) -> str:
    """The summary as a text table: one row per teacher and one for all teachers together."""
    header = (
        f"{'teacher':<24} {'answers':>8} {'accuracy':>9} {'≥1 correct':>11} {'tokens':>8} {'empty':>6} {'unverif.':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, s in summary["teachers"].items():
        lines.append(
            f"{name[:24]:<24} {s['answers']:>8} {s['accuracy']:>9.3f} {s['prompts_with_correct']:>11.3f} "
            f"{s['mean_completion_tokens']:>8.1f} {s['empty']:>6} {s['unverified']:>9}"
        )
    lines.append(f"{'any teacher':<24} {'':>8} {'':>9} {summary['any_teacher_prompts_with_correct']:>11.3f}")
    return "\n".join(lines)


def _differences(previous: dict, current: dict) -> str:
    diffs = []
    for key in sorted(set(previous) | set(current)):
        if previous.get(key) == current.get(key):
            continue
        if key == "teachers":
            old = {t["name"]: t for t in previous.get(key, [])}
            new = {t["name"]: t for t in current.get(key, [])}
            if list(old) != list(new):
                diffs.append(f"teachers were {list(old)}, now {list(new)}")
            for name in old.keys() & new.keys():
                changed = {k: (old[name][k], new[name].get(k)) for k in old[name] if old[name][k] != new[name].get(k)}
                for field_name, (was, now) in changed.items():
                    diffs.append(f"teacher {name!r} {field_name} was {was!r}, now {now!r}")
        elif key == "dataset":
            diffs.append(f"the prompt dataset changed (was {previous[key]['rows']} rows, now {current[key]['rows']})")
        else:
            diffs.append(f"{key} was {previous.get(key)!r}, now {current.get(key)!r}")
    return "; ".join(diffs)


# ---- backends ---------------------------------------------------------------------------------------------------------


def _load_backend(spec: TeacherSpec, config: BuildPoolConfig, state: PartialState):
    if spec.backend == "endpoint":
        return _EndpointBackend(spec)
    if spec.backend == "vllm":
        return _VLLMBackend(spec, config, state)
    return _TransformersBackend(spec, config, state)


class _TransformersBackend:
    """Batched `generate` with left padding; under accelerate each process answers its own shards."""

    def __init__(self, spec: TeacherSpec, config: BuildPoolConfig, state: PartialState):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec, self.batch_size = spec, config.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model, trust_remote_code=config.trust_remote_code)
        ensure_pad_token(self.tokenizer)  # many base models ship without one; left padding makes eos safe
        dtype = spec.dtype if spec.dtype == "auto" else getattr(torch, spec.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            spec.model, dtype=dtype, trust_remote_code=config.trust_remote_code
        ).to(state.device)

    def generate(self, prompts: list, n: int, seed: int, shard_path: str) -> list[tuple[str, int]]:
        spec = self.spec
        texts = generate_completions(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=spec.max_new_tokens,
            batch_size=self.batch_size,
            do_sample=spec.temperature > 0,
            temperature=spec.temperature,
            top_p=spec.top_p,
            num_return_sequences=n,
            system=spec.system,
            seed=seed,
            show_progress=False,
        )
        return [(text, len(self.tokenizer(text, add_special_tokens=False)["input_ids"])) for text in texts]

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():  # free the GPU for the next teacher (a full collection costs ~0.5 s)
            gc.collect()
            torch.cuda.empty_cache()


class _VLLMBackend:
    """vLLM in this process, tensor-parallel over `tensor_parallel_size` GPUs; one request seed per prompt."""

    def __init__(self, spec: TeacherSpec, config: BuildPoolConfig, state: PartialState):
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(f"Teacher {spec.name!r} uses backend='vllm': `pip install 'trl-distill[vllm]'`.")
        if state.num_processes > 1:
            raise ValueError(
                "backend='vllm' parallelises one teacher with tensor_parallel_size; launch build-pool with plain "
                "`python`/`trl-distill`, not with several accelerate processes."
            )
        from vllm import LLM

        self.spec = spec
        self.llm = LLM(
            model=spec.model,
            tensor_parallel_size=spec.tensor_parallel_size,
            dtype=spec.dtype,
            seed=config.seed,
            gpu_memory_utilization=config.gpu_memory_utilization,
            trust_remote_code=config.trust_remote_code,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list, n: int, seed: int, shard_path: str) -> list[tuple[str, int]]:
        from vllm import SamplingParams

        spec = self.spec
        # the chat template already holds any BOS token, so token ids are passed as they are
        requests = [
            {"prompt_token_ids": self.tokenizer(render_prompt(self.tokenizer, p, spec.system), add_special_tokens=False)[
                "input_ids"
            ]}
            for p in prompts
        ]  # fmt: skip
        params = [
            SamplingParams(
                n=n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_new_tokens, seed=seed + i
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [(o.text, len(o.token_ids)) for output in outputs for o in output.outputs]

    def close(self) -> None:
        del self.llm
        gc.collect()
        try:  # frees the GPUs for the next teacher; the module moved across vLLM versions
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _sidecar(shard_path: str, kind: str) -> str:
    """`<shard>.answers.jsonl` / `<shard>.failed.jsonl` beside `<shard>.jsonl`."""
    return shard_path.removesuffix(".jsonl") + f".{kind}.jsonl"


class _UnansweredRequests(Exception):
    pass


class _EndpointBackend:
    """An OpenAI-compatible chat endpoint: one request per answer (`seed` = shard seed + answer index), at most
    `max_concurrency` in flight, spaced by `requests_per_second`, retried with backoff on 429/5xx/timeouts; each
    answer appended to the shard's answers file as it arrives, so a killed run re-asks nothing answered."""

    def __init__(self, spec: TeacherSpec):
        self.spec = spec
        self.client = ChatCompletionsClient(
            spec.base_url, spec.model, api_key_env=spec.api_key_env, timeout=spec.timeout,
            max_http_retries=spec.max_retries, backoff=spec.backoff, temperature=spec.temperature, max_tokens=spec.max_new_tokens,
            requests_per_second=spec.requests_per_second,
        )  # fmt: skip
        self.lock = threading.Lock()

    def _messages(self, prompt) -> list[dict]:
        messages = chat_messages(prompt)  # a conversation that opens with its own system message keeps it
        has_system = bool(messages) and messages[0]["role"] == "system"
        return messages if has_system else chat_messages(messages, self.spec.system)

    def generate(self, prompts: list, n: int, seed: int, shard_path: str) -> list[tuple[str, int]]:
        answers_path, failed_path = _sidecar(shard_path, "answers"), _sidecar(shard_path, "failed")
        answered = {}
        if os.path.exists(answers_path):
            with open(answers_path, encoding="utf-8") as f:
                for line in f:
                    try:  # a kill mid-append leaves a cut last line: that request is asked again
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    answered[record["key"]] = (record["content"], record["completion_tokens"])
        todo = [(i, j) for i in range(len(prompts)) for j in range(n) if f"{i}:{j}" not in answered]
        os.makedirs(os.path.dirname(answers_path), exist_ok=True)
        failures = []
        with open(answers_path, "a", encoding="utf-8") as out:

            def ask(index):
                i, j = index
                try:
                    reply = self.client.reply(self._messages(prompts[i]), top_p=self.spec.top_p, seed=seed + i * n + j)
                except EndpointError as error:
                    failures.append({"key": f"{i}:{j}", "error": str(error), "time": time.time()})
                    return
                content = reply["content"] or ""  # no content (a refusal) is an empty answer: counted, not pooled
                tokens = reply["completion_tokens"]
                if tokens is None:  # a server without `usage`: words stand in for tokens
                    tokens = len(content.split())
                line = json.dumps({"key": f"{i}:{j}", "content": content, "completion_tokens": tokens})
                with self.lock:
                    out.write(line + "\n")
                    out.flush()
                    answered[f"{i}:{j}"] = (content, tokens)

            with ThreadPoolExecutor(self.spec.max_concurrency) as pool:
                list(pool.map(ask, todo))
            os.fsync(out.fileno())
        if failures:
            with open(failed_path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(failure) + "\n" for failure in failures)
            raise _UnansweredRequests(len(failures))
        if os.path.exists(failed_path):  # every earlier failure is answered now
            os.remove(failed_path)
        return [answered[f"{i}:{j}"] for i in range(len(prompts)) for j in range(n)]

    def close(self) -> None:
        pass
