"""`full_shape`: the one `ds_shape` lookup (ZeRO-3 parameters are empty outside a gather)."""

import torch

from trl_distill.core.parameters import full_shape
from trl_distill.core.teachers import embedding_size, vocab_size


def test_full_shape_reads_zero3s_shape_and_falls_back_to_the_tensors():
    plain = torch.nn.Parameter(torch.zeros(7, 3))
    assert full_shape(plain) == (7, 3)
    partitioned = torch.nn.Parameter(torch.empty(0))  # what ZeRO-3 leaves outside a gather
    partitioned.ds_shape = torch.Size([11, 5])
    assert full_shape(partitioned) == (11, 5)

    model = torch.nn.Module()
    model.embed, model.head = torch.nn.Embedding(13, 4), torch.nn.Linear(4, 13, bias=False)
    model.get_input_embeddings, model.get_output_embeddings = (lambda: model.embed), (lambda: model.head)
    model.head.weight.ds_shape = torch.Size([17, 4])  # a partitioned head: its real rows, not the tensor's
    assert vocab_size(model) == 17 and embedding_size(model) == 13
