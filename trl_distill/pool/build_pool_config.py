"""Arguments of `build-pool`: the teachers with their generation settings, the verifier and the output layout."""

import os
from dataclasses import asdict, dataclass, field, fields


BACKENDS = ("transformers", "vllm", "endpoint")
# settings of an endpoint teacher that change how fast it answers, not what: left out of the pool's identity
ENDPOINT_THROUGHPUT = ("api_key_env", "max_concurrency", "requests_per_second", "timeout", "max_retries", "backoff")
ENDPOINT_FIELDS = ("base_url", *ENDPOINT_THROUGHPUT)
DTYPES = ("auto", "float32", "bfloat16", "float16")
# the settings [`BuildPoolConfig`] gives every teacher that does not set them
TEACHER_DEFAULTS = ("temperature", "top_p", "max_new_tokens", "system", "backend", "dtype", "tensor_parallel_size")


@dataclass
class TeacherSpec:
    """One teacher and its generation settings; `None` fields take the [`BuildPoolConfig`] defaults.

    Written on the command line as a path (`./qwen-7b`) or as comma-separated `key=value` pairs
    (`name=qwen,model=Qwen/Qwen2.5-7B-Instruct,temperature=0.7,backend=vllm,tensor_parallel_size=4`); in a YAML recipe
    also as a mapping with the same keys. A teacher with a `base_url` is an OpenAI-compatible chat endpoint (vLLM,
    SGLang, `trl-distill serve-teacher`, a hosted API): `model` is then the model name sent in each request
    (`name=big,model=Qwen/Qwen2.5-72B-Instruct,base_url=http://10.0.0.5:8000/v1,max_concurrency=16`).

    Args:
        model (`str`): model path or Hub id.
        name (`str`, *optional*): the name written in the pool's `teacher` column; defaults to the last component
            of `model`. Must be unique among the teachers.
        temperature (`float`, *optional*): sampling temperature; 0 means greedy decoding (then `n` must be 1).
        top_p (`float`, *optional*): nucleus-sampling mass.
        max_new_tokens (`int`, *optional*): generation budget per answer.
        system (`str`, *optional*): system message put before each conversational prompt.
        backend (`str`, *optional*): `"transformers"` or `"vllm"`.
        dtype (`str`, *optional*): weights dtype: `"auto"`, `"float32"`, `"bfloat16"` or `"float16"`.
        tensor_parallel_size (`int`, *optional*): GPUs one vLLM teacher is split over.
        base_url (`str`, *optional*): the API root of an endpoint teacher (e.g. `http://10.0.0.5:8000/v1`); implies
            `backend="endpoint"`.
        api_key_env (`str`, *optional*): the environment variable holding the endpoint's API key (never the key).
        max_concurrency (`int`, *optional*, defaults to 8 for endpoints): requests in flight at once.
        requests_per_second (`float`, *optional*): a rate limit on the endpoint's requests.
        timeout (`float`, *optional*, defaults to 120 for endpoints): seconds to wait for one answer.
        max_retries (`int`, *optional*, defaults to 4 for endpoints): retries after 429, 5xx, timeouts and malformed
            replies, with exponential backoff.
        backoff (`float`, *optional*, defaults to 1 for endpoints): the first wait between retries in seconds, doubled
            each retry.
    """

    model: str
    name: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    system: str | None = None
    backend: str | None = None
    dtype: str | None = None
    tensor_parallel_size: int | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_concurrency: int | None = None
    requests_per_second: float | None = None
    timeout: float | None = None
    max_retries: int | None = None
    backoff: float | None = None

    @classmethod
    def parse(cls, value) -> "TeacherSpec":
        """A spec from a path, a `key=value,...` string, a mapping, or a spec."""
        if isinstance(value, TeacherSpec):
            return value
        if isinstance(value, dict):
            items = dict(value)
        elif isinstance(value, str) and "=" in value:
            items = {}
            for part in value.split(","):
                key, sep, raw = part.partition("=")
                if not sep:
                    raise ValueError(f"Teacher spec {value!r}: {part!r} is not a `key=value` pair.")
                items[key.strip()] = raw.strip()
        elif isinstance(value, str) and value.strip():
            items = {"model": value.strip()}
        else:
            raise ValueError(f"A teacher must be a path, a `key=value,...` string or a mapping, got {value!r}.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(items) - set(known))
        if unknown:
            raise ValueError(f"Teacher spec {value!r}: unknown key(s) {unknown}; known keys are {sorted(known)}.")
        if not items.get("model"):
            raise ValueError(f"Teacher spec {value!r} has no `model` (a path or Hub id).")
        converters = {"temperature": float, "top_p": float, "max_new_tokens": int, "tensor_parallel_size": int,
                      "max_concurrency": int, "requests_per_second": float, "timeout": float, "max_retries": int,
                      "backoff": float}  # fmt: skip
        try:
            items = {k: converters[k](v) if k in converters and v is not None else v for k, v in items.items()}
        except ValueError as error:
            raise ValueError(f"Teacher spec {value!r}: {error}.") from error
        return cls(**items)

    def resolved(self, defaults: "BuildPoolConfig") -> "TeacherSpec":
        """A copy with every unset field taken from `defaults` and a name derived from the model when unset."""
        values = asdict(self)
        if values["base_url"] and values["backend"] is None:
            values["backend"] = "endpoint"
        if values["backend"] == "endpoint":
            for key, default in (("max_concurrency", 8), ("timeout", 120.0), ("max_retries", 4), ("backoff", 1.0)):
                values[key] = default if values[key] is None else values[key]
        for key in TEACHER_DEFAULTS:
            if values[key] is None:
                values[key] = getattr(defaults, key)
        if not values["name"]:
            values["name"] = os.path.basename(os.path.normpath(self.model)) or self.model
        spec = TeacherSpec(**values)
        spec.check()
        return spec

    def check(self) -> None:
        where = f"Teacher {self.name or self.model!r}"
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"{where}: temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"{where}: top_p must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"{where}: max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"{where}: unknown backend {self.backend!r}; choose one of {BACKENDS}.")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {self.dtype!r}; choose one of {DTYPES}.")
        if self.tensor_parallel_size is not None and self.tensor_parallel_size < 1:
            raise ValueError(f"{where}: tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}.")
        if self.backend == "endpoint" and not (self.base_url or "").startswith(("http://", "https://")):
            raise ValueError(
                f"{where}: an endpoint teacher needs a `base_url` starting with http:// or https:// (e.g. "
                f"base_url=http://10.0.0.5:8000/v1), got {self.base_url!r}."
            )
        if self.backend not in (None, "endpoint") and self.base_url:
            raise ValueError(f"{where}: `base_url` is set but backend={self.backend!r}; drop one of them.")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"{where}: max_concurrency must be >= 1, got {self.max_concurrency}.")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(f"{where}: requests_per_second must be > 0, got {self.requests_per_second}.")

    def identity(self) -> dict:
        """What makes this teacher's answers what they are (the manifest entry): the settings, without an endpoint's
        throughput knobs, and without the endpoint fields for a local teacher (so older manifests still match)."""
        values = asdict(self)
        if self.backend != "endpoint":
            return {k: v for k, v in values.items() if k not in ENDPOINT_FIELDS}
        return {k: v for k, v in values.items() if k not in ENDPOINT_THROUGHPUT}


