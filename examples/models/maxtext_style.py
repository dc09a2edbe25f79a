"""MaxText-style decoder LM (Flax Linen): ``nn.scan`` over layers with a configurable
parameter scan axis, DenseGeneral attention kernels with a head axis, ``wi_0/wi_1/wo`` MLP.

Parameter names and layouts follow MaxText: ``token_embedder/embedding`` [V, d],
``decoder/layers/self_attention/{query,key,value}/kernel`` [d, L, H, hd] (scan axis 1),
``.../out/kernel`` [H, L, hd, d], ``decoder/layers/mlp/{wi_0,wi_1}/kernel`` [d, L, ff],
``.../wo/kernel`` [ff, L, d], norms ``scale`` [d, L], ``decoder/decoder_norm/scale`` [d],
``decoder/logits_dense/kernel`` [d, V].

Every parameter carries MaxText's logical axis names (``vocab, embed, heads, kv_heads, kv,
mlp, norm`` and ``layers`` for the scan axis) through ``nn.with_logical_partitioning``;
:data:`LOGICAL_RULES` maps them onto a ``(data, fsdp, tensor)`` mesh as MaxText's defaults do.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from examples.models.common import causal_attention, rope


# MaxText-like logical -> mesh axis rules for a (data, fsdp, tensor) mesh.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("norm", None),
    ("layers", None),
)


def _init(*names):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def _ones(*names):
  return nn.with_logical_partitioning(nn.initializers.ones, names)


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
    x = nn.RMSNorm(name="decoder_norm", scale_init=_ones("norm"))(x)
    return nn.Dense(cfg.vocab, use_bias=False, name="logits_dense",
                    kernel_init=_init("embed", "vocab"))(x)


class _Attention(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, h):
    cfg = self.cfg
    dense = lambda feats, name, names, axis=-1: nn.DenseGeneral(
        feats, axis=axis, use_bias=False, name=name, kernel_init=_init(*names))
    q = dense((cfg.heads, cfg.head_dim), "query", ("embed", "heads", "kv"))(h)
    k = dense((cfg.kv_heads, cfg.head_dim), "key", ("embed", "kv_heads", "kv"))(h)
    v = dense((cfg.kv_heads, cfg.head_dim), "value", ("embed", "kv_heads", "kv"))(h)
    pos = jnp.arange(h.shape[1])
    attn = causal_attention(rope(q, pos), rope(k, pos), v)
    return dense(cfg.d, "out", ("heads", "kv", "embed"), axis=(-2, -1))(attn)


class _Mlp(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, h):
    dense = lambda name, feats, names: nn.Dense(feats, use_bias=False, name=name,
                                                kernel_init=_init(*names))
    h = (jax.nn.silu(dense("wi_0", self.cfg.ff, ("embed", "mlp"))(h))
         * dense("wi_1", self.cfg.ff, ("embed", "mlp"))(h))
    return dense("wo", self.cfg.d, ("mlp", "embed"))(h)


class _Layer(nn.Module):
  cfg: Config

  @nn.compact
  def __call__(self, x, _):
    h = nn.RMSNorm(name="pre_self_attention_layer_norm", scale_init=_ones("norm"))(x)
    x = x + _Attention(self.cfg, name="self_attention")(h)
    h = nn.RMSNorm(name="post_self_attention_layer_norm", scale_init=_ones("norm"))(x)
    return x + _Mlp(self.cfg, name="mlp")(h), None


class MaxTextStyleLM(nn.Module):
  """Token ids [B, T] -> logits [B, T, vocab]."""
  cfg: Config = Config()

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.cfg.vocab, self.cfg.d, name="token_embedder",
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(1.0), ("vocab", "embed")))(tokens)
    return Decoder(self.cfg, name="decoder")(x)


def init(cfg: Config = Config(), seed: int = 0, boxed: bool = False):
  """Returns (model, params) with params = variables['params'], plain arrays unless
  ``boxed`` (then ``nn.LogicallyPartitioned`` boxes carrying the logical axis names)."""
  model = MaxTextStyleLM(cfg)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"]
  return model, (params if boxed else nn.unbox(params))
