"""Update-scale conventions (README "Update scales"): each rule's update under "nuclear",
"nuclear_rel", "rms" and "spectral" against an exact SVD reference, their scale-freeness and
symmetry, the exact RMS and spectral-norm primitives, and the stack's ``scale=``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from symoptax.transforms import spectral_norm

from helpers import log_spectrum, normal, orthogonal, permutation, with_spectrum

A = symoptax.MatrixAxes
NU_RULES = {
    "right_polargrad_m": lambda **kw: symoptax.right_polargrad_m(1.0, method="eigh", **kw),
    "left_polargrad_m": lambda **kw: symoptax.left_polargrad_m(1.0, method="eigh", **kw),
    "polargrad": lambda **kw: symoptax.polargrad(1.0, method="svd", **kw),
    "hybrid_polargrad_m": lambda **kw: symoptax.hybrid_polargrad_m(1.0, method="eigh", **kw),
}


def first_update(tx, g):
  """The update of the first step (the EMA momentum is then (1 - beta) g), negated back."""
  params = {"w": jnp.zeros_like(g)}
  u, _ = tx.update({"w": g}, tx.init(params), params)
  return -u["w"]


def rms(x):
  return float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))


def svd_reference(x, scale, fan_ratio):
  """The update direction of a nu-scaled rule from the SVD of its input ``x``."""
  x = np.asarray(x, np.float64)
  u, s, vt = np.linalg.svd(x, full_matrices=False)
  polar = u @ vt
  size = {"nuclear": s.sum(), "nuclear_rel": s.sum() / np.linalg.norm(s),
          "rms": 0.2 * np.sqrt(x.size) / np.linalg.norm(polar),
          "spectral": np.sqrt(fan_ratio)}[scale]
  return size * polar


@pytest.mark.parametrize("scale", symoptax.SCALES)
@pytest.mark.parametrize("rule", ["right_polargrad_m", "left_polargrad_m", "polargrad"])
def test_nu_rules_match_the_svd_reference_under_every_scale(rule, scale):
  shape = (48, 12) if rule != "left_polargrad_m" else (12, 48)
  g = with_spectrum(*shape, log_spectrum(12, 30.0), seed=3)
  u = first_update(NU_RULES[rule](scale=scale), g)
  ref = svd_reference(0.05 * g, scale, fan_ratio=shape[0] / shape[1])
  err = np.linalg.norm(np.asarray(u, np.float64) - ref) / np.linalg.norm(ref)
  assert err < 2e-4, f"{rule} scale={scale}: relative error {err:.2e}"


@pytest.mark.parametrize("rule", sorted(NU_RULES))
@pytest.mark.parametrize("scale", ["nuclear_rel", "rms", "spectral"])
def test_scale_free_conventions_do_not_see_the_gradient_scale(rule, scale):
  g = normal((40, 10), 0)
  g = g.T if rule == "left_polargrad_m" else g  # the Gram on the short side
  base = first_update(NU_RULES[rule](scale=scale), g)
  # The hybrid's row normalisation (eps 1e-8, sums of squares in fp32, as optax's) holds
  # its scale-freeness over a narrower range than the polar step and the rescalings.
  scales = (1e-2, 1e8) if rule == "hybrid_polargrad_m" else (1e-30, 1e-8, 1e8, 1e30)
  for c in scales:
    u = first_update(NU_RULES[rule](scale=scale), g * c)
    assert bool(jnp.all(jnp.isfinite(u))), (rule, scale, c)
    np.testing.assert_allclose(u, base, rtol=2e-4, atol=1e-6 * float(jnp.abs(base).max()),
                               err_msg=f"{rule} scale={scale} at gradient scale {c:g}")


def test_nuclear_scale_grows_with_the_gradient_and_nuclear_rel_does_not():
  g = normal((40, 10), 1)
  nuc = [rms(first_update(NU_RULES["right_polargrad_m"](scale="nuclear"), c * g))
         for c in (1.0, 10.0)]
  rel = [rms(first_update(NU_RULES["right_polargrad_m"](scale="nuclear_rel"), c * g))
         for c in (1.0, 10.0)]
  assert nuc[1] == pytest.approx(10 * nuc[0], rel=1e-4)
  assert rel[1] == pytest.approx(rel[0], rel=1e-4)


def test_nuclear_rel_lies_between_one_and_sqrt_rank():
  for spectrum in ([1.0] * 8, [1.0] + [1e-6] * 7, log_spectrum(8, 100.0)):
    g = with_spectrum(32, 8, spectrum, seed=5)
    u = first_update(NU_RULES["right_polargrad_m"](scale="nuclear_rel"), g)
    size = float(jnp.linalg.norm(u, 2))  # the polar factor has unit spectral norm
    s = np.asarray(spectrum)
    assert size == pytest.approx(s.sum() / np.linalg.norm(s), rel=1e-3)
    assert 1 - 1e-3 <= size <= np.sqrt(8) + 1e-3


@pytest.mark.parametrize("scale,target", [("rms", "rms"), ("spectral", "op")])
@pytest.mark.parametrize("center", [False, True])
def test_rownorm_under_rms_and_spectral(scale, target, center):
  g = normal((64, 16), 2) * jnp.linspace(0.1, 3.0, 64)[:, None]  # uneven rows
  u = first_update(symoptax.rownorm_m(1.0, scale=scale, center=center), g)
  if target == "rms":
    assert rms(u) == pytest.approx(0.2, rel=1e-5)
  else:  # default axes: fan_out = rows = 64, fan_in = 16
    assert float(jnp.linalg.norm(u, 2)) == pytest.approx(2.0, rel=2e-3)
  if not center:  # rows still have equal norms: the rescaling is one scalar per matrix
    norms = jnp.linalg.norm(u, axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-4)


def test_rms_and_spectral_keep_the_lpro_symmetry_of_rownorm():
  g = normal((24, 8), 4)
  p, q = permutation(24, 1), orthogonal(8, 2)
  for scale in ("rms", "spectral"):
    tx = lambda: symoptax.rownorm_m(1.0, scale=scale)
    np.testing.assert_allclose(first_update(tx(), p @ g @ q), p @ first_update(tx(), g) @ q,
                               atol=2e-5, err_msg=scale)


def test_hybrid_under_rms_and_spectral():
  g = normal((64, 16), 6)
  assert rms(first_update(NU_RULES["hybrid_polargrad_m"](scale="rms"), g)) == pytest.approx(
      0.2, rel=1e-5)
  u = first_update(NU_RULES["hybrid_polargrad_m"](scale="spectral"), g)
  assert float(jnp.linalg.norm(u, 2)) == pytest.approx(2.0, rel=1e-3)
  # polar_then_row ends row-normalised (not orthogonal): its spectral norm is estimated.
  u = first_update(symoptax.hybrid_polargrad_m(1.0, order="polar_then_row", scale="spectral"), g)
  assert float(jnp.linalg.norm(u, 2)) == pytest.approx(2.0, rel=2e-3)


def test_unknown_scales_raise_naming_the_choices():
  with pytest.raises(ValueError, match="right_polargrad_m: unknown scale 'bogus'.*nuclear_rel"):
    symoptax.right_polargrad_m(1.0, scale="bogus")
  with pytest.raises(ValueError, match="rownorm_m: unknown scale 'nuclear'"):
    symoptax.rownorm_m(1.0, scale="nuclear")
  with pytest.raises(ValueError, match="Unknown scale 'bogus'"):
    symoptax.symmetry_stack(1.0, scale="bogus")


def test_spectral_norm_matches_the_svd_at_any_scale_and_is_orthogonally_invariant():
  x = jnp.stack([with_spectrum(40, 12, log_spectrum(12, c), seed=i)
                 for i, c in enumerate((1.0, 10.0, 1e4))])
  x = x.at[0].set(with_spectrum(40, 12, [1.0, 0.999, 0.99] + [0.5] * 9, seed=9))
  exact = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)[:, 0]
  for c in (1e-30, 1.0, 1e30):
    np.testing.assert_allclose(spectral_norm(x * c) / c, exact, rtol=2e-3)
  np.testing.assert_allclose(spectral_norm(jnp.swapaxes(x, -1, -2)), exact, rtol=2e-3)
  q, v = orthogonal(40, 1), orthogonal(12, 2)
  np.testing.assert_allclose(spectral_norm(q @ x @ v), spectral_norm(x), rtol=1e-4)
  assert float(spectral_norm(jnp.zeros((5, 3)))) == 0.0


def test_scale_by_rms_and_spectral_norm_on_batched_leaves():
  x = {"stack": normal((3, 16, 8), 7) * jnp.array([1e-3, 1.0, 1e3])[:, None, None],
       "zero": jnp.zeros((6, 4)), "bias": jnp.ones(4)}
  axes = {"stack": A(1, 2), "zero": A(0, 1), "bias": None}
  u, _ = symoptax.scale_by_rms(0.3, axes=axes).update(x, None)
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(u["stack"] ** 2, axis=(1, 2))), 0.3, rtol=1e-5)
  assert not bool(jnp.any(u["zero"])) and bool(jnp.all(u["bias"] == 1))
  u, _ = symoptax.scale_by_spectral_norm(axes=axes).update(x, None)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(u["stack"]), compute_uv=False)[:, 0],
                             1.0, rtol=2e-3)
  assert not bool(jnp.any(u["zero"])) and bool(jnp.all(u["bias"] == 1))


def test_spectral_shape_rule_is_sqrt_fan_out_over_fan_in():
  down = A(0, 1, fan_out="cols")  # [ff, d]: fan_out d = 4, fan_in ff = 16
  tx = symoptax.scale_by_shape("spectral", axes=down)
  u, _ = tx.update({"w": jnp.ones((16, 4))}, tx.init(None))
  assert float(u["w"][0, 0]) == pytest.approx(0.5)


# A model with every role a dense stack uses.
PARAMS = {
    "embed_tokens": {"embedding": normal((96, 16), 0)},
    "layers": {"self_attn": {"q_proj": {"kernel": normal((16, 16), 1)}},
               "mlp": {"down_proj": {"kernel": normal((32, 16), 2)},
                       "up_proj": {"kernel": normal((16, 32), 3)}},
               "input_layernorm": {"scale": jnp.ones(16)}},
    "lm_head": {"kernel": normal((16, 96), 4)},
}


def stack_update(preset, scale, lr=1.0):
  tx = symoptax.symmetry_stack(lr, preset=preset, params=PARAMS, scale=scale, head_dim=8,
                               overrides={"vector": {"learning_rate": 0.0}})
  grads = jax.tree.map(lambda p: normal(p.shape, 11) + 0.1, PARAMS)
  u, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return u


@pytest.mark.parametrize("preset", ["hybrid", "rownorm", "paper"])
def test_stack_scale_rms_gives_every_matrix_update_rms_02_times_one_rate(preset):
  u = stack_update(preset, "rms", lr=0.5)
  rows = {r["path"]: r for r in symoptax.describe(PARAMS, preset=preset, scale="rms",
                                                  head_dim=8).rows}
  for path, leaf in [("embed_tokens/embedding", u["embed_tokens"]["embedding"]),
                     ("lm_head/kernel", u["lm_head"]["kernel"]),
                     ("layers/mlp/down_proj/kernel", u["layers"]["mlp"]["down_proj"]["kernel"]),
                     ("layers/self_attn/q_proj/kernel",
                      u["layers"]["self_attn"]["q_proj"]["kernel"])]:
    assert rows[path]["lr ratio"] == 1.0, (preset, path)
    # Muon's "rms" shape rule is Moonlight's formula: exact for a full-rank polar factor, to
    # the Polar Express oracle's accuracy (a few percent); the others rescale exactly.
    tol = 0.05 if rows[path]["rule"] == "muon" else 1e-4
    assert rms(leaf) == pytest.approx(0.5 * 0.2, rel=tol), (preset, path)


def test_stack_scale_nuclear_rel_changes_only_the_nu_rules():
  ref, rel = stack_update("paper", None), stack_update("paper", "nuclear_rel")
  np.testing.assert_array_equal(rel["layers"]["mlp"]["up_proj"]["kernel"],
                                ref["layers"]["mlp"]["up_proj"]["kernel"])  # Muon
  for k in ("embed_tokens", "lm_head"):  # right polar, hybrid: a different size
    a, b = jax.tree.leaves(ref[k])[0], jax.tree.leaves(rel[k])[0]
    assert abs(rms(a) / rms(b) - 1) > 0.1, k
    cos = float(jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
    assert cos == pytest.approx(1.0, abs=1e-5), k  # the same direction


def test_stack_options_win_over_the_scale_and_describe_shows_it():
  tx = symoptax.symmetry_stack(1.0, preset="hybrid", params=PARAMS, scale="rms",
                               overrides={"lm_head": {"options": {"scale": "nuclear"}}})
  tx.init(PARAMS)
  rows = {r["path"]: r for r in symoptax.describe(
      PARAMS, preset="hybrid", scale="rms",
      overrides={"lm_head": {"options": {"scale": "nuclear"}}}).rows}
  assert rows["lm_head/kernel"]["shape factor"] == "nuclear"
  assert rows["embed_tokens/embedding"]["shape factor"] == "rms"
  # Muon under "rms": Moonlight's 0.2 sqrt(max(rows, cols)).
  assert rows["layers/mlp/down_proj/kernel"]["shape factor"] == pytest.approx(
      0.2 * 32 ** 0.5, abs=0.005)  # printed to 3 significant digits
