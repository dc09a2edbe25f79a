"""Pieces shared by the NNX example models: RMSNorm'd GQA attention, SwiGLU, RoPE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def rope(x, positions, base: float = 10000.0):
  """Rotary position embedding on the last axis of ``x`` [B, T, H, hd]."""
  hd = x.shape[-1]
  freqs = base ** (-jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)
  ang = positions[:, None].astype(jnp.float32) * freqs[None, :]
  sin, cos = jnp.sin(ang)[None, :, None, :], jnp.cos(ang)[None, :, None, :]
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def causal_attention(q, k, v, sinks=None, return_max_logit=False):
  """Causal softmax attention, GQA by repeating k/v; optional per-head attention sinks.

  With ``return_max_logit``, also returns each head's largest pre-softmax logit over batch,
  query and key positions ([heads], gradient-free): what QK-clip needs."""
  b, t, h, hd = q.shape
  rep = h // k.shape[2]
  k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd).astype(q.dtype)
  mask = jnp.tril(jnp.ones((t, t), bool))
  logits = jnp.where(mask, logits, -1e30)
  if sinks is not None:
    # gpt-oss: a learned per-head logit that absorbs probability mass, dropped after softmax.
    sink = jnp.broadcast_to(sinks[None, :, None, None], (b, h, t, 1))
    probs = jax.nn.softmax(jnp.concatenate([logits, sink], axis=-1), axis=-1)[..., :-1]
  else:
    probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
  if return_max_logit:
    return out, jax.lax.stop_gradient(jnp.max(logits, axis=(0, 2, 3)))
  return out


class Attention(nnx.Module):
  """GQA attention with q/k RMSNorm (Qwen3/Gemma3/OLMoE) and optional sinks (gpt-oss)."""

  def __init__(self, d, heads, kv_heads, head_dim, *, rngs, qk_norm=True, bias=False,
               sinks=False, track_max_logit=False):
    self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
    self.track_max_logit = track_max_logit
    lin = lambda i, o: nnx.Linear(i, o, use_bias=bias, rngs=rngs)
    self.q_proj = lin(d, heads * head_dim)
    self.k_proj = lin(d, kv_heads * head_dim)
    self.v_proj = lin(d, kv_heads * head_dim)
    self.o_proj = lin(heads * head_dim, d)
    if qk_norm:
      self.q_norm = nnx.RMSNorm(head_dim, rngs=rngs)
      self.k_norm = nnx.RMSNorm(head_dim, rngs=rngs)
    self.qk_norm = qk_norm
    self.sinks = nnx.Param(jnp.zeros(heads)) if sinks else None

  def __call__(self, x):
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.kv_heads, self.head_dim)
    if self.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    pos = jnp.arange(t)
    q, k = rope(q, pos), rope(k, pos)
    sinks = self.sinks[...] if self.sinks is not None else None
    if self.track_max_logit:  # per-head max logit, for QK-clip (symoptax.qk_clip)
      out, max_logit = causal_attention(q, k, v, sinks, return_max_logit=True)
      self.sow(nnx.Intermediate, "max_logit", max_logit)
    else:
      out = causal_attention(q, k, v, sinks)
    return self.o_proj(out.reshape(b, t, -1))


class GatedMLP(nnx.Module):
  """SwiGLU (act=silu) or GeGLU (act=gelu): down(act(gate(x)) * up(x))."""

  def __init__(self, d, ff, *, rngs, act=jax.nn.silu):
    self.gate_proj = nnx.Linear(d, ff, use_bias=False, rngs=rngs)
    self.up_proj = nnx.Linear(d, ff, use_bias=False, rngs=rngs)
    self.down_proj = nnx.Linear(ff, d, use_bias=False, rngs=rngs)
    self.act = act

  def __call__(self, x):
    return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def next_token_loss(model, tokens):
  """Mean next-token cross entropy of ``model(tokens[:, :-1])`` against ``tokens[:, 1:]``."""
  logits = model(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), tokens[:, 1:]).mean()
