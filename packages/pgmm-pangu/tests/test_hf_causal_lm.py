"""hf_causal_lm: local Llama, Qwen2 and OPT directories, made with transformers' own classes."""

from __future__ import annotations

import json

import pytest
import torch

from pgmm_core.config.sections import GenerationSection
from pgmm_core.errors import CheckpointError
from pgmm_pangu.configs import HfCausalLMConfig
from pgmm_pangu.hf_backend import build_hf_causal_lm

CORPUS = ["a red circle in the top left", "a cat sitting on a wooden table", "two dogs playing in the grass",
          "a man riding a bike down a city street", "a plate of food with rice and vegetables"] * 4


def trained_bpe(pre_tokenizer, specials: list[str]) -> tuple[dict, list]:
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE(unk_token=specials[0] if specials else None))
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=specials, show_progress=False))
    spec = json.loads(tok.to_str())
    return spec["model"]["vocab"], [tuple(m) for m in spec["model"]["merges"]]


def make_llama(directory):
    from tokenizers import pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    vocab, merges = trained_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                                ["<unk>", "<s>", "</s>"])
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config), tokenizer


def make_qwen2(directory):
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    vocab, merges = trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), [])
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> as EOS/PAD, no BOS
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id)
    return Qwen2ForCausalLM(config), tokenizer


def make_opt(directory):
    from tokenizers import pre_tokenizers
    from transformers import GPT2Tokenizer, OPTConfig, OPTForCausalLM

    vocab, merges = trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<pad>", "</s>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>",
                              pad_token="<pad>", add_bos_token=True)  # OPT prepends </s>
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=64, init_std=0.3,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    return OPTForCausalLM(config), tokenizer


def manual_greedy(backend, embeds, steps, forbidden):
    """Argmax of full re-forwards (``forbidden`` masked, as min_new_tokens masks EOS)."""
    current, new = embeds, []
    with torch.no_grad():
        for _ in range(steps):
            logits = backend.model(inputs_embeds=current).logits[:, -1]
            logits[:, forbidden] = -torch.inf
            token = logits.argmax(-1)
            new.append(token)
            current = torch.cat([current, backend.embed_tokens(token[:, None])], dim=1)
    return torch.stack(new, dim=1).tolist()


MAKERS = {"llama": make_llama, "qwen2": make_qwen2, "opt": make_opt}
ADDS_BOS = {"llama": True, "qwen2": False, "opt": True}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def hf_dir(request, tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp(request.param)
    model, tokenizer = MAKERS[request.param](directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # Defaults that must not leak into pgmm's explicit settings: sampling (openPangu's release file
    # says so) and a suppressed half of the vocabulary.
    defaults = {"do_sample": True, "top_p": 0.8, "top_k": 0, "suppress_tokens": list(range(0, len(tokenizer), 2))}
    (directory / "generation_config.json").write_text(json.dumps(defaults))
    return request.param, directory


def test_protocol_loss_and_generation(hf_dir):
    name, directory = hf_dir
    backend = build_hf_causal_lm(HfCausalLMConfig(path=str(directory), loss_chunk_tokens=3))
    tok = backend.tokenizer
    assert type(backend.model).__name__.lower().startswith(name)
    assert tok.adds_bos is ADDS_BOS[name]
    assert (tok.encode("a cat")[:1] == [tok.bos_token_id]) is ADDS_BOS[name]
    assert tok.decode(tok.encode("a cat sitting"), skip_special_tokens=True) == "a cat sitting"

    # stage-2 style batch: [visual | (BOS) caption EOS | pad]
    captions = ["a cat sitting on a wooden table", "a red circle"]
    rows = [tok.encode(c) + [tok.eos_token_id] for c in captions]
    width = max(map(len, rows))
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros((2, 3 + width), dtype=torch.long)
    labels = torch.full((2, 3 + width), -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : 3 + len(row)] = 1
        labels[i, 3 : 3 + len(row)] = torch.tensor(row)
    visual = torch.randn(2, 3, backend.hidden_size, generator=torch.Generator().manual_seed(0))
    embeds = torch.cat([visual, backend.embed_tokens(ids)], dim=1)
    with torch.no_grad():
        ours = backend.caption_loss(embeds, mask, labels)
        reference = backend.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss  # HF's own loss
    assert abs(ours.item() - reference.item()) <= 1e-5

    # greedy whatever the directory's generation_config.json says, new tokens only
    prompt = embeds[:, :3]
    settings = GenerationSection(num_beams=1, max_new_tokens=6, min_new_tokens=6)
    expected = manual_greedy(backend, prompt, 6, forbidden=tok.eos_token_id)
    assert any(token % 2 == 0 for row in expected for token in row), expected
    assert backend.generate(prompt, torch.ones(2, 3, dtype=torch.long), settings) == expected
    beams = backend.generate(prompt, torch.ones(2, 3, dtype=torch.long),
                             GenerationSection(num_beams=2, num_return_sequences=2, max_new_tokens=4, min_new_tokens=0))
    assert len(beams) == 4


def test_eos_token_override(hf_dir):
    """BLIP-2's OPT models end captions with a newline, not the tokenizer's EOS."""
    _, directory = hf_dir
    token = build_hf_causal_lm(HfCausalLMConfig(path=str(directory))).tokenizer.tokenizer.convert_ids_to_tokens(10)
    backend = build_hf_causal_lm(HfCausalLMConfig(path=str(directory), eos_token=token))
    assert backend.tokenizer.eos_token_id == 10
    with pytest.raises(CheckpointError, match="eos_token 'no such token' is not a token of this tokenizer"):
        build_hf_causal_lm(HfCausalLMConfig(path=str(directory), eos_token="no such token"))


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        build_hf_causal_lm(HfCausalLMConfig(path=str(tmp_path / "nowhere")))
    with pytest.raises(CheckpointError, match="no config.json"):
        build_hf_causal_lm(HfCausalLMConfig(path=str(tmp_path)))


def test_models_that_transform_their_logits_keep_their_own_loss():
    """Gemma 2 soft-caps the LM head's output: its loss must come from the model's own forward."""
    from types import SimpleNamespace

    from transformers import Gemma2Config, Gemma2ForCausalLM

    from pgmm_pangu.backend import CausalLMBackend
    from pgmm_pangu.loss import target_cross_entropy

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(200)  # logits large enough for the cap to bite
    backend = CausalLMBackend(model, SimpleNamespace(bos_token_id=2, eos_token_id=1, pad_token_id=0), frozen=True)
    embeds = torch.randn(2, 7, 32)
    mask = torch.ones(2, 7, dtype=torch.long)
    labels = torch.randint(3, 64, (2, 7))
    labels[:, :3] = -100
    with torch.no_grad():
        reference = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        hidden = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        uncapped = target_cross_entropy(hidden, labels, model.lm_head)
        assert abs(backend.caption_loss(embeds, mask, labels).item() - reference.item()) <= 1e-5
    assert abs(uncapped.item() - reference.item()) > 1e-2  # the soft-capping matters
