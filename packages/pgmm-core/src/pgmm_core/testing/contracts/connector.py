"""The connector contract: a fixed number of query tokens from any number of vision tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from pgmm_core.testing.contracts.base import ComponentContract, assert_satisfies, assert_trains_in_tiny_model
from pgmm_core.testing.contracts.freezing import assert_frozen


class ConnectorContract(ComponentContract):
    """``connector(vision_embeds: B×N×W, vision_mask: B×N | None) -> B×Q×out_features``.

    ``W`` is the ``encoder_width`` the factory received. Masked vision tokens must not influence the
    output, gradients must reach the vision embeddings (``ln_vision`` before it is trained), a config
    with ``freeze: true`` gives a connector that says ``frozen`` (``build_model`` freezes it; the
    factory does not), and ``pretrained_vision_norm()`` is ``None`` or an ``ln_vision`` state dict.
    """

    kind: ClassVar[str] = "connector"
    encoder_width: ClassVar[int] = 24
    num_vision_tokens: ClassVar[int] = 10
    batch_size: ClassVar[int] = 2

    def build_context(self) -> dict[str, Any]:
        return {"encoder_width": self.encoder_width}

    def vision_embeds(self) -> Any:
        import torch

        generator = torch.Generator().manual_seed(0)
        return torch.randn(self.batch_size, self.num_vision_tokens, self.encoder_width, generator=generator)

    def test_satisfies_the_protocol(self, component_instance: Any) -> None:
        from torch import nn

        from pgmm_core.components import Connector

        assert isinstance(component_instance, nn.Module)
        assert_satisfies(component_instance, Connector)
        assert isinstance(component_instance.out_features, int) and component_instance.out_features > 0
        assert isinstance(component_instance.num_query_tokens, int) and component_instance.num_query_tokens > 0
        assert isinstance(component_instance.frozen, bool)

    def test_frozen_follows_the_config(self, component_instance: Any, component_config: Any) -> None:
        expected = bool(getattr(component_config, "freeze", False))
        assert component_instance.frozen is expected, (
            f"frozen must be the config's freeze ({expected}); without a freeze field, False")

    def test_pretrained_vision_norm(self, component_instance: Any) -> None:
        import torch

        norm = component_instance.pretrained_vision_norm()
        if norm is None:
            return
        assert set(norm) == {"weight", "bias"}, f"an ln_vision state dict has weight and bias, got {sorted(norm)}"
        assert all(isinstance(t, torch.Tensor) and t.shape == (self.encoder_width,) for t in norm.values())

    def test_outputs_query_tokens(self, component_instance: Any) -> None:
        import torch

        connector = component_instance.eval()
        embeds = self.vision_embeds()
        with torch.no_grad():
            queries = connector(embeds)
            first = connector(embeds[:1])
        assert queries.shape == (self.batch_size, connector.num_query_tokens, connector.out_features)
        assert queries.dtype == torch.float32 and torch.isfinite(queries).all()
        torch.testing.assert_close(first, queries[:1], atol=1e-5, rtol=1e-4,
                                   msg="an image's queries depend on the other images of the batch")

    def test_masked_vision_tokens_are_ignored(self, component_instance: Any) -> None:
        import torch

        connector = component_instance.eval()
        embeds = self.vision_embeds()
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        mask[:, -3:] = 0
        changed_masked = embeds.clone()
        changed_masked[:, -3:] += 5.0
        changed_visible = embeds.clone()
        changed_visible[:, 0] += 5.0
        with torch.no_grad():
            unmasked = connector(embeds)
            all_ones = connector(embeds, torch.ones_like(mask))
            reference = connector(embeds, mask)
            masked_change = connector(changed_masked, mask)
            visible_change = connector(changed_visible, mask)
        torch.testing.assert_close(all_ones, unmasked, msg="an all-ones mask must equal no mask")
        torch.testing.assert_close(masked_change, reference, atol=1e-5, rtol=1e-4,
                                   msg="masked vision tokens changed the output")
        assert not torch.allclose(visible_change, reference), "the output ignores the vision tokens"

    def test_gradients_reach_vision_embeddings_and_parameters(self, host: Any, component_config: Any) -> None:
        from pgmm_core.components import freeze

        connector = self.build(host, component_config)
        if connector.frozen:
            freeze(connector)  # as build_model does
        connector.train()
        embeds = self.vision_embeds().requires_grad_(True)
        connector(embeds).pow(2).mean().backward()
        assert embeds.grad is not None and embeds.grad.abs().sum() > 0, (
            "no gradient reaches the vision embeddings (ln_vision before the connector is trained)")
        trainable = [p for p in connector.parameters() if p.requires_grad]
        if connector.frozen:
            assert not trainable
        else:
            assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)

    def test_freeze_field_freezes(self, host: Any, component_config: Any) -> None:
        if "freeze" not in type(component_config).model_fields:
            pytest.skip("this connector has no `freeze` option")
        connector = self.build(host, self.with_fields(component_config, freeze=True))
        assert connector.frozen is True, "freeze: true must give frozen = True"
        assert_frozen(connector, lambda: connector(self.vision_embeds()))  # frozen as build_model freezes it

    def test_trains_in_a_tiny_model(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        assert_trains_in_tiny_model(host, tmp_path, connector=component_config.model_dump(mode="json"))
