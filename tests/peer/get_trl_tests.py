"""Writes a pinned copy of TRL's own tests (the installed version's) under tests/peer/trl_tests/, for the peer harness.

TRL's tests are not in the wheel, and (checked for 1.16.0) not in the PyPI sdist either: this script first tries the
sdist (`pip download trl==<installed> --no-binary :all: --no-deps`) and, when it has no `tests/`, reads them from a
local git clone or mirror of https://github.com/huggingface/trl at a given ref (`--git-dir`, `--ref`).

The default ref is pinned: TRL has no `v1.16.0` tag in the public history we could read, and no commit there carries
the installed 1.16.0 tree. The nearest is `cd86b617d77bfad301248b54763204af6d708c33` ("conversational by default",
2026-07-15, on the branch that promoted `DistillationTrainer` to `trl/trainer/`): its `tests/test_distillation_trainer.py`
imports `trl.trainer.distillation_trainer._chunked_divergence_loss` as 1.16.0 ships it, and it collects the 116 + 28
tests the issue measured. Nothing is downloaded at test time: the harness skips when the copy is absent.

    python tests/peer/get_trl_tests.py                       # sdist, if it ships tests
    python tests/peer/get_trl_tests.py --git-dir /path/to/trl/.git            # the pinned ref (PINNED_REF)
    python tests/peer/get_trl_tests.py --git-dir /path/to/trl/.git --ref v1.16.0
"""

import argparse
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path


FILES = ("tests/test_sft_trainer.py", "tests/testing_utils.py", "tests/test_distillation_trainer.py")
TARGET = Path(__file__).parent / "trl_tests"
PINNED_REF = "cd86b617d77bfad301248b54763204af6d708c33"


def from_sdist(trl_version: str) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"trl=={trl_version}", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*cmd, "-d", tmp], check=True, capture_output=True)
        (archive,) = Path(tmp).glob("trl-*.tar.gz")
        with tarfile.open(archive) as tar:
            members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            return {name: tar.extractfile(members[name]).read() for name in FILES if name in members}


def from_git(git_dir: str, ref: str) -> dict[str, bytes]:
    out = {}
    for name in FILES:
        shown = subprocess.run(["git", "--git-dir", git_dir, "show", f"{ref}:{name}"], capture_output=True)
        if shown.returncode == 0:
            out[name] = shown.stdout
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--git-dir", help="a git clone/mirror of huggingface/trl (its .git directory)")
    parser.add_argument("--ref", default=PINNED_REF, help=f"the commit or tag to read (default {PINNED_REF})")
    args = parser.parse_args()
    trl_version = version("trl")
    files = from_git(args.git_dir, args.ref) if args.git_dir else from_sdist(trl_version)
    if "tests/test_sft_trainer.py" not in files:
        where = f"{args.git_dir} at {args.ref}" if args.git_dir else f"the trl {trl_version} sdist"
        sys.exit(f"{where} has no tests/test_sft_trainer.py; pass --git-dir/--ref of a TRL clone that has it.")
    TARGET.mkdir(exist_ok=True)
    (TARGET / "__init__.py").write_bytes(b"")
    for name, data in files.items():
        (TARGET / Path(name).name).write_bytes(data)
    source = args.ref if args.git_dir else "sdist"
    (TARGET / "PINNED").write_text(f"trl {trl_version}; source {source}; files {sorted(files)}\n")
    print(f"wrote {sorted(files)} to {TARGET}")


if __name__ == "__main__":
    main()