@dataclass
class BuildPoolConfig:
    r"""
    Arguments of [`build_pool`] and `trl-distill build-pool`.

    Parameters:
        teachers (`list[str]`):
            The teachers, each a path/Hub id or a `key=value,...` spec (see [`TeacherSpec`]); mappings in YAML.
            They are loaded one at a time, in this order.
        dataset_name (`str`, *optional*):
            (CLI) The prompt dataset: a Hub id, a directory saved with `save_to_disk`, or a `.json`/`.jsonl`/
            `.parquet`/`.csv` file. It needs a `prompt` column (text or messages) and the columns the verifier reads
            (e.g. `answer`). A `completion` column (the reference answer) is not copied into the pool.
        dataset_config (`str`, *optional*):
            (CLI) The dataset configuration name on the Hub.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            (CLI) The split to read.
        max_prompts (`int`, *optional*):
            (CLI) Use only the first `max_prompts` rows (quick trials).
        output_dir (`str`):
            Where the shards, `manifest.json`, `pool.jsonl` and `summary.json` are written.
        n (`int`, *optional*, defaults to `4`):
            Answers per teacher per prompt.
        verifier (`str`, *optional*, defaults to `"exact_match"`):
            `exact_match`, `numeric`, `math_verify`, `lab_task`, or an import path `package.module:function` (e.g.
            `trl.rewards:accuracy_reward`); [`build_pool`] also takes TRL reward functions (a callable or a list,
            summed), as `GRPOTrainer`'s `reward_funcs`.
        tolerance (`float`, *optional*, defaults to `1e-6`):
            Relative and absolute tolerance of the `numeric` verifier.
        correct_threshold (`float`, *optional*, defaults to `1.0`):
            An answer is `correct` when its reward is at least this.
        max_new_tokens (`int`, *optional*, defaults to `512`):
            Default generation budget per answer.
        temperature (`float`, *optional*, defaults to `1.0`):
            Default sampling temperature (0 = greedy, which needs `n=1`).
        top_p (`float`, *optional*, defaults to `1.0`):
            Default nucleus-sampling mass.
        system (`str`, *optional*):
            Default system message for conversational prompts.
        backend (`str`, *optional*, defaults to `"transformers"`):
            Default backend: `"transformers"` (batched `generate`, data-parallel over accelerate processes) or
            `"vllm"` (one process, tensor-parallel over `tensor_parallel_size` GPUs). A teacher with a `base_url` uses
            `"endpoint"` (an OpenAI-compatible chat server, see [`TeacherSpec`]).
        dtype (`str`, *optional*, defaults to `"auto"`):
            Default weights dtype.
        tensor_parallel_size (`int`, *optional*, defaults to `1`):
            Default number of GPUs per vLLM teacher.
        gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
            Share of GPU memory vLLM may take.
        batch_size (`int`, *optional*, defaults to `16`):
            Prompts per `generate` call per process (transformers backend); each yields `n` sequences. A throughput
            knob: it is not part of the pool's identity, but sampled answers depend on it, so keep it fixed across a
            kill and resume to get the very pool an uninterrupted run gives.
        shard_size (`int`, *optional*, defaults to `64`):
            Prompts per shard; a shard (one teacher, `shard_size` prompts, `n` answers each) is the unit written to
            disk and skipped on resume.
        seed (`int`, *optional*, defaults to `0`):
            Base seed; each (teacher, shard) is seeded from it, so the pool does not depend on the process count.
        overwrite (`bool`, *optional*, defaults to `False`):
            Delete an existing pool in `output_dir` built with other arguments instead of refusing it.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Passed to `from_pretrained` / vLLM.
    """

    teachers: list[str] = field(default_factory=list, metadata={"help": "Teacher paths or key=value specs."})
    dataset_name: str | None = field(default=None, metadata={"help": "Prompt dataset (Hub id, directory or file)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Dataset split."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first rows."})
    output_dir: str | None = field(default=None, metadata={"help": "Output directory of the pool."})
    n: int = field(default=4, metadata={"help": "Answers per teacher per prompt."})
    verifier: str = field(default="exact_match", metadata={"help": "Verifier name or package.module:function."})
    tolerance: float = field(default=1e-6, metadata={"help": "Tolerance of the numeric verifier."})
    correct_threshold: float = field(default=1.0, metadata={"help": "Reward at which an answer is correct."})
    max_new_tokens: int = field(default=512, metadata={"help": "Default generation budget."})
    temperature: float = field(default=1.0, metadata={"help": "Default sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Default nucleus-sampling mass."})
    system: str | None = field(default=None, metadata={"help": "Default system message."})
    backend: str = field(default="transformers", metadata={"help": "Default backend: transformers or vllm."})
    dtype: str = field(default="auto", metadata={"help": "Default weights dtype."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "Default GPUs per vLLM teacher."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "GPU memory share for vLLM."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call per process."})
    shard_size: int = field(default=64, metadata={"help": "Prompts per shard written to disk."})
    seed: int = field(default=0, metadata={"help": "Base seed."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a pool built with other arguments."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Trust remote code when loading teachers."})

    def __post_init__(self):
        if isinstance(self.teachers, str | dict):
            self.teachers = [self.teachers]
        if not self.teachers:
            raise ValueError("Give at least one teacher (a model path, or `name=...,model=...` with settings).")
        if not self.output_dir:
            raise ValueError("Give an `output_dir` for the pool.")
        if self.n < 1:
            raise ValueError(f"n (answers per teacher per prompt) must be >= 1, got {self.n}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}.")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {self.max_prompts}.")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}.")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}.")
        verifiers = self.verifier if isinstance(self.verifier, list | tuple) else [self.verifier]
        if not verifiers or not all((isinstance(v, str) and v) or callable(v) for v in verifiers):
            raise ValueError(
                f"verifier must be a name, an import path, a callable or a list of them, got {self.verifier!r}."
            )
        defaults = {key: getattr(self, key) for key in TEACHER_DEFAULTS}
        TeacherSpec(model="defaults", name="defaults of all teachers", **defaults).check()
        self.teacher_specs = [TeacherSpec.parse(t).resolved(self) for t in self.teachers]
        names = [t.name for t in self.teacher_specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"Teacher name(s) {duplicates} appear more than once; give each teacher a distinct `name=` "
                "(e.g. `name=qwen-t07,model=...,temperature=0.7`)."
            )
        for spec in self.teacher_specs:
            if spec.temperature == 0 and self.n > 1:
                raise ValueError(
                    f"Teacher {spec.name!r} decodes greedily (temperature=0) but n={self.n}: its answers would all be "
                    "the same. Set a temperature > 0 for it or use n=1."
                )
