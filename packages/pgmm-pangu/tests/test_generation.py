"""Generation from inputs_embeds: explicit settings, new tokens only, EOS, lengths, beams, sampling."""

from __future__ import annotations

import pytest
import torch

from pgmm_core.config.sections import GenerationSection
from pgmm_pangu.backend import build_openpangu
from pgmm_pangu.configs import OpenPanguConfig


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return build_openpangu(OpenPanguConfig(path=str(tiny_dir)))


@pytest.fixture(scope="module")
def prompt(backend):
    """Two rows of [4 visual vectors | BOS "a"], as MultimodalModel.generate builds them."""
    tok = backend.tokenizer
    ids = torch.tensor([tok.encode("a")] * 2)
    visual = torch.randn(2, 4, backend.hidden_size, generator=torch.Generator().manual_seed(1)) * 3
    embeds = torch.cat([visual, backend.embed_tokens(ids)], dim=1).detach()
    return embeds, torch.ones(embeds.shape[:2], dtype=torch.long)


# transformers notes that with inputs_embeds alone the penalty covers generated tokens only (intended)
penalty_note = pytest.mark.filterwarnings("ignore:Passing `repetition_penalty`:UserWarning")


def settings(**overrides) -> GenerationSection:
    return GenerationSection(**({"num_beams": 1, "max_new_tokens": 12, "min_new_tokens": 0} | overrides))


def manual_greedy(backend, embeds, steps):
    """Argmax over a full re-forward at every step: no cache, no generate()."""
    rows = []
    with torch.no_grad():
        for row in embeds:
            current, new = row[None], []
            for _ in range(steps):
                token = backend.model(inputs_embeds=current).logits[0, -1].argmax().item()
                new.append(token)
                current = torch.cat([current, backend.embed_tokens(torch.tensor([[token]]))], dim=1)
            rows.append(new)
    return rows


def test_greedy_returns_the_new_tokens_from_the_first_one(backend, prompt):
    """The release's generation_config.json says do_sample/top_p 0.8; greedy must still be greedy."""
    expected = manual_greedy(backend, prompt[0], 12)
    assert all(backend.tokenizer.eos_token_id not in row for row in expected)
    assert backend.generate(*prompt, settings()) == expected
    assert backend.generate(*prompt, settings(max_new_tokens=5)) == [row[:5] for row in expected]


def test_stops_at_eos_and_min_new_tokens_holds_it_back(backend, prompt, monkeypatch):
    first = backend.generate(*prompt, settings(max_new_tokens=3))
    monkeypatch.setattr(backend.tokenizer, "eos_token_id", first[0][1])  # EOS = row 0's second token
    stopped = backend.generate(*prompt, settings(max_new_tokens=3))
    assert stopped[0] == first[0][:1]  # cut before EOS
    held_back = backend.generate(*prompt, settings(max_new_tokens=3, min_new_tokens=3))
    assert len(held_back[0]) == 3 and first[0][1] not in held_back[0]


def test_beam_search_and_num_return_sequences(backend, prompt):
    beams = backend.generate(*prompt, settings(num_beams=3, num_return_sequences=2, max_new_tokens=6))
    assert len(beams) == 4 and all(len(row) == 6 for row in beams)
    assert beams[0] != beams[1]  # two different hypotheses of row 0
    best = backend.generate(*prompt, settings(num_beams=3, max_new_tokens=6))
    assert best == [beams[0], beams[2]]


def test_sampling_is_seeded_and_top_p_narrows_it(backend, prompt):
    torch.manual_seed(0)
    first = backend.generate(*prompt, settings(do_sample=True, top_p=1.0, num_return_sequences=3))
    torch.manual_seed(0)
    again = backend.generate(*prompt, settings(do_sample=True, top_p=1.0, num_return_sequences=3))
    assert first == again and len(first) == 6
    assert first != [row for row in backend.generate(*prompt, settings()) for _ in range(3)]
    # top_p this small keeps only the most likely token: sampling becomes greedy
    narrow = backend.generate(*prompt, settings(do_sample=True, top_p=1e-6))
    assert narrow == backend.generate(*prompt, settings())
    # a low temperature sharpens the distribution towards greedy as well
    torch.manual_seed(0)
    cold = backend.generate(*prompt, settings(do_sample=True, top_p=1.0, temperature=1e-4))
    assert cold == narrow


@penalty_note
def test_repetition_penalty(backend, prompt):
    plain = backend.generate(*prompt, settings(max_new_tokens=30))
    assert any(len(set(row)) < len(row) for row in plain)  # the tiny random model repeats itself...
    penalised = backend.generate(*prompt, settings(max_new_tokens=30, repetition_penalty=1e4))
    assert all(len(set(row)) == len(row) for row in penalised)  # ...unless penalised


@penalty_note
def test_every_setting_reaches_transformers(backend, prompt, monkeypatch):
    seen = {}
    original = backend.model.generate

    def spy(**kwargs):
        seen.update(kwargs["generation_config"].to_dict())
        return original(**kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    chosen = settings(num_beams=2, max_new_tokens=4, min_new_tokens=2, do_sample=True, top_p=0.7, temperature=0.5,
                      repetition_penalty=1.3, length_penalty=0.6, num_return_sequences=2)
    backend.generate(*prompt, chosen)
    for name, value in chosen.model_dump().items():
        assert seen[name] == value, name
    assert seen["top_k"] == 0 and seen["eos_token_id"] == backend.tokenizer.eos_token_id
