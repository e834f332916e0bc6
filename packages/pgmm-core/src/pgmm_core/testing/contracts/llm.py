"""The LLM-backend contract: embeddings in, target-only loss and new token ids out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pgmm_core.testing.contracts.base import ComponentContract, assert_satisfies, assert_trains_in_tiny_model
from pgmm_core.testing.contracts.freezing import assert_frozen, assert_trainable

IGNORE_INDEX = -100


class LLMBackendContract(ComponentContract):
    """A causal LM driven by ``inputs_embeds`` (see :class:`pgmm_core.components.LLMBackend`).

    ``caption_loss`` must equal the mean next-token cross-entropy of the full logits over labelled
    positions and ``sequence_loss`` its per-row sums; ``generate`` must return only new token ids,
    decoded with exactly the given settings, and hand each new token to a ``streamer`` when given one.
    Both are compared with :meth:`full_logits`, which by default calls ``backend.model`` (a
    transformers causal LM); a backend built otherwise overrides it.
    """

    kind: ClassVar[str] = "llm"
    sample_texts: ClassVar[tuple[str, str]] = ("a red circle in the top left", "a blue square")
    """Two short texts the tokenizer must round-trip exactly (lower-case words from its vocabulary)."""

    def full_logits(self, backend: Any, inputs_embeds: Any, attention_mask: Any) -> Any:
        """B×T×vocab logits of the whole sequence, the reference for the loss and for greedy decoding."""
        return backend.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits

    def caption_batch(self, backend: Any) -> tuple[Any, Any, Any]:
        """Two right-padded ``[BOS] text [EOS]`` rows: input ids, attention mask, labels (BOS ignored)."""
        import torch

        tok = backend.tokenizer
        rows = [tok.encode(text, add_bos=True) + [tok.eos_token_id] for text in self.sample_texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, 1 : len(row)] = torch.tensor(row[1:])
        return ids, mask, labels

    # --- attributes and tokenizer ---------------------------------------------------------------

    def test_satisfies_the_protocol(self, component_instance: Any, component_config: Any) -> None:
        from torch import nn

        from pgmm_core.components import LLMBackend, Tokenizer

        backend = component_instance
        assert isinstance(backend, nn.Module)
        assert_satisfies(backend, LLMBackend)
        assert isinstance(backend.hidden_size, int) and backend.hidden_size > 0
        assert isinstance(backend.frozen, bool)
        assert isinstance(backend.follows_precision_policy, bool)
        assert "freeze" in type(component_config).model_fields, "LLM configs have a `freeze: bool` field"
        assert backend.frozen == component_config.freeze
        tok = backend.tokenizer
        assert_satisfies(tok, Tokenizer)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "vocab_size"):
            assert isinstance(getattr(tok, name), int), f"tokenizer.{name} must be an int"
        assert max(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) < tok.vocab_size

    def test_tokenizer_round_trips_text(self, component_instance: Any) -> None:
        tok = component_instance.tokenizer
        for text in self.sample_texts:
            plain = tok.encode(text, add_bos=False)
            with_bos = tok.encode(text, add_bos=True)
            assert plain and all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in plain)
            assert with_bos[len(with_bos) - len(plain):] == plain and len(with_bos) - len(plain) in (0, 1)
            if len(with_bos) > len(plain):
                assert with_bos[0] == tok.bos_token_id
            assert tok.eos_token_id not in plain, "encode must not append EOS (the model adds it to captions)"
            assert tok.decode(with_bos + [tok.eos_token_id], skip_special_tokens=True) == text

    # --- embeddings and loss --------------------------------------------------------------------

    def test_embed_tokens(self, component_instance: Any) -> None:
        import torch

        backend = component_instance
        ids, _, _ = self.caption_batch(backend)
        with torch.no_grad():
            embeds = backend.embed_tokens(ids)
            single = backend.embed_tokens(ids[:1, :1])
        assert embeds.shape == (*ids.shape, backend.hidden_size) and embeds.dtype.is_floating_point
        torch.testing.assert_close(single[0, 0], embeds[0, 0])

    def test_caption_loss_equals_full_logits_cross_entropy(self, component_instance: Any) -> None:
        import torch
        import torch.nn.functional as F

        backend = component_instance.eval()
        ids, mask, labels = self.caption_batch(backend)
        with torch.no_grad():
            embeds = backend.embed_tokens(ids)
            loss = backend.caption_loss(embeds, mask, labels)
            logits = self.full_logits(backend, embeds, mask).float()
        reference = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        assert loss.ndim == 0 and loss.dtype == torch.float32, (loss.shape, loss.dtype)
        torch.testing.assert_close(loss, reference, atol=1e-4, rtol=1e-4)
        nothing = torch.full_like(labels, IGNORE_INDEX)
        with torch.no_grad():
            empty = backend.caption_loss(embeds, mask, nothing)
        assert torch.isfinite(empty) and float(empty) == 0.0, "a batch without targets must give loss 0, not NaN"

    def test_sequence_loss_is_each_rows_summed_cross_entropy(self, component_instance: Any) -> None:
        import torch
        import torch.nn.functional as F

        backend = component_instance.eval()
        ids, mask, labels = self.caption_batch(backend)
        with torch.no_grad():
            embeds = backend.embed_tokens(ids)
            losses = backend.sequence_loss(embeds, mask, labels)
            logits = self.full_logits(backend, embeds, mask).float()
            mean = backend.caption_loss(embeds, mask, labels)
        assert losses.shape == (ids.shape[0],) and losses.dtype == torch.float32
        for row in range(ids.shape[0]):
            reference = F.cross_entropy(logits[row, :-1], labels[row, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
            torch.testing.assert_close(losses[row], reference, atol=1e-4, rtol=1e-4)
        targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
        torch.testing.assert_close(losses.sum() / targets, mean, atol=1e-4, rtol=1e-4)
        embeds = embeds.detach().requires_grad_(True)
        backend.sequence_loss(embeds, mask, labels)[1].backward()
        assert embeds.grad[1].abs().sum() > 0 and embeds.grad[0].abs().sum() == 0, (
            "a row's loss depends on that row only")

    def test_generate_streams_each_new_token(self, component_instance: Any) -> None:
        from pgmm_core.config.sections import GenerationSection

        class Collect:
            def __init__(self) -> None:
                self.ids: list[int] = []
                self.ended = False

            def put(self, value: Any) -> None:
                self.ids.extend(int(t) for t in value.reshape(-1).tolist())

            def end(self) -> None:
                self.ended = True

        backend = component_instance.eval()
        embeds, mask = self._prompt(backend)
        settings = GenerationSection(num_beams=1, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        streamer = Collect()
        rows = backend.generate(embeds[:1], mask[:1], settings, streamer=streamer)
        assert streamer.ended, "the streamer is told when generation ends"
        assert streamer.ids == rows[0] == backend.generate(embeds[:1], mask[:1], settings)[0], (
            "the streamer receives exactly the generated tokens, one step at a time")

    def test_loss_gradients_reach_inputs_not_frozen_weights(self, host: Any, component_config: Any) -> None:

        from pgmm_core.components import freeze

        backend = freeze(self.build(host, self.with_fields(component_config, freeze=True)))
        ids, mask, labels = self.caption_batch(backend)
        embeds = backend.embed_tokens(ids).detach().requires_grad_(True)
        backend.caption_loss(embeds, mask, labels).backward()
        assert embeds.grad is not None and embeds.grad.abs().sum() > 0, (
            "no gradient reaches inputs_embeds: the projector before a frozen LLM could not train")
        assert all(p.grad is None for p in backend.parameters())

    # --- generation -----------------------------------------------------------------------------

    def _prompt(self, backend: Any) -> tuple[Any, Any]:
        import torch

        tok = backend.tokenizer
        ids = torch.tensor([tok.encode(self.sample_texts[0], add_bos=True)] * 2)
        with torch.no_grad():
            embeds = backend.embed_tokens(ids)
        embeds = embeds + torch.randn(embeds.shape, generator=torch.Generator().manual_seed(1)).to(embeds.dtype)
        return embeds, torch.ones(ids.shape, dtype=torch.long)

    def test_generate_returns_new_ids_only(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.config.sections import GenerationSection

        backend = component_instance.eval()
        tok = backend.tokenizer
        steps = 4
        embeds, mask = self._prompt(backend)
        settings = GenerationSection(num_beams=1, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        generated = backend.generate(embeds, mask, settings)
        # Greedy reference from the full logits; EOS is suppressed because min_new_tokens == steps.
        expected: list[list[int]] = [[] for _ in range(embeds.shape[0])]
        current, current_mask = embeds, mask
        with torch.no_grad():
            for _ in range(steps):
                logits = self.full_logits(backend, current, current_mask)[:, -1].float()
                logits[:, tok.eos_token_id] = float("-inf")
                next_ids = logits.argmax(dim=-1)
                for row, token in zip(expected, next_ids.tolist()):
                    row.append(token)
                current = torch.cat([current, backend.embed_tokens(next_ids[:, None]).to(current.dtype)], dim=1)
                current_mask = torch.cat([current_mask, torch.ones_like(current_mask[:, :1])], dim=1)
        expected = [[t for t in row if t != tok.pad_token_id] for row in expected]
        assert generated == expected, (
            "generate() must return only the new tokens of greedy decoding with the given settings "
            f"(got {generated}, greedy from the full logits gives {expected})")

    def test_generate_shapes_and_special_tokens(self, component_instance: Any) -> None:
        from pgmm_core.config.sections import GenerationSection

        backend = component_instance.eval()
        tok = backend.tokenizer
        embeds, mask = self._prompt(backend)
        settings = GenerationSection(num_beams=2, num_return_sequences=2, max_new_tokens=5, min_new_tokens=1)
        rows = backend.generate(embeds, mask, settings)
        assert isinstance(rows, list) and len(rows) == embeds.shape[0] * 2
        for row in rows:
            assert isinstance(row, list) and len(row) <= 5 and all(isinstance(t, int) for t in row)
            # generation stops at EOS and drops what follows it (padding of finished beams); a pad id
            # may still occur as an ordinary token (openPangu's pad is <unk>), so it is not checked
            assert tok.eos_token_id not in row

    # --- freezing and the model -----------------------------------------------------------------

    def test_frozen_backend_stays_frozen(self, host: Any, component_config: Any) -> None:
        backend = self.build(host, self.with_fields(component_config, freeze=True))
        assert backend.frozen is True
        ids, mask, labels = self.caption_batch(backend)
        assert_frozen(backend, lambda: backend.caption_loss(backend.embed_tokens(ids), mask, labels))

    def test_unfrozen_backend_trains(self, host: Any, component_config: Any) -> None:
        backend = self.build(host, self.with_fields(component_config, freeze=False))
        assert backend.frozen is False
        ids, mask, labels = self.caption_batch(backend)
        assert_trainable(backend, lambda: backend.caption_loss(backend.embed_tokens(ids), mask, labels))

    def test_trains_in_a_tiny_model(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        assert_trains_in_tiny_model(host, tmp_path, llm=component_config.model_dump(mode="json"))
