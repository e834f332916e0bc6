"""The vision-encoder contract: tokens out, float32 in, frozen means frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pgmm_core.testing.contracts.base import ComponentContract, assert_satisfies, assert_trains_in_tiny_model
from pgmm_core.testing.contracts.freezing import assert_frozen, assert_trainable


class VisionEncoderContract(ComponentContract):
    """``encoder(pixel_values: B×3×S×S) -> B×N×out_features`` with ``S = encoder.image_size``.

    The encoder declares its preprocessing as ``image_spec`` (a
    :class:`~pgmm_core.preprocessing.ImageSpec` of size ``S``), and its config model gives the same
    spec without building the tower (``config.image_spec()``), so that ``data check``, ``report``
    and captioning never build a tower to learn it. The config must have a ``freeze`` field, mirrored
    by ``frozen``; ``build_model`` freezes the tower and, when it ``follows_precision_policy``, stores
    it in the run's precision (bf16/fp16), so it must accept float32 pixels whatever its own dtype.
    """

    kind: ClassVar[str] = "vision"
    batch_size: ClassVar[int] = 2

    def pixels(self, encoder: Any, batch_size: int | None = None) -> Any:
        import torch

        size = encoder.image_size
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size or self.batch_size, 3, size, size, generator=generator)

    def test_satisfies_the_protocol(self, component_instance: Any, component_config: Any) -> None:
        from torch import nn

        from pgmm_core.components import VisionEncoder

        encoder = component_instance
        assert isinstance(encoder, nn.Module)
        assert_satisfies(encoder, VisionEncoder)
        assert isinstance(encoder.out_features, int) and encoder.out_features > 0
        assert isinstance(encoder.image_size, int) and encoder.image_size > 0
        assert isinstance(encoder.frozen, bool)
        assert isinstance(encoder.follows_precision_policy, bool)
        assert "freeze" in type(component_config).model_fields, "vision configs have a `freeze: bool` field"
        assert encoder.frozen == component_config.freeze

    def test_declares_its_image_spec(self, component_instance: Any, component_config: Any) -> None:
        from pgmm_core.preprocessing import ImageSpec

        spec = getattr(component_instance, "image_spec", None)
        assert isinstance(spec, ImageSpec), (
            f"encoder.image_spec must be a pgmm_core.preprocessing.ImageSpec, got {type(spec).__name__}")
        assert spec.size == component_instance.image_size, (
            f"image_spec.size {spec.size} differs from image_size {component_instance.image_size}")
        assert ImageSpec.from_json(spec.to_json()) == spec

    def test_config_gives_the_image_spec_without_building(self, component_instance: Any,
                                                          component_config: Any) -> None:
        method = getattr(component_config, "image_spec", None)
        assert callable(method), (
            f"{type(component_config).__name__} needs an image_spec() method: the encoder's preprocessing, "
            "resolved without building the tower")
        assert method() == component_instance.image_spec, (
            f"config.image_spec() {method()} differs from the built encoder's {component_instance.image_spec}")

    def test_outputs_tokens(self, component_instance: Any) -> None:
        import torch

        encoder = component_instance.eval()
        pixels = self.pixels(encoder)
        with torch.no_grad():
            tokens = encoder(pixels)
            first = encoder(pixels[:1])
        assert isinstance(tokens, torch.Tensor) and tokens.ndim == 3, (
            f"expected B×N×{encoder.out_features} tokens, got shape {tuple(getattr(tokens, 'shape', ()))}; "
            "flatten feature maps to tokens")
        assert tokens.shape[0] == self.batch_size and tokens.shape[1] >= 1
        assert tokens.shape[2] == encoder.out_features
        assert tokens.dtype == torch.float32
        assert torch.isfinite(tokens).all()
        torch.testing.assert_close(first, tokens[:1], atol=1e-4, rtol=1e-4,
                                   msg="an image's tokens depend on the other images of the batch")

    def test_frozen_tower_stays_frozen(self, host: Any, component_config: Any) -> None:
        encoder = self.build(host, self.with_fields(component_config, freeze=True))
        assert encoder.frozen is True
        assert_frozen(encoder, lambda: encoder(self.pixels(encoder)))

    def test_unfrozen_tower_trains(self, host: Any, component_config: Any) -> None:
        encoder = self.build(host, self.with_fields(component_config, freeze=False))
        assert encoder.frozen is False
        assert_trainable(encoder, lambda: encoder(self.pixels(encoder)))

    def test_accepts_float32_pixels_when_stored_in_bfloat16(self, host: Any, component_config: Any) -> None:
        import torch

        encoder = self.build(host, self.with_fields(component_config, freeze=True)).eval()
        encoder.to(torch.bfloat16)
        with torch.no_grad():
            tokens = encoder(self.pixels(encoder))
        assert tokens.shape[0] == self.batch_size and tokens.shape[2] == encoder.out_features
        assert torch.isfinite(tokens.float()).all()

    def test_trains_in_a_tiny_model(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        assert_trains_in_tiny_model(host, tmp_path, vision=component_config.model_dump(mode="json"))

