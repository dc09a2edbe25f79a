"""Captures the parameter-tree layouts of Hugging Face Flax models as JSON fixtures.

Each fixture, ``tests/fixtures/trees/hf_flax_<name>.json``, records every parameter leaf of a
real HF Flax model (its ``/``-joined path, shape and dtype) so that tests can check
``symoptax.label_roles`` / ``symoptax.matrix_axes`` against real trees without installing
``transformers``. Only shapes are computed (``jax.eval_shape`` of the model's
``init_weights``): no weights are materialised and nothing is downloaded; every model is
built from a config object with its library defaults, shrunk to 2 layers.

The script needs its own environment, apart from the project's (``transformers`` 4.49 is the
last release that ships the Flax models; torch is not needed)::

  python3 -m venv .hfenv
  .hfenv/bin/pip install "transformers<4.50" flax jax

(captured with transformers 4.49.0, flax 0.12.8, jax/jaxlib 0.10.2; the fixtures record the
versions used). Run it from the repository root::

  .hfenv/bin/python tools/capture_trees.py [--out tests/fixtures/trees] [name ...]

Kernel storage in these models (see each fixture's ``notes``): ``nn.Dense`` kernels are
``[in, out]`` and ``nn.Embed`` tables ``[num, d]``, except GPT-2's ``FlaxConv1D``, whose
kernel is ``[out, in]`` (created as ``(features, in)`` and transposed when applied). A tied
LM head has no leaf of its own: the module applies the token embedding's transpose.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only: never touch an accelerator

import fixture_io  # tools/fixture_io.py: leaf lists, JSON, command line
import jax
import transformers

LAYERS = 2  # every other dimension keeps its library default


def _llama():
  # Llama defaults are multi-head (num_key_value_heads = num_attention_heads = 32); 8 KV
  # heads make the k/v kernels narrower than q, as in grouped-query attention.
  config = transformers.LlamaConfig(num_hidden_layers=LAYERS, num_key_value_heads=8)
  return transformers.FlaxLlamaForCausalLM, config, dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_attention_heads=config.num_attention_heads,
      num_key_value_heads=config.num_key_value_heads,
      # The Flax module always uses hidden_size // num_attention_heads.
      head_dim=config.hidden_size // config.num_attention_heads,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
      max_position_embeddings=config.max_position_embeddings,
      # FlaxLlamaForCausalLM ignores this flag: its lm_head is always a leaf of its own.
      tie_word_embeddings=config.tie_word_embeddings,
  ), [
      "nn.Dense kernels [in, out]; q/k/v outputs are head-major (H * head_dim).",
      "lm_head/kernel [hidden, vocab] is always its own leaf (the Flax module has no tied "
      "path).",
  ]


def _gemma():
  # hidden_activation spelled out only to silence the config's warning; it is what the
  # model would pick anyway.
  config = transformers.GemmaConfig(num_hidden_layers=LAYERS,
                                    hidden_activation="gelu_pytorch_tanh")
  return transformers.FlaxGemmaForCausalLM, config, dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_attention_heads=config.num_attention_heads,
      num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
      max_position_embeddings=config.max_position_embeddings,
      tie_word_embeddings=config.tie_word_embeddings,
  ), [
      "nn.Dense kernels [in, out]; q/k/v outputs are head-major (H * head_dim, head_dim "
      "from the config, so H * head_dim != hidden_size).",
      "Tied head: no lm_head leaf; logits use model/embed_tokens/embedding.T.",
  ]


def _gpt2():
  config = transformers.GPT2Config(n_layer=LAYERS)
  return transformers.FlaxGPT2LMHeadModel, config, dict(
      vocab_size=config.vocab_size, hidden_size=config.n_embd,
      num_attention_heads=config.n_head, num_key_value_heads=config.n_head,
      head_dim=config.n_embd // config.n_head,
      intermediate_size=config.n_inner or 4 * config.n_embd,
      num_hidden_layers=config.n_layer, max_position_embeddings=config.n_positions,
      tie_word_embeddings=config.tie_word_embeddings,
  ), [
      "FlaxConv1D kernels (attn/c_attn, attn/c_proj, mlp/c_fc, mlp/c_proj) are [out, in]: "
      "created with shape (features, in) and applied as x @ kernel.T.",
      "attn/c_attn/kernel is [3 * hidden, hidden]: its output axis is [q | k | v] (split in "
      "3 along the features), each head-major.",
      "wpe/embedding is the learned position table [n_positions, hidden].",
      "Tied head: no lm_head leaf; logits use transformer/wte/embedding.T.",
  ]


def _opt():
  config = transformers.OPTConfig(num_hidden_layers=LAYERS)
  return transformers.FlaxOPTForCausalLM, config, dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_attention_heads=config.num_attention_heads,
      num_key_value_heads=config.num_attention_heads,
      head_dim=config.hidden_size // config.num_attention_heads,
      intermediate_size=config.ffn_dim, num_hidden_layers=config.num_hidden_layers,
      max_position_embeddings=config.max_position_embeddings,
      tie_word_embeddings=config.tie_word_embeddings,
  ), [
      "nn.Dense kernels [in, out]; the MLP (fc1 [hidden, ffn], fc2 [ffn, hidden]) sits "
      "directly in the decoder layer, with no mlp container.",
      "decoder/embed_positions/embedding is the learned position table "
      "[max_position_embeddings + 2, hidden] (offset 2).",
      "Tied head: no lm_head leaf; logits use model/decoder/embed_tokens/embedding.T.",
  ]


def _gptj():
  config = transformers.GPTJConfig(n_layer=LAYERS)
  return transformers.FlaxGPTJForCausalLM, config, dict(
      vocab_size=config.vocab_size, hidden_size=config.n_embd,
      num_attention_heads=config.n_head, num_key_value_heads=config.n_head,
      head_dim=config.n_embd // config.n_head,
      intermediate_size=config.n_inner or 4 * config.n_embd,
      num_hidden_layers=config.n_layer, max_position_embeddings=config.n_positions,
      tie_word_embeddings=config.tie_word_embeddings,
  ), [
      "nn.Dense kernels [in, out]; the MLP is mlp/fc_in [hidden, ff] and mlp/fc_out "
      "[ff, hidden]; positions are rotary (a constant, not a parameter).",
      "lm_head/kernel [hidden, vocab] with lm_head/bias [vocab] (untied by default).",
  ]


MODELS = {"llama": _llama, "gemma": _gemma, "gpt2": _gpt2, "opt": _opt, "gptj": _gptj}


def _versions() -> dict[str, str]:
  return {name: metadata.version(name) for name in ("transformers", "flax", "jax", "jaxlib",
                                                    "numpy")}


def abstract_params(model_cls, config):
  """The model's parameter tree as ``jax.ShapeDtypeStruct`` leaves, nothing allocated."""
  # _do_init=False skips the random initialisation in the constructor; eval_shape then
  # traces init_weights (the model's own init, on its default dummy input) for shapes only.
  model = model_cls(config, _do_init=False)
  return jax.eval_shape(lambda: model.init_weights(jax.random.PRNGKey(0), model.input_shape))


def capture(name: str) -> dict:
  """The fixture of one model: source, versions, key config fields and its leaves."""
  model_cls, config, fields, notes = MODELS[name]()
  params = abstract_params(model_cls, config)
  leaves = fixture_io.leaves(params)
  return {
      "source": f"transformers {transformers.__version__} {model_cls.__name__}",
      "library_versions": _versions(),
      "config": fields,
      "notes": notes,
      "leaves": leaves,
  }


def main(argv=None) -> int:
  return fixture_io.main(__doc__.splitlines()[0], MODELS, capture, "hf_flax_", argv)


if __name__ == "__main__":
  sys.exit(main())
