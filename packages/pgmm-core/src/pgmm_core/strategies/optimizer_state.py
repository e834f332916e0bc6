"""Optimizer state in two forms, and the conversion between them.

* **indexed** — ``torch.optim.Optimizer.state_dict()``: parameters numbered in the order of the
  optimizer's groups. What ``single`` and ``ddp`` save: their ranks hold whole parameters.
* **named** — ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` with
  ``full_state_dict``: parameters keyed by their name in the trained module (``model.connector...``),
  every tensor whole. What ``fsdp2`` saves: it does not depend on how the parameters were sharded.

Both describe the same optimizer; converting needs the trained module (names) and the optimizer
(the order of its groups). A checkpoint written by any strategy, at any world size, thus loads
under any other.
"""

from __future__ import annotations

from typing import Any


def is_named(state: dict[str, Any]) -> bool:
    """True when ``state``'s parameters are keyed by name (the ``fsdp2`` form)."""
    groups = state.get("param_groups") or []
    return any(isinstance(p, str) for group in groups for p in group.get("params", []))


def _names_in_order(optimizer: Any, module: Any) -> list[str]:
    """The name of each of ``optimizer``'s parameters, in the order ``state_dict()`` numbers them."""
    if module is None:
        raise RuntimeError("optimizer state keyed by parameter name needs the trained module (call wrap() first)")
    by_id = {id(p): name for name, p in module.named_parameters()}
    names = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in by_id:
                raise RuntimeError("an optimizer parameter is not a parameter of the trained module")
            names.append(by_id[id(param)])
    return names


def to_named(state: dict[str, Any], optimizer: Any, module: Any) -> dict[str, Any]:
    """``state`` in the named form (returned as is when it already is)."""
    if is_named(state):
        return state
    names = _names_in_order(optimizer, module)
    return {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                         for group in state["param_groups"]],
    }


def to_indexed(state: dict[str, Any], optimizer: Any, module: Any) -> dict[str, Any]:
    """``state`` in the indexed form of ``optimizer`` (returned as is when it already is).

    The saved groups must list the same parameters as the optimizer's groups; their order inside a
    group may differ (the optimizer's order wins)."""
    if not is_named(state):
        return state
    names = _names_in_order(optimizer, module)
    index = {name: i for i, name in enumerate(names)}
    saved_groups = state["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(f"the saved optimizer state has {len(saved_groups)} parameter group(s), this "
                         f"optimizer {len(optimizer.param_groups)}")
    groups = []
    start = 0
    for saved, live in zip(saved_groups, optimizer.param_groups):
        own = names[start:start + len(live["params"])]
        start += len(live["params"])
        if sorted(saved["params"]) != sorted(own):
            missing = sorted(set(own) - set(saved["params"]))[:3]
            raise ValueError(f"the saved optimizer state does not match this model's trainable parameters "
                             f"(e.g. {missing or sorted(set(saved['params']) - set(own))[:3]})")
        groups.append({**saved, "params": [index[name] for name in own]})
    return {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}
