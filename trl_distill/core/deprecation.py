"""Renamed config fields: the old name still works for a while, with a warning that names the new one."""

import warnings


def take_deprecated(config, old: str, new: str) -> None:
    """Moves a value given under the deprecated field `old` to `new` (warning once) and clears `old`.

    The old field is declared with default `None`; giving both names with different values is an error.
    """
    value = getattr(config, old)
    if value is None:
        return
    warnings.warn(f"`{old}` is deprecated and will be removed; use `{new}` instead.", FutureWarning, stacklevel=3)
    default = type(config).__dataclass_fields__[new].default
    current = getattr(config, new)
    if current != default and current != value:
        raise ValueError(f"Both `{old}`={value!r} and `{new}`={current!r} are set; keep only `{new}`.")
    setattr(config, new, value)
    setattr(config, old, None)


def deprecated_argument(old_value, new_value, old: str, new: str, default):
    """The value of a renamed function argument: `new_value`, or `old_value` (with a warning) when the caller still
    uses the old name. Both given with different values is an error."""
    if old_value is None:
        return new_value
    warnings.warn(f"`{old}` is deprecated and will be removed; use `{new}` instead.", FutureWarning, stacklevel=3)
    if new_value != default and new_value != old_value:
        raise ValueError(f"Both `{old}`={old_value!r} and `{new}`={new_value!r} are given; keep only `{new}`.")
    return old_value
