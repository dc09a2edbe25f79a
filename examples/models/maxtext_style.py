"""MaxText-style decoder LM (Flax Linen): ``nn.scan`` over layers with a configurable
parameter scan axis, DenseGeneral attention kernels with a head axis, ``wi_0/wi_1/wo`` MLP.

Parameter names and layouts follow MaxText: ``token_embedder/embedding`` [V, d],
``decoder/layers/self_attention/{query,key,value}/kernel`` [d, L, H, hd] (scan axis 1),
``.../out/kernel`` [H, L, hd, d], ``decoder/layers/mlp/{wi_0,wi_1}/kernel`` [d, L, ff],
``.../wo/kernel`` [ff, L, d], norms ``scale`` [d, L], ``decoder/decoder_norm/scale`` [d],
``decoder/logits_dense/kernel`` [d, V].
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from examples.models.common import causal_attention, rope


@dataclasses.dataclass(frozen=True)
class Config:
  vocab: int = 256
  d: int = 64
  layers: int = 2
  heads: int = 4
  kv_heads: int = 2
  head_dim: int = 16
  ff: int = 128
  param_scan_axis: int = 1


class Decoder(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    layer = nn.scan(_Layer, variable_axes={"params": cfg.param_scan_axis},
                    split_rngs={"params": True}, length=cfg.layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = layer(cfg, name="layers")(x, None)
    x = nn.RMSNorm(name="decoder_norm")(x)
    return nn.Dense(cfg.vocab, use_bias=False, name="logits_dense")(x)


class _Attention(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, h):
    cfg = self.cfg
    dense = lambda feats, name, axis=-1: nn.DenseGeneral(feats, axis=axis, use_bias=False,
                                                         name=name)
    q = dense((cfg.heads, cfg.head_dim), "query")(h)
    k = dense((cfg.kv_heads, cfg.head_dim), "key")(h)
    v = dense((cfg.kv_heads, cfg.head_dim), "value")(h)
    pos = jnp.arange(h.shape[1])
    return dense(cfg.d, "out", axis=(-2, -1))(causal_attention(rope(q, pos), rope(k, pos), v))


class _Mlp(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, h):
    dense = lambda name, feats: nn.Dense(feats, use_bias=False, name=name)
    h = jax.nn.silu(dense("wi_0", self.cfg.ff)(h)) * dense("wi_1", self.cfg.ff)(h)
    return dense("wo", self.cfg.d)(h)


class _Layer(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, x, _):
    h = nn.RMSNorm(name="pre_self_attention_layer_norm")(x)
    x = x + _Attention(self.cfg, name="self_attention")(h)
    h = nn.RMSNorm(name="post_self_attention_layer_norm")(x)
    return x + _Mlp(self.cfg, name="mlp")(h), None


class MaxTextStyleLM(nn.Module):
  """Token ids [B, T] -> logits [B, T, vocab]."""
  cfg: Config = Config()

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.cfg.vocab, self.cfg.d, name="token_embedder")(tokens)
    return Decoder(self.cfg, name="decoder")(x)


def init(cfg: Config = Config(), seed: int = 0):
  """Returns (model, params) with params = variables['params']."""
  model = MaxTextStyleLM(cfg)
  return model, model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"]
