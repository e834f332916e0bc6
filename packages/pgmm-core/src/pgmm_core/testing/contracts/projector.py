"""The projector contract: query tokens from connector width to LLM width."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pgmm_core.testing.contracts.base import ComponentContract, assert_trains_in_tiny_model


class ProjectorContract(ComponentContract):
    """``projector(B×Q×in_features) -> B×Q×out_features``, built with ``in_features``/``out_features``."""

    kind: ClassVar[str] = "projector"
    in_features: ClassVar[int] = 24
    out_features: ClassVar[int] = 40
    num_tokens: ClassVar[int] = 4

    def build_context(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def test_projects_each_token(self, component_instance: Any) -> None:
        import torch
        from torch import nn

        projector = component_instance
        assert isinstance(projector, nn.Module)
        tokens = torch.randn(2, self.num_tokens, self.in_features, generator=torch.Generator().manual_seed(0))
        tokens.requires_grad_(True)
        out = projector(tokens)
        assert out.shape == (2, self.num_tokens, self.out_features) and out.dtype == torch.float32
        out.pow(2).mean().backward()
        assert tokens.grad is not None and tokens.grad.abs().sum() > 0, "no gradient reaches the connector"
        with torch.no_grad():
            torch.testing.assert_close(projector(tokens[:1, :1]), out[:1, :1].detach(),
                                       msg="a token's projection depends on the other tokens")

    def test_trains_in_a_tiny_model(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        assert_trains_in_tiny_model(host, tmp_path, projector=component_config.model_dump(mode="json"))
