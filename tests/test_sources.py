"""Sources (`scheme:name?options`, `trl_distill.core.sources`): the tiny world is one, resolved by the shared loaders,
so no command under `trl_distill/scripts/` knows about it (the `lab` command aside)."""

import glob
import os
import re
import subprocess
import sys

import pytest

from trl_distill.core.data import load_data
from trl_distill.core.sources import is_source, parse_source, resolve_model, resolve_source


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_command_mentions_the_lab():
    # word-wise: `lab` alone, `lab:`, `lab_...`, `--lab`, `.lab.` (not "available" or "label")
    mention = re.compile(r"(?<![a-z])lab(?![a-z])", re.IGNORECASE)
    scripts = sorted(glob.glob(os.path.join(ROOT, "trl_distill", "scripts", "*.py")))
    offenders = {}
    for path in scripts:
        if os.path.basename(path) == "lab.py":  # the lab command itself
            continue
        with open(path) as f:
            lines = [n for n, line in enumerate(f, 1) if mention.search(line)]
        if lines:
            offenders[os.path.relpath(path, ROOT)] = lines
    assert len(scripts) > 10 and offenders == {}


def test_importing_the_package_and_core_does_not_import_the_lab():
    code = (
        "import sys, trl_distill, trl_distill.core.sources, trl_distill.core.data, trl_distill.core.verifiers;"
        "print(sorted(m for m in sys.modules if m.startswith('trl_distill.lab')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_lab_name_resolves_through_the_shared_loaders():
    from trl_distill.lab.world.toys import pool_prompts, toy_pool

    assert is_source("lab:scas_pool") and not is_source("Qwen/Qwen2.5-1.5B") and not is_source("pkg.mod:fn")
    assert not is_source("http://host:8000/v1") and not is_source("./data.jsonl")
    assert parse_source("lab:scas_pool?prompts=3") == ("lab", "scas_pool", {"prompts": "3"})
    # the same rows as the lab's own builder, the option converted to the default's type
    assert load_data("lab:scas_pool?prompts=3").to_list() == toy_pool(3).to_list()
    assert load_data("lab:pool_prompts?prompts=5", split="test").to_list() == pool_prompts(5).to_list()
    model, tokenizer = resolve_model("lab:scas_student?size=xs", seed=1)
    again, _ = resolve_model("lab:scas_student?size=xs&seed=1")  # an option overrides the caller's context
    other, _ = resolve_model("lab:scas_student?size=xs", seed=2)
    first = next(model.parameters())
    assert first.equal(next(again.parameters())) and not first.equal(next(other.parameters()))
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == 64  # `xs`
    # a path that is not a source goes through unchanged
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == ("Qwen/Qwen2.5-1.5B-Instruct", None)


def test_unknown_sources_and_options_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown source 'lab:xyz'\. Known lab sources: .*lab:scas_pool \(dataset\)"):
        load_data("lab:xyz")
    with pytest.raises(ValueError, match=r"lab:scas_pool has no option 'size'; its options: \['prompts'\]"):
        load_data("lab:scas_pool?size=3")
    with pytest.raises(ValueError, match="option prompts"):
        load_data("lab:scas_pool?prompts=many")
    with pytest.raises(ValueError, match="needs prompts >= 1, got 0"):
        load_data("lab:scas_pool?prompts=0")
    with pytest.raises(ValueError, match="lab:scas_student is a model, not a dataset"):
        load_data("lab:scas_student")
    with pytest.raises(ValueError, match="is not `key=value`"):
        resolve_source("lab:scas_pool?prompts")
