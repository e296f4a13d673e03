"""Facts about a model's parameters that hold under DeepSpeed ZeRO-3, where a partitioned parameter is an empty
tensor outside a gather."""

import torch


def full_shape(parameter: torch.Tensor) -> torch.Size:
    """The shape of `parameter` as the model defines it: ZeRO-3 keeps it in `ds_shape` (the tensor itself is empty
    outside a gather); any other parameter's own `shape`."""
    return getattr(parameter, "ds_shape", parameter.shape)
