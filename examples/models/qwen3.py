"""Qwen3-style dense LM (Flax NNX): GQA with q/k RMSNorm, SwiGLU, untied LM head."""

from __future__ import annotations

import dataclasses

from flax import nnx

from examples.models.common import Attention, GatedMLP


@dataclasses.dataclass(frozen=True)
class Config:
  vocab: int = 256
  d: int = 64
  layers: int = 2
  heads: int = 4
  kv_heads: int = 2
  head_dim: int = 16
  ff: int = 128
  track_max_logit: bool = False  # sow each attention layer's per-head max logit (QK-clip)


class Block(nnx.Module):

  def __init__(self, cfg: Config, *, rngs):
    self.input_layernorm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.self_attn = Attention(cfg.d, cfg.heads, cfg.kv_heads, cfg.head_dim, rngs=rngs,
                               track_max_logit=cfg.track_max_logit)
    self.post_attention_layernorm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.mlp = GatedMLP(cfg.d, cfg.ff, rngs=rngs)

  def __call__(self, x):
    x = x + self.self_attn(self.input_layernorm(x))
    return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3(nnx.Module):
  """Token ids [B, T] -> logits [B, T, vocab]."""

  def __init__(self, cfg: Config = Config(), *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab, cfg.d, rngs=rngs)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
    self.norm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.lm_head = nnx.Linear(cfg.d, cfg.vocab, use_bias=False, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed_tokens(tokens)
    for layer in self.layers:
      x = layer(x)
    return self.lm_head(self.norm(x))
