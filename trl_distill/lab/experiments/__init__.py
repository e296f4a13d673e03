"""The lab's experiments, one module each, run in this order (later ones reuse what earlier ones built)."""

import importlib


EXPERIMENTS = ("scas", "dmc", "ogls_sd", "camopd", "quantification")


def get(name: str):
    """The `run(lab, timings) -> dict` function of experiment `name`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"Unknown lab experiment {name!r}; choose from {list(EXPERIMENTS)}.")
    return importlib.import_module(f".{name}", __name__).run


def pretraining(name: str, lab) -> list:
    """The pre-training runs ([`~trl_distill.lab.world.models.Pretraining`]) experiment `name` builds before it
    compares anything, so that the lab can build them all ahead, several at once."""
    module = importlib.import_module(f".{name}", __name__)
    return module.pretraining(lab)
