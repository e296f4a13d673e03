"""Named sources of models, datasets and rewards: `scheme:name` or `scheme:name?option=value&...`.

Wherever a command takes a model (`--model_name_or_path`, a teacher), a dataset (`--dataset_name`, `--datasets`, a
prompt file) or a reward (`--reward`, `--verifier`), it also takes a source name; the shared loaders
([`~trl_distill.core.data.load_data`], [`resolve_model`], [`~trl_distill.core.verifiers.resolve_verifier`]) build
it through this registry, so no command needs to know where a source comes from. The tiny world registers its
students, teachers, pools and task reward under the scheme `lab` (`lab:scas_student`, `lab:scas_pool?prompts=8`,
`lab:task`); `trl-distill recipes` lists the toy recipes that name them.

A scheme's sources are registered by a module imported on first use of the scheme ([`SCHEME_MODULES`]), so importing
the package never imports the tiny world. Options after `?` are the builder's keyword arguments, converted to the type
of their default (`lab:scas_student?size=xs&seed=1`).
"""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


KINDS = ("model", "dataset", "reward")

# scheme -> the module whose import registers its sources (imported when a name of the scheme is first resolved)
SCHEME_MODULES: dict[str, str] = {"lab": "trl_distill.lab.sources"}


@dataclass(frozen=True)
class Source:
    """One registered source: its `kind` (`model`, `dataset` or `reward`), the function that builds it, and a line
    of help.

    A model builder returns `(model, tokenizer)`: `model` a path (loaded by the caller, as a user's checkpoint is) or a
    `PreTrainedModel`, `tokenizer` the tokenizer or `None` (then loaded from the path). A dataset builder takes `split`
    and returns a `Dataset`. A reward builder returns a reward function with TRL's signature.
    """

    kind: str
    build: Callable[..., Any]
    help: str = ""


_REGISTRY: dict[str, dict[str, Source]] = {}


def register_source(scheme: str, name: str, kind: str, build: Callable[..., Any], help: str = "") -> None:
    """Registers `build` as the source `scheme:name` of `kind` (`model`, `dataset` or `reward`)."""
    if kind not in KINDS:
        raise ValueError(f"Source kind must be one of {KINDS}, got {kind!r} for {scheme}:{name}.")
    if not callable(build):
        raise TypeError(f"The builder of source {scheme}:{name} must be callable, got {type(build).__name__}.")
    _REGISTRY.setdefault(scheme, {})[name] = Source(kind, build, help)


def is_source(value) -> bool:
    """Whether `value` is a source name: a string `scheme:...` of a known scheme (not a path, URL or import path)."""
    if not isinstance(value, str) or ":" not in value:
        return False
    scheme = value.split(":", 1)[0]
    return scheme in SCHEME_MODULES or scheme in _REGISTRY


def sources(scheme: str) -> dict[str, Source]:
    """The registered sources of `scheme` by name (importing the scheme's module first)."""
    if scheme in SCHEME_MODULES:
        importlib.import_module(SCHEME_MODULES[scheme])
    if scheme not in _REGISTRY:
        raise ValueError(f"Unknown source scheme {scheme!r}; known: {sorted({*SCHEME_MODULES, *_REGISTRY})}.")
    return _REGISTRY[scheme]


def parse_source(value: str) -> tuple[str, str, dict[str, str]]:
    """`"lab:scas_pool?prompts=8"` -> `("lab", "scas_pool", {"prompts": "8"})`."""
    scheme, _, rest = value.partition(":")
    name, _, query = rest.partition("?")
    options = {}
    for item in filter(None, query.split("&")):
        key, sep, option = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Source {value!r}: option {item!r} is not `key=value`.")
        options[key] = option
    return scheme, name, options


def _convert(value: str, default):
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(default, (int, float)):
        return type(default)(value)
    return value


def resolve_source(value: str, kind: str | None = None, **context):
    """
    Builds the source `value` (`scheme:name?option=value&...`).

    Args:
        value (`str`): the source name.
        kind (`str`, *optional*): the kind the caller expects (`model`, `dataset`, `reward`); another kind is refused.
        **context: keyword arguments the caller offers (`split`, `seed`); each is passed when the builder takes it,
            and options of the name override them (except `split`, which only the caller sets).

    Raises:
        `ValueError`: naming the known sources for an unknown name, and the builder's options for an unknown option.
    """
    scheme, name, options = parse_source(value)
    known = sources(scheme)
    if name not in known:
        listing = ", ".join(f"{scheme}:{n} ({s.kind})" for n, s in sorted(known.items()))
        raise ValueError(f"Unknown source {value!r}. Known {scheme} sources: {listing}.")
    source = known[name]
    if kind is not None and source.kind != kind:
        raise ValueError(f"Source {scheme}:{name} is a {source.kind}, not a {kind}: give a {kind} source here.")
    parameters = inspect.signature(source.build).parameters
    kwargs = {key: item for key, item in context.items() if key in parameters}
    for key, option in options.items():
        if key not in parameters or key == "split":
            settable = [p for p in parameters if p != "split"]
            raise ValueError(f"Source {scheme}:{name} has no option {key!r}; its options: {settable}.")
        try:
            kwargs[key] = _convert(option, parameters[key].default)
        except ValueError as error:
            raise ValueError(f"Source {value!r}: option {key}: {error}.") from None
    return source.build(**kwargs)


def resolve_model(name: str | None, what: str = "model (--model_name_or_path)", **context) -> tuple[Any, Any]:
    """
    The model `name` names, as `(model, tokenizer)`: a source's model (a path or a `PreTrainedModel`) and tokenizer,
    or for anything else `(name, None)` after checking that a local-looking path exists. Raises, naming `what`,
    when `name` is missing.
    """
    from .data import check_local_path

    if not name:
        raise ValueError(
            f"Give the {what}: a local directory, a Hub id or a source (`lab:...`, see `trl-distill recipes`)."
        )
    if is_source(name):
        return resolve_source(name, kind="model", **context)
    check_local_path(name, what)
    return name, None


def resolve_model_path(name: str, what: str = "model", **context) -> str:
    """[`resolve_model`]'s model for a caller that needs a path (a teacher, a pool builder's model)."""
    model, _ = resolve_model(name, what, **context)
    if not isinstance(model, str):
        raise ValueError(f"The {what} {name!r} is built in memory; give a source that is a checkpoint here.")
    return model
