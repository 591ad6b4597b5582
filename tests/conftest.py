"""Shared fixtures: a tiny random Llama with the bundled SmolLM2 tokenizer (no downloads)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from synth.models import bundled_gguf

    gguf = bundled_gguf("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return tok


def tiny_llama_config(tokenizer, **overrides):
    """The config of the tests' tiny 2-layer Llama over the bundled tokenizer."""
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaConfig(**(fields | overrides))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A randomly initialised 2-layer Llama saved as a normal checkpoint."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture
def varied_policy(tokenizer):
    """A tiny untied Llama with a wider init, whose greedy text varies (the shared tiny model repeats one
    token), behind a batch of 4 rows."""
    from transformers import LlamaForCausalLM

    from synth.generate.hf import TransformersPolicy

    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, tie_word_embeddings=False, initializer_range=0.2))
    return TransformersPolicy("", batch_size=4, model=model, tokenizer=tokenizer, system_prompt=None)


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir):
    from synth.generate.hf import TransformersPolicy

    return TransformersPolicy(tiny_model_dir, batch_size=16, dtype="float32")  # exact comparisons need fp32
