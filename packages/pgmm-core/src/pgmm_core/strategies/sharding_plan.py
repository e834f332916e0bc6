"""Which modules ``fsdp2`` shards as one unit each, found from the module tree alone.

No component is named: the plan follows two structural rules that hold for every pgmm part.

* **Parts** are the largest subtrees whose parameters are all frozen or all trainable (in the
  multimodal model: the vision tower, ln_vision, connector, projector, LLM). Frozen and trainable
  parameters never share a unit, so a unit's all-gather never carries optimizer-owned weights
  beside frozen ones (the FSDP pitfall of pytorch#104690) and each can use its own mixed precision.
* **Blocks** are the children of a block list inside a part: an ``nn.ModuleList`` or ``nn.Sequential``
  of two or more modules of one class that hold parameters (an LLM's decoder layers, a ViT's blocks,
  a Q-Former's layers). Each block is a unit, so only one block's weights are whole at a time.

A part's weights are gathered around its ``forward`` and around every other public method its class
defines (an LLM backend's ``embed_tokens``, ``caption_loss``, ``generate``): the model calls parts
through those, not only through ``forward``.

A component whose repeated layers do not sit in such a container is still sharded, as one unit
(its part); it then needs its whole weights at once during its forward.

One exception to uniformity: a module that says ``sharding_part = True`` is a part although it mixes
frozen and trainable parameters — an LLM with LoRA adapters, whose every decoder layer holds frozen
projections and their trained adapters. Splitting it by uniformity would make every projection and
every adapter a unit of its own (hundreds of tiny all-gathers) and would call its LM head's weight
outside any unit; as one part, each decoder layer is one unit with its adapters. Such a part is
``mixed``: each tensor is gathered in the dtype it is stored in (frozen bf16, adapters float32),
and only the trainable ones get gradients.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from torch import nn

BLOCK_CONTAINERS = (nn.ModuleList, nn.Sequential)


@dataclass
class Part:
    """A uniform subtree: ``module``, whether its parameters train, and its blocks (in order)."""

    name: str
    module: nn.Module
    trainable: bool
    blocks: list[nn.Module] = field(default_factory=list)
    entry_points: list[str] = field(default_factory=list)
    mixed: bool = False  # frozen and trainable parameters together (``sharding_part``)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def _uniform(module: nn.Module) -> bool | None:
    """True/False when every parameter of ``module`` is trainable/frozen; None when mixed or none."""
    flags = {p.requires_grad for p in module.parameters()}
    return flags.pop() if len(flags) == 1 else None


def find_parts(root: nn.Module) -> list[Part]:
    """The largest uniform subtrees below ``root`` (``root`` itself when it is uniform)."""
    found: list[Part] = []

    def visit(name: str, module: nn.Module) -> None:
        trainable = _uniform(module)
        if trainable is not None and module is not root:
            found.append(Part(name, module, trainable, find_blocks(module), entry_points(module)))
            return
        if trainable is None and module is not root and getattr(module, "sharding_part", False) \
                and any(True for _ in module.parameters()):
            found.append(Part(name, module, True, find_blocks(module), entry_points(module), mixed=True))
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", root)
    if not found and _uniform(root) is not None:
        found.append(Part("", root, bool(_uniform(root)), find_blocks(root), entry_points(root)))
    return found


def _is_block_list(module: nn.Module) -> bool:
    children = list(module.children())
    if not isinstance(module, BLOCK_CONTAINERS) or len(children) < 2:
        return False
    first = type(children[0])
    return all(type(c) is first and any(True for _ in c.parameters()) for c in children)


def find_blocks(module: nn.Module) -> list[nn.Module]:
    """The blocks of every outermost block list inside ``module``, in module order."""
    blocks: list[nn.Module] = []

    def visit(current: nn.Module) -> None:
        for child in current.children():
            if _is_block_list(child):
                blocks.extend(child.children())
            else:
                visit(child)

    visit(module)
    return blocks


def entry_points(module: nn.Module) -> list[str]:
    """Public methods (besides ``forward``) that ``module``'s own classes define, not ``nn.Module``."""
    names: set[str] = set()
    for klass in type(module).__mro__:
        if klass in nn.Module.__mro__:
            continue
        names.update(n for n, v in vars(klass).items()
                     if inspect.isfunction(v) and not n.startswith("_") and n != "forward")
    return sorted(names)
