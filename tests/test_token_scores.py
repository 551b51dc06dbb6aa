"""A generated token's scores (log-probability of the top k, their ids, entropy) from one step's
logits: what torch's log_softmax and a stable sort give, in every case a model's row can take."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whence_ls.engine.token_scores import token_row


def reference(logits: torch.Tensor, k: int):
    logp = torch.log_softmax(logits.double(), -1)
    entropy = float(-(logp.exp() * torch.where(torch.isinf(logp), torch.zeros_like(logp), logp)).sum())
    order = sorted(range(len(logp)), key=lambda i: (-float(logp[i]), i))[:k]  # best first, ties to the lower id
    return logp[order].numpy(), np.array(order), entropy


@pytest.mark.parametrize("case", ["peaked", "flat", "ties", "masked", "tiny vocabulary", "gaps"])
def test_the_row_is_log_softmax_top_k_and_entropy(case):
    generator = torch.Generator().manual_seed(3)
    if case == "peaked":
        logits = torch.randn(49152, generator=generator) * 2
        logits[1234] = 40.0  # the runners-up are far below: the gap must widen to find them
    elif case == "flat":
        logits = torch.randn(49152, generator=generator) * 0.01
    elif case == "ties":
        logits = torch.zeros(1000)
        logits[[900, 7, 500]] = 3.0  # equal best: the lowest id first, as argmax picks
    elif case == "masked":
        logits = torch.full((500,), float("-inf"))
        logits[[10, 20, 30]] = torch.tensor([1.0, 2.0, 0.5])
    elif case == "tiny vocabulary":
        logits = torch.tensor([0.3, -1.0, 2.0])
    else:
        logits = torch.tensor([100.0, 0.0, -100.0, -1e6, 50.0, -50.0])
    k = 5
    values, ids, entropy = token_row(logits, k)
    expected_values, expected_ids, expected_entropy = reference(logits, k)
    count = min(k, len(logits))
    assert ids.tolist() == expected_ids.tolist()[:count]
    finite = np.isfinite(expected_values)
    assert np.allclose(values.numpy()[finite], expected_values[finite], atol=1e-5)
    assert np.all(np.isneginf(values.numpy()[~finite]))
    assert abs(float(entropy) - expected_entropy) < 1e-4
    assert int(ids[0]) == int(torch.argmax(logits))
