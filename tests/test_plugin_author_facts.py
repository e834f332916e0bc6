"""What docs/plugins.md and the protocol docstrings tell plugin authors, checked against the code.

* ``vision_mask`` is B×N, one row per image, 1 / True = attend to the token, 0 / False = ignore it,
  integers or bools alike; the Q-Former (pgmm's reference connector) honours it per image, and the
  model itself passes no mask;
* ``freeze`` of a vision or LLM config is the only switch: ``build_model`` freezes the part, which
  then leaves the checkpoints' trainable state and the optimizer;
* ``RunView.model`` is, at the events of a training run, the run's ``MultimodalModel`` itself (not
  the strategy's wrapper and never ``None``).
"""

from __future__ import annotations

import torch

from pgmm_core import MultimodalModel, build_model
from pgmm_core.config.loading import validate_config
from pgmm_core.hookspecs import hookimpl
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config

QFORMER = {"num_query_tokens": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


def _qformer():
    from pgmm_vision.configs import QFormerConfig
    from pgmm_vision.qformer import QFormerConnector

    torch.manual_seed(0)
    return QFormerConnector(QFormerConfig(**QFORMER), encoder_width=24).eval()


def test_the_mask_is_per_image_and_one_means_attend():
    """An image padded to a batch's longer token sequence, its padding masked with 0, gets the
    queries of its own tokens alone; the other image's row of ones changes nothing for it."""
    connector = _qformer()
    generator = torch.Generator().manual_seed(1)
    short, long = torch.randn(1, 6, 24, generator=generator), torch.randn(1, 10, 24, generator=generator)
    padded = torch.cat([torch.cat([short, 100 * torch.randn(1, 4, 24, generator=generator)], dim=1), long])
    mask = torch.tensor([[1] * 6 + [0] * 4, [1] * 10])
    with torch.no_grad():
        batch = connector(padded, mask)
        alone_short, alone_long = connector(short), connector(long)
        as_bool = connector(padded, mask.bool())
        unmasked = connector(padded)
    torch.testing.assert_close(batch[:1], alone_short, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[1:], alone_long, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(as_bool, batch)
    assert not torch.allclose(unmasked[:1], alone_short, atol=1e-3), "unmasked padding must be attended to"


def test_the_model_passes_no_mask_and_freeze_is_owned_by_build_model(tmp_path):
    config = validate_config(tiny_config(tmp_path / "run"), PluginHost(environ={}), source="facts test")
    assert config.model.vision.freeze is True and config.model.llm.freeze is True
    model = build_model(config)
    masks = []
    model.connector.register_forward_pre_hook(lambda module, args, kwargs: masks.append(
        (len(args), kwargs.get("vision_mask"))), with_kwargs=True)
    model.encode_image(torch.randn(2, 3, model.vision.image_size, model.vision.image_size))
    assert masks == [(1, None)], "the model calls connector(vision_embeds) alone"
    for part in (model.vision, model.llm):
        assert part.frozen and not any(p.requires_grad for p in part.parameters())
        part.train()
        assert not any(m.training for m in part.modules()), "train() cannot undo freezing"
    trainable = model.trainable_state_dict()
    assert trainable and not any(k.startswith(("vision.", "llm.")) for k in trainable)
    assert set(model.frozen_fingerprint) == {"vision", "llm"}


class _ModelWatcher:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    @hookimpl
    def pgmm_on_train_start(self, run):
        self.seen.append(("train_start", run.model))

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        self.seen.append(("step_end", run.model))

    @hookimpl
    def pgmm_on_train_end(self, run, summary):
        self.seen.append(("train_end", run.model))


def test_run_model_is_the_runs_multimodal_model_at_every_event(tmp_path):
    from pgmm_core.train import train

    watcher = _ModelWatcher()
    host = PluginHost(environ={})
    host.register(watcher, name="watcher", distribution="pgmm-test-watcher", version="1.0")
    data = tiny_config(tmp_path / "run", train={"max_steps": 2, "log_every": 1})
    data["data"]["train"][0]["num_samples"] = 16
    data["data"]["val"] = []  # the evaluation events get the same RunView; scoring would only cost time
    train(validate_config(data, host, source="facts test"))
    events = [name for name, _ in watcher.seen]
    assert events == ["train_start", "step_end", "step_end", "train_end"]
    models = {id(model) for _, model in watcher.seen}
    assert len(models) == 1, "one model object throughout the run"
    model = watcher.seen[0][1]
    assert type(model) is MultimodalModel, f"run.model is {type(model).__name__}, not the unwrapped model"
