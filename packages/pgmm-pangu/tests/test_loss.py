"""The target-only chunked loss equals the plain full-logits cross-entropy and stays flat in memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pgmm_pangu.loss import target_cross_entropy

VOCAB, HIDDEN = 1000, 16


def batch(rows: int = 3, length: int = 20, visual: int = 6, seed: int = 0):
    """Hidden states plus labels shaped like stage 2: ignored visual prefix, targets, right padding."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, length, HIDDEN, generator=gen, requires_grad=True)
    labels = torch.randint(0, VOCAB, (rows, length), generator=gen)
    labels[:, : visual + 1] = -100  # visual tokens and BOS
    for row in range(rows):
        labels[row, length - 2 * row :] = -100  # padding
    return hidden, labels


def full_logits_loss(hidden, labels, head):
    logits = head(hidden)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


@pytest.mark.parametrize("chunk_tokens", [0, 1, 7, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_full_logits_cross_entropy_values_and_gradients(chunk_tokens, bias):
    torch.manual_seed(0)
    head = nn.Linear(HIDDEN, VOCAB, bias=bias)
    hidden, labels = batch()
    ours = target_cross_entropy(hidden, labels, head, chunk_tokens=chunk_tokens)
    ours_grads = torch.autograd.grad(ours, [hidden, *head.parameters()])
    reference = full_logits_loss(hidden, labels, head)
    reference_grads = torch.autograd.grad(reference, [hidden, *head.parameters()])
    assert abs(ours.item() - reference.item()) <= 1e-5
    for a, b in zip(ours_grads, reference_grads):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("chunk_tokens", [0, 1, 7, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_head_gradient_is_exact_and_its_backward_builds_no_logits(chunk_tokens, bias):
    """Stage 2's frozen head: the gradient computed in the forward pass equals the full-logits one
    (scaled by the incoming gradient), and the backward pass makes no ``…×vocab`` tensor at all."""
    torch.manual_seed(0)
    head = nn.Linear(HIDDEN, VOCAB, bias=bias).requires_grad_(False)
    hidden, labels = batch()
    ours = target_cross_entropy(hidden, labels, head, chunk_tokens=chunk_tokens)
    with LargestLogits() as probe:
        (ours_grad,) = torch.autograd.grad(ours * 3.0, hidden)
    reference = full_logits_loss(hidden, labels, head)
    (reference_grad,) = torch.autograd.grad(reference * 3.0, hidden)
    assert abs(ours.item() - reference.item()) <= 1e-5
    assert torch.allclose(ours_grad, reference_grad, atol=1e-6)
    assert probe.largest == 0


def test_no_targets_gives_zero_with_a_graph():
    head = nn.Linear(HIDDEN, VOCAB)
    hidden, labels = batch()
    loss = target_cross_entropy(hidden, torch.full_like(labels, -100), head)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad is not None and not hidden.grad.any()


class LargestLogits(TorchDispatchMode):
    """Records the element count of the largest logits-like tensor (``…×VOCAB``) any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == VOCAB:
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor_in_forward_and_backward(rows: int, chunk_tokens: int) -> int:
    head = nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)  # frozen LLM head, as in stage 2
    hidden, labels = batch(rows=rows, length=40, visual=6)
    with LargestLogits() as probe:
        target_cross_entropy(hidden, labels, head, chunk_tokens=chunk_tokens).backward()
    return probe.largest


def test_peak_tensor_is_one_chunk_of_logits_whatever_the_batch():
    """Never a B×T×vocab tensor: the largest is one chunk of logits, for 2 rows as for 32."""
    chunk = 32  # > HIDDEN, so that the head's transposed weight (HIDDEN×VOCAB) is smaller
    small = largest_tensor_in_forward_and_backward(rows=2, chunk_tokens=chunk)
    large = largest_tensor_in_forward_and_backward(rows=32, chunk_tokens=chunk)
    assert small == large == chunk * VOCAB
    torch.manual_seed(0)
    head = nn.Linear(HIDDEN, VOCAB, bias=False)
    hidden, labels = batch(rows=32, length=40)
    with LargestLogits() as probe:
        full_logits_loss(hidden, labels, head).backward()
    assert probe.largest >= 32 * 39 * VOCAB  # what the plain loss materialises
