"""Makes the pre-trained tiny-world models the package ships: `python -m trl_distill.lab.ship`.

Pre-trains, in an empty temporary cache and without the shipped layer (`TRL_DISTILL_SHIPPED_MODELS=0`), every model the
lab's experiments build for the `default` and `quick` presets (`quick`'s also serve `smoke`), exactly as a lab run
would (`lab.world.models.prebuild`, the same cache keys), then copies each entry's weights and config into
`trl_distill/lab/world/shipped/<name>-<digest>/` and removes the shipped entries no preset uses any more. A lab run then
copies a shipped model into `$TRL_DISTILL_CACHE` instead of pre-training it; a world change that alters a key finds no
shipped entry and pre-trains as before. Run it again after such a change (and commit `shipped/`): `make demo` pre-trains
nothing only when every key of the default preset is shipped (`tests/test_lab_ship.py` checks it).
"""

import argparse
import hashlib
import os
import shutil
import tempfile


SHIPPED_PRESETS = ("default", "quick")


def preset_runs(preset_name: str, output_dir: str) -> list:
    """The distinct pre-training runs ([`~trl_distill.lab.world.models.Pretraining`]) of every lab experiment under
    the preset `preset_name`, in the lab's order."""
    from .experiments import EXPERIMENTS, pretraining
    from .experiments.common import PRESETS, Lab

    lab = Lab(PRESETS[preset_name], output_dir)
    runs = [run for name in EXPERIMENTS for run in pretraining(name, lab)]
    return list({run.path: run for run in runs}.values())


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ship(presets=SHIPPED_PRESETS, workers: int = 2, target: str | None = None, only=None) -> list[str]:
    """Pre-trains the models of `presets` from scratch and writes them into `target` (the package's `shipped/`);
    returns the shipped entry names. `only`: the model names (e.g. `lab-dmc-student`) to pre-train and ship, the other
    entries left as they are (a new or changed model without pre-training every other)."""
    import torch

    from .world import models
    from .world.tokenizer import load_or_build_tokenizer

    target = target or models.SHIPPED_DIR
    saved = {name: os.environ.get(name) for name in ("TRL_DISTILL_CACHE", "TRL_DISTILL_SHIPPED_MODELS")}
    scratch = tempfile.mkdtemp(prefix="trl-distill-ship-")
    os.environ.update(TRL_DISTILL_CACHE=os.path.join(scratch, "cache"), TRL_DISTILL_SHIPPED_MODELS="0")
    torch.set_num_threads(1)
    try:
        runs = [run for preset in presets for run in preset_runs(preset, os.path.join(scratch, "lab"))]
        runs = [run for run in runs if only is None or run.name in only]
        from .experiments.common import tokenizer_dir

        models.prebuild(load_or_build_tokenizer(tokenizer_dir()), runs, workers)
        os.makedirs(target, exist_ok=True)
        names = sorted({os.path.basename(run.path) for run in runs})
        for stale in sorted(set(os.listdir(target)) - set(names)) if only is None else []:
            shutil.rmtree(os.path.join(target, stale))
            print(f"removed {stale} (no preset uses it)")
        for run in runs:
            entry = os.path.join(target, os.path.basename(run.path))
            shutil.rmtree(entry, ignore_errors=True)
            os.makedirs(entry)
            for file in models.SHIPPED_FILES:
                shutil.copyfile(os.path.join(run.path, file), os.path.join(entry, file))
            print(f"{os.path.basename(run.path)}  sha256 {sha256(os.path.join(entry, 'model.safetensors'))[:16]}")
        return names
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trl_distill.lab.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(SHIPPED_PRESETS), help="presets whose models to ship")
    parser.add_argument("--workers", type=int, default=2, help="one-thread worker processes (the same weights)")
    parser.add_argument("--target", default=None, help="where to write them (default: the package's shipped/)")
    parser.add_argument(
        "--only", nargs="+", default=None, help="only these models (e.g. lab-dmc-student), the other entries kept"
    )
    args = parser.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    names = ship(tuple(args.presets), args.workers, args.target, args.only)
    print(f"{len(names)} models shipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
