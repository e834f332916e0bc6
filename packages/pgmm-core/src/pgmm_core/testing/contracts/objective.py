"""The objective contract: parts, batches, a loss that trains the model, an evaluation every rank agrees on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pgmm_core.testing.contracts.base import ComponentContract


class ObjectiveContract(ComponentContract):
    """An :class:`~pgmm_core.objectives.base.Objective` checked on the tiny model and data.

    The objective is put in the ``objective`` slot of the tiny config (:meth:`tiny_sections` changes
    other sections, e.g. a dataset the objective needs); ``build_model`` builds the parts it asks
    for; its ``collate`` batches the train split, its ``loss`` must give a finite scalar whose
    gradients reach trainable parameters and no frozen one, and its ``evaluate`` must return
    JSON-native results and metrics for the val split (single process).
    """

    kind: ClassVar[str] = "objective"
    batch_size: ClassVar[int] = 4

    def tiny_sections(self) -> dict[str, Any]:
        """Sections of :func:`pgmm_core.testing.tiny_config` to replace for this objective."""
        return {}

    def tiny_run_config(self, host: Any, component_config: Any, tmp_path: Path) -> Any:
        from pgmm_core.config.loading import validate_config
        from pgmm_core.testing import tiny_config

        data = tiny_config(tmp_path / "run", **self.tiny_sections())
        data["objective"] = component_config.model_dump(mode="json")
        return validate_config(data, host, source="contract")

    def dataset(self, config: Any, model: Any, split: str) -> Any:
        datasets = config.data.train if split == "train" else config.data.val
        spec = model.vision.image_spec
        return config.host.build("dataset", datasets[0], split=split, image_spec=spec, image_size=spec.size)

    def model(self, config: Any) -> Any:
        import torch

        from pgmm_core.model import build_model

        torch.manual_seed(0)
        return build_model(config)

    # --- the protocol ---------------------------------------------------------------------------

    def test_satisfies_the_protocol(self, component_instance: Any) -> None:
        from pgmm_core.model import check_parts
        from pgmm_core.objectives.base import MODEL_PARTS, Objective

        objective = component_instance
        assert isinstance(objective, Objective), "needs parts, collate, loss and evaluate"
        assert isinstance(objective.parts, frozenset) and objective.parts, "parts: a non-empty frozenset"
        assert objective.parts <= MODEL_PARTS, f"unknown parts {sorted(objective.parts - MODEL_PARTS)}"
        check_parts(objective.parts)  # buildable: a connector needs the tower, a projector connector + LLM

    def test_builds_only_its_parts(self, host: Any, component_config: Any, component_instance: Any,
                                   tmp_path: Path) -> None:
        config = self.tiny_run_config(host, component_config, tmp_path)
        model = self.model(config)
        assert model.parts == component_instance.parts
        for part in ("vision", "connector", "projector", "llm"):
            assert (getattr(model, part) is not None) == (part in component_instance.parts), part

    # --- batches and the loss -------------------------------------------------------------------

    def test_collate_drops_and_counts_unreadable_items(self, host: Any, component_config: Any,
                                                       component_instance: Any, tmp_path: Path) -> None:
        config = self.tiny_run_config(host, component_config, tmp_path)
        model = self.model(config)
        dataset = self.dataset(config, model, "train")
        samples = [dataset[i] for i in range(self.batch_size)] + [{"bad": "broken.jpg: truncated"}]
        batch = component_instance.collate(samples)
        assert len(batch) == self.batch_size
        assert list(batch.bad) == ["broken.jpg: truncated"] and batch.size_before_drop == self.batch_size + 1
        empty = component_instance.collate([{"bad": "a.jpg: unreadable"}, {"bad": "b.jpg: unreadable"}])
        assert len(empty) == 0 and len(empty.bad) == 2 and empty.size_before_drop == 2

    def test_loss_trains_the_model(self, host: Any, component_config: Any, component_instance: Any,
                                   tmp_path: Path) -> None:
        import torch

        from pgmm_core.objectives.base import LossOutput, ObjectiveModule

        config = self.tiny_run_config(host, component_config, tmp_path)
        model = self.model(config)
        dataset = self.dataset(config, model, "train")
        batch = component_instance.collate([dataset[i] for i in range(self.batch_size)])
        module = ObjectiveModule(model, component_instance).train()
        assert {name.split(".")[0] for name, _ in module.named_parameters()} == {"model"}, (
            "an objective holds no parameters: what trains belongs to the model")
        output = module(batch)
        assert isinstance(output, LossOutput)
        assert output.loss.ndim == 0 and output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
        assert output.loss.requires_grad, "the loss carries no graph"
        assert isinstance(output.num_targets, int) and output.num_targets > 0
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in output.parts.items())
        output.loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), "no gradient reached the model"
        frozen = [name for name, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert not frozen, f"frozen weights got gradients: {frozen[:5]}"

    # --- evaluation -----------------------------------------------------------------------------

    def test_evaluate_returns_json_results_and_metrics(self, host: Any, component_config: Any,
                                                       component_instance: Any, tmp_path: Path) -> None:
        import torch

        from pgmm_core.devices.base import PrecisionPolicy
        from pgmm_core.devices.collectives import GLOO_RULES, Collectives
        from pgmm_core.objectives.base import EvalContext, EvalOutput

        config = self.tiny_run_config(host, component_config, tmp_path)
        model = self.model(config)
        dataset = self.dataset(config, model, "val")
        context = EvalContext(device=torch.device("cpu"), policy=PrecisionPolicy.for_precision("fp32", "cpu"),
                              collectives=Collectives(GLOO_RULES), batch_size=self.batch_size, num_workers=0,
                              eval=config.eval)
        model.train()
        output = component_instance.evaluate(model, dataset, context)
        assert model.training, "evaluate must leave the model in the mode it found it in"
        assert isinstance(output, EvalOutput) and isinstance(output.name, str)
        assert isinstance(output.results, list) and output.results
        json.dumps(output.results)
        assert isinstance(output.metrics, dict) and output.metrics
        json.dumps(output.metrics)
        assert output.bad_images == 0
