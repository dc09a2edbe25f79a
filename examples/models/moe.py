"""MoE LMs (Flax NNX): OLMoE-style (softmax top-k router, stacked SwiGLU experts) and
gpt-oss-style (router with bias, attention sinks and biases, fused gate/up experts with biases).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models.common import Attention


@dataclasses.dataclass(frozen=True)
class Config:
  vocab: int = 256
  d: int = 64
  layers: int = 2
  heads: int = 4
  kv_heads: int = 2
  head_dim: int = 16
  ff: int = 32
  experts: int = 4
  top_k: int = 2


def _init(rngs, shape, fan_in):
  return jax.random.normal(rngs.params(), shape) / jnp.sqrt(fan_in)


def _combine(router_logits, expert_out, top_k):
  """Softmax top-k routing: weights over the selected experts, renormalised."""
  probs = jax.nn.softmax(router_logits, axis=-1)
  top, idx = jax.lax.top_k(probs, top_k)
  weights = jnp.sum(jax.nn.one_hot(idx, probs.shape[-1]) * (top / top.sum(-1, keepdims=True))
                    [..., None], axis=-2)
  return jnp.einsum("bte,bted->btd", weights, expert_out)


class OlmoeExperts(nnx.Module):
  """Stacked SwiGLU experts: gate/up [E, d, ff], down [E, ff, d] (dense compute, tiny sizes)."""

  def __init__(self, cfg: Config, *, rngs):
    self.gate_proj = nnx.Param(_init(rngs, (cfg.experts, cfg.d, cfg.ff), cfg.d))
    self.up_proj = nnx.Param(_init(rngs, (cfg.experts, cfg.d, cfg.ff), cfg.d))
    self.down_proj = nnx.Param(_init(rngs, (cfg.experts, cfg.ff, cfg.d), cfg.ff))

  def __call__(self, x):
    h = jax.nn.silu(jnp.einsum("btd,edf->btef", x, self.gate_proj[...]))
    h = h * jnp.einsum("btd,edf->btef", x, self.up_proj[...])
    return jnp.einsum("btef,efd->bted", h, self.down_proj[...])


class OlmoeMLP(nnx.Module):

  def __init__(self, cfg: Config, *, rngs):
    self.gate = nnx.Linear(cfg.d, cfg.experts, use_bias=False, rngs=rngs)  # the router
    self.experts = OlmoeExperts(cfg, rngs=rngs)
    self.top_k = cfg.top_k

  def __call__(self, x):
    return _combine(self.gate(x), self.experts(x), self.top_k)


class GptOssExperts(nnx.Module):
  """Fused gate/up [E, d, 2 ff] and down [E, ff, d], each with a per-expert bias."""

  def __init__(self, cfg: Config, *, rngs):
    self.gate_up_proj = nnx.Param(_init(rngs, (cfg.experts, cfg.d, 2 * cfg.ff), cfg.d))
    self.gate_up_proj_bias = nnx.Param(jnp.zeros((cfg.experts, 2 * cfg.ff)))
    self.down_proj = nnx.Param(_init(rngs, (cfg.experts, cfg.ff, cfg.d), cfg.ff))
    self.down_proj_bias = nnx.Param(jnp.zeros((cfg.experts, cfg.d)))

  def __call__(self, x):
    h = jnp.einsum("btd,edf->btef", x, self.gate_up_proj[...]) + self.gate_up_proj_bias[...]
    gate, up = jnp.split(h, 2, axis=-1)
    h = jax.nn.silu(gate) * up
    return jnp.einsum("btef,efd->bted", h, self.down_proj[...]) + self.down_proj_bias[...]


class GptOssMLP(nnx.Module):

  def __init__(self, cfg: Config, *, rngs):
    self.router = nnx.Linear(cfg.d, cfg.experts, use_bias=True, rngs=rngs)
    self.experts = GptOssExperts(cfg, rngs=rngs)
    self.top_k = cfg.top_k

  def __call__(self, x):
    return _combine(self.router(x), self.experts(x), self.top_k)


class Block(nnx.Module):

  def __init__(self, cfg: Config, *, rngs, gpt_oss: bool):
    self.input_layernorm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.self_attn = Attention(cfg.d, cfg.heads, cfg.kv_heads, cfg.head_dim, rngs=rngs,
                               qk_norm=not gpt_oss, bias=gpt_oss, sinks=gpt_oss)
    self.post_attention_layernorm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.mlp = GptOssMLP(cfg, rngs=rngs) if gpt_oss else OlmoeMLP(cfg, rngs=rngs)

  def __call__(self, x):
    x = x + self.self_attn(self.input_layernorm(x))
    return x + self.mlp(self.post_attention_layernorm(x))


class _MoeLM(nnx.Module):
  gpt_oss = False

  def __init__(self, cfg: Config = Config(), *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab, cfg.d, rngs=rngs)
    self.layers = nnx.List([Block(cfg, rngs=rngs, gpt_oss=self.gpt_oss)
                            for _ in range(cfg.layers)])
    self.norm = nnx.RMSNorm(cfg.d, rngs=rngs)
    self.lm_head = nnx.Linear(cfg.d, cfg.vocab, use_bias=False, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed_tokens(tokens)
    for layer in self.layers:
      x = layer(x)
    return self.lm_head(self.norm(x))


class Olmoe(_MoeLM):
  """OLMoE-style: softmax top-k router ``mlp.gate``, stacked experts ``mlp.experts.*``."""


class GptOss(_MoeLM):
  """gpt-oss-style: ``mlp.router`` with bias, attention sinks, biased q/k/v/o and experts."""
  gpt_oss = True
