"""Hugging Face backbones (LLaMA, GPT-2, BigBird) built from configs, never downloaded."""

from __future__ import annotations

from torch import nn
from transformers import BigBirdConfig, BigBirdModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

from .spec import ModelSpec, register

# Below this many tokens BigBird's block-sparse attention has too few blocks to pay off
# (transformers itself falls back to full attention there).
BIGBIRD_SPARSE_FROM = 1024


@register("llama")
def llama(spec: ModelSpec) -> nn.Module:
    d = spec.dims
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=d.hidden,
        intermediate_size=d.ffn,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.heads,
        max_position_embeddings=spec.positions,
        pad_token_id=spec.pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        attention_dropout=0.0,  # dropout on attention weights forces the slow math kernel
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return LlamaModel(config)


@register("gpt")
def gpt(spec: ModelSpec) -> nn.Module:
    d = spec.dims
    config = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.positions,
        n_embd=d.hidden,
        n_layer=d.layers,
        n_head=d.heads,
        n_inner=d.ffn,
        pad_token_id=spec.pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=0.0,  # as for llama: keeps the fused attention kernel
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return GPT2Model(config)


@register("bigbird")
def bigbird(spec: ModelSpec) -> nn.Module:
    d = spec.dims
    config = BigBirdConfig(
        vocab_size=spec.vocab_size,
        hidden_size=d.hidden,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        intermediate_size=d.ffn,
        max_position_embeddings=spec.positions,
        pad_token_id=spec.pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=0.0,
        attention_type="block_sparse" if spec.positions >= BIGBIRD_SPARSE_FROM else "original_full",
        block_size=64,
        num_random_blocks=3,
        use_cache=False,
    )
    return BigBirdModel(config, add_pooling_layer=False)
