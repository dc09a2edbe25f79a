"""Gemma3-style LM (Flax NNX): tied embedding used as the LM head, GeGLU, sandwich norms."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models.common import Attention, GatedMLP


@dataclasses.dataclass(frozen=True)
class Config:
  vocab: int = 256
  d: int = 64
  layers: int = 2
  heads: int = 4
  kv_heads: int = 1
  head_dim: int = 16
  ff: int = 128


class Block(nnx.Module):

  def __init__(self, cfg: Config, *, rngs):
    self.pre_attention_norm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.attn = Attention(cfg.d, cfg.heads, cfg.kv_heads, cfg.head_dim, rngs=rngs)
    self.post_attention_norm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.pre_ffw_norm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.mlp = GatedMLP(cfg.d, cfg.ff, rngs=rngs, act=jax.nn.gelu)
    self.post_ffw_norm = nnx.RMSNorm(cfg.d, rngs=rngs)

  def __call__(self, x):
    x = x + self.post_attention_norm(self.attn(self.pre_attention_norm(x)))
    return x + self.post_ffw_norm(self.mlp(self.pre_ffw_norm(x)))


class Gemma3(nnx.Module):
  """Token ids [B, T] -> logits [B, T, vocab]; the head is ``embedder.attend``."""

  def __init__(self, cfg: Config = Config(), *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = nnx.Embed(cfg.vocab, cfg.d, rngs=rngs)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
    self.final_norm = nnx.RMSNorm(cfg.d, rngs=rngs)

  def __call__(self, tokens):
    x = self.embedder(tokens) * jnp.sqrt(self.cfg.d).astype(jnp.float32)
    for layer in self.layers:
      x = layer(x)
    return self.embedder.attend(self.final_norm(x))
