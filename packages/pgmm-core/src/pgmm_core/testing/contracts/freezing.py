"""Frozen means frozen: what build_model does to a frozen part, and what must then hold."""

from __future__ import annotations

from typing import Any, Callable


def assert_frozen(module: Any, forward: Callable[[], Any]) -> None:
    """After :func:`pgmm_core.components.freeze`: no trainable parameters, eval mode that ``train()``
    cannot undo, outputs that carry no graph and do not change with the surrounding model's mode."""
    import torch

    from pgmm_core.components import freeze

    freeze(module)
    assert not any(p.requires_grad for p in module.parameters()), "frozen module still has trainable parameters"
    with torch.no_grad():
        reference = forward()
    module.train()
    training = [name or "(root)" for name, sub in module.named_modules() if sub.training]
    assert not training, f"train() switched frozen submodules back to training mode: {training[:5]}"
    output = forward()
    tensor = output if isinstance(output, torch.Tensor) else output[0]
    assert not tensor.requires_grad, "a frozen module's output requires grad"
    torch.testing.assert_close(tensor, reference if isinstance(reference, torch.Tensor) else reference[0],
                               msg="a frozen module gives different outputs after model.train()")


def assert_trainable(module: Any, forward: Callable[[], Any]) -> None:
    """Not frozen: parameters require grad and a backward pass reaches them."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    assert params, "an unfrozen module has no trainable parameters"
    module.train()
    output = forward()
    tensor = output if isinstance(output, torch.Tensor) else output[0]
    tensor.float().pow(2).mean().backward()
    reached = [p for p in params if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached, "backward reached none of the trainable parameters"
