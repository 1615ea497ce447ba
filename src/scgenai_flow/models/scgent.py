"""scgent: a small pre-norm causal transformer in plain torch (fused attention kernels)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from .spec import ModelSpec, register


class Block(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual connection."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # Causal attention: windows are right-padded, so real tokens never see padding.
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, hidden)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class ScGenT(nn.Module):
    """Token and position embeddings, `layers` blocks, a final norm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d = spec.dims
        self.tokens = nn.Embedding(spec.vocab_size, d.hidden, padding_idx=spec.pad_token_id)
        self.positions = nn.Embedding(spec.positions, d.hidden)
        self.blocks = nn.ModuleList(Block(d.hidden, d.heads, d.ffn, spec.dropout) for _ in range(d.layers))
        self.norm = nn.LayerNorm(d.hidden)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tokens

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        x = self.tokens(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.positions(torch.arange(x.shape[1], device=x.device))[None]
        for block in self.blocks:
            x = block(x)
        return SimpleNamespace(last_hidden_state=self.norm(x))


@register("scgent")
def scgent(spec: ModelSpec) -> nn.Module:
    return ScGenT(spec)
