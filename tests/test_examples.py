"""The runnable examples, in smoke mode (SYMOPTAX_SMOKE=1): pretrain.py (metrics, checkpoint,
PNG, bitwise resume, --data errors, data parallel on 8 CPU devices, the first step's rate,
throughput without compilation), the MaxText-style example on 8 CPU devices, custom_hybrid.py;
every script's --help; benchmarks/accelerator.sh --quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from examples import data as data_lib
from examples import pretrain

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("step", "loss", "lr", "grad_norm", "val_loss")


@pytest.fixture(autouse=True)
def smoke_env(monkeypatch, tmp_path_factory):
  monkeypatch.setenv("SYMOPTAX_SMOKE", "1")
  # One tokenizer cache for the whole session, never the user's ~/.cache.
  monkeypatch.setenv("SYMOPTAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_script(script, *args, devices=None, check=True):
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def metrics(out):
  return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def core(rows):
  return [{k: r.get(k) for k in KEYS} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("full")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SYMOPTAX_SMOKE", "1")
    mp.setenv("SYMOPTAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    rows = pretrain.main(["--out", str(out), "--no-progress"])
  return out, rows


def test_pretrain_smoke_writes_metrics_checkpoint_and_plot(full_run):
  out, rows = full_run
  assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 20
  assert core(metrics(out)) == core(rows)
  loss = np.array([r["loss"] for r in rows])
  assert np.isfinite(loss).all()
  assert loss[-5:].mean() < loss[:5].mean() - 0.2, loss  # the loss falls
  vals = [r["val_loss"] for r in rows if "val_loss" in r]
  assert len(vals) >= 2 and vals[-1] < vals[0]
  steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
  assert steps and steps[-1] == rows[-1]["step"]
  assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  config = json.loads((out / "config.json").read_text())
  assert config["preset"] == symoptax.DEFAULT_PRESET and config["params"] > 0


def test_pretrain_logs_diagnostics_and_the_centred_head_does_not_drift(full_run, tmp_path):
  out, rows = full_run
  diag = [r for r in rows if "diag/lm_head/mean_row_step" in r]
  every = json.loads((out / "config.json").read_text())["diag_every"]
  assert [r["step"] for r in diag] == [s for s in range(1, len(rows) + 1)
                                       if s % every == 0 or s == len(rows)]
  assert all(np.isfinite(r["max_logit"]) for r in rows)
  assert (out / "diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  for r in diag:  # the default: a centred hybrid head, uncentred AdamW vectors
    assert r["diag/lm_head/mean_row_step"] < 1e-6 * r["diag/lm_head/update_op"], r
    assert r["diag/mlp_in/update_rel"] > 0 and r["diag/vector/update_rms"] > 0
  # The same run without centring: the head's steps move it along the softmax shift.
  uncentred = pretrain.main(["--out", str(tmp_path / "u"), "--no-progress", "--uncentred"])
  drift = [r["diag/lm_head/mean_row_step"] / r["diag/lm_head/update_op"] for r in uncentred
           if "diag/lm_head/mean_row_step" in r]
  assert min(drift) > 1e-4, drift


def test_resume_is_bitwise_identical(full_run, tmp_path):
  full_out, full_rows = full_run
  out = str(tmp_path / "resumed")
  stop = 13  # not a checkpoint interval: the stop itself checkpoints
  first = pretrain.main(["--out", out, "--no-progress", "--stop-at", str(stop)])
  assert first[-1]["step"] == stop
  rows = pretrain.main(["--out", out, "--no-progress", "--resume"])
  assert core(rows) == core(full_rows)
  assert core(metrics(out)) == core(full_rows)
  # The final parameters match too (bitwise), restored from each run's last checkpoint.
  import orbax.checkpoint as ocp
  last = full_rows[-1]["step"]
  load = lambda d: ocp.StandardCheckpointer().restore(Path(d) / "checkpoints" / str(last)
                                                      / "state")
  a, b = load(full_out), load(out)
  import jax
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
  out = tmp_path / "crash"
  pretrain.main(["--out", str(out), "--no-progress", "--stop-at", "10"])
  with (out / "metrics.jsonl").open("a") as f:  # a crash after logging step 11, before its ckpt
    f.write(json.dumps({"step": 11, "loss": 0.0}) + "\n")
  rows = pretrain.main(["--out", str(out), "--no-progress", "--resume", "--stop-at", "12"])
  assert [r["step"] for r in rows] == list(range(1, 13))
  assert rows[10]["loss"] != 0.0


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "empty_file", "glob"])
def test_data_errors_name_the_path(tmp_path, kind):
  if kind == "missing":
    path = str(tmp_path / "no_such_corpus.txt")
  elif kind == "empty_dir":
    (tmp_path / "corpus").mkdir()
    path = str(tmp_path / "corpus")
  elif kind == "empty_file":
    (tmp_path / "empty.txt").write_text("")
    path = str(tmp_path / "empty.txt")
  else:
    path = str(tmp_path / "nothing_*.txt")
  with pytest.raises(SystemExit) as e:
    pretrain.main(["--out", str(tmp_path / "run"), "--data", path, "--no-progress"])
  message = str(e.value)
  assert path in message and "\n" not in message and message.startswith("pretrain.py: error")


def test_data_error_from_the_command_line_is_one_line(tmp_path):
  path = str(tmp_path / "missing_dir")
  proc = run_script("pretrain.py", "--data", path, "--out", str(tmp_path / "run"), check=False)
  assert proc.returncode != 0
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith("pretrain.py: error") and path in lines[-1]
  assert "Traceback" not in proc.stderr


def test_hf_data_without_datasets_or_network_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
  with pytest.raises(SystemExit, match=r"hf:some/corpus: needs the 'datasets' package"):
    pretrain.main(["--out", str(tmp_path / "run"), "--data", "hf:some/corpus"])


def test_pretrain_on_user_text_files(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  words = "the quick brown fox jumps over the lazy dog while symmetry keeps the rows".split()
  rng = np.random.default_rng(0)
  for i in range(30):
    (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice(words, 400)))
  rows = pretrain.main(["--out", str(tmp_path / "run"), "--data", str(corpus / "*.txt"),
                        "--vocab", "300", "--no-progress", "--preset", "rownorm"])
  assert rows[-1]["loss"] < rows[0]["loss"]


def test_batches_are_a_pure_function_of_the_position():
  ids = np.arange(1000, dtype=np.uint16)
  data = data_lib.TokenData(ids, ids[:100], vocab=1000)
  first = [data.batch(pos, 4, 9, seed=3) for pos in range(60)]  # crosses epochs (111 windows)
  fresh = data_lib.TokenData(ids, ids[:100], vocab=1000)
  np.testing.assert_array_equal(fresh.batch(57, 4, 9, seed=3), first[57])
  epoch0 = np.concatenate(first[:27])[:, 0] // 9  # 27 batches x 4 = 108 of 111 windows
  assert len(set(epoch0.tolist())) == 108  # no window twice within an epoch
  assert data.val_batches(2, 3, 9).shape == (2, 3, 10)


def test_pretrain_data_parallel_on_8_devices(tmp_path):
  proc = run_script("pretrain.py", "--out", str(tmp_path / "dp"), "--batch", "8",
                    "--no-progress", "--steps", "10", devices=8)
  assert "8 x cpu" in proc.stdout
  rows = metrics(tmp_path / "dp")
  assert len(rows) == 10 and all(np.isfinite(r["loss"]) for r in rows)


def test_maxtext_style_example_on_8_devices_matches_one_device(tmp_path):
  # FSDP x TP on 8 fake devices through symoptax's shard_map step vs the same run on one.
  proc = run_script("maxtext_style.py", "--losses", str(tmp_path / "l8.json"), devices=8)
  assert "mesh (data, fsdp, tensor) = (2, 2, 2) over 8 x cpu" in proc.stdout
  assert "optimizer-state shardings kept: True" in proc.stdout
  sharded = int(proc.stdout.strip().splitlines()[-1].split(";")[-1].split()[0])
  assert sharded >= 5, proc.stdout
  run_script("maxtext_style.py", "--losses", str(tmp_path / "l1.json"), devices=1)
  l8, l1 = (json.loads((tmp_path / f).read_text()) for f in ("l8.json", "l1.json"))
  assert l8[-1] < l8[0]
  np.testing.assert_allclose(l8, l1, rtol=1e-4)


def test_custom_hybrid_example():
  from examples import custom_hybrid
  results = custom_hybrid.main([])
  for name, losses in results.items():
    assert np.isfinite(losses).all() and losses[-1] < losses[0], name


def test_quickstart_byte_level_comparison(tmp_path):
  from examples import quickstart
  results = quickstart.main(["--out", str(tmp_path / "q.json"), "--optimizers", "adamw",
                             "paper"])
  assert set(results) == {"adamw", "paper"}
  assert json.loads((tmp_path / "q.json").read_text())["results"].keys() == results.keys()
  assert all(np.isfinite(r["val_loss"]) and r["val_loss"] < np.log(256) for r in
             results.values())


def test_resume_with_other_settings_is_refused(tmp_path):
  # The run itself uses the randomized oracle in a whole train step (its QR once hung
  # jaxlib 0.10.2's CPU runtime there).
  out = str(tmp_path / "run")
  rows = pretrain.main(["--out", out, "--no-progress", "--stop-at", "3",
                        "--polar-method", "randomized"])
  assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
  with pytest.raises(SystemExit, match=r"preset 'hybrid' -> 'muon'"):
    pretrain.main(["--out", out, "--no-progress", "--resume", "--preset", "muon",
                   "--polar-method", "randomized"])
  with pytest.raises(SystemExit, match=r"polar_method 'randomized' -> None"):
    pretrain.main(["--out", out, "--no-progress", "--resume"])
  with pytest.raises(SystemExit, match=r"wrap \[\] -> \['noise_adaptive'\]"):
    pretrain.main(["--out", out, "--no-progress", "--resume", "--polar-method", "randomized",
                   "--wrap", "noise_adaptive"])


def test_quality_benchmark_tunes_each_entry_and_compares_a_variant(tmp_path):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  report = quality.main(["--entries", "muon", "--variants", "aurora",
                         "--groups", "vocab", "--out", str(tmp_path)])
  summary = report["sizes"]["tiny"]["summary"]
  assert set(summary) == {"muon", "muon+aurora"}
  runs = {(r["entry"], tuple(map(tuple, r["setting"]["mults"])), r["seed"]): r
          for r in report["runs"]}
  # Base rate, then the vocabulary group at x3 (x1 is the base run, not run twice), then the
  # chosen setting on the second seed: three runs per entry.
  assert len(report["runs"]) == 6 and len(runs) == 6
  vocab = runs[("muon", (("vocab", 3.0),), 0)]["argv"]
  base = 0.02 * symoptax.stacks.LR_RATIO[("adamw", "*")]
  assert f"embedding={3 * base:.6g}" in vocab and f"lm_head={3 * base:.6g}" in vocab
  config = lambda r: json.loads(
      (Path(r["argv"][r["argv"].index("--out") + 1]) / "config.json").read_text())
  assert set(config(runs[("muon+aurora", (), 0)])["role_rules"].values()) == {"aurora"}
  rms = quality.Setting.of("hybrid:rms", 0.02).argv()  # a scale reaches pretrain's --scale
  assert rms[rms.index("--scale") + 1] == "rms"
  for s in summary.values():
    assert np.isfinite(s["mean"]) and len(s["finals"]) == 2
    chosen = [r for r in report["runs"] if r["entry"] == s["entry"]
              and r["setting"] == s["setting"] and r["steps"] == 6]
    assert sorted(r["final_val_loss"] for r in chosen) == sorted(s["finals"])
  assert (tmp_path / "tiny_val_loss_vs_wallclock.png").exists()
  saved = json.loads((tmp_path / "quality.json").read_text())
  assert saved["sizes"]["tiny"]["summary"].keys() == summary.keys()


def test_a_fresh_run_into_a_used_out_starts_over(tmp_path):
  out = str(tmp_path / "run")
  pretrain.main(["--out", out, "--no-progress", "--stop-at", "10"])
  rows = pretrain.main(["--out", out, "--no-progress", "--steps", "3"])  # warmup clamps to 2
  assert [r["step"] for r in rows] == [1, 2, 3] and len(metrics(out)) == 3
  steps = sorted(int(p.name) for p in (Path(out) / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [3]  # the earlier run's step-10 checkpoint is gone


def test_too_small_validation_split_is_a_one_line_error(tmp_path):
  (tmp_path / "tiny.txt").write_text("def f(x):\n    return x + 1\n" * 40)
  with pytest.raises(SystemExit, match=r"validation split has \d+ tokens.*--seq"):
    pretrain.main(["--out", str(tmp_path / "run"), "--data", str(tmp_path / "tiny.txt"),
                   "--vocab", "300", "--seq", "512"])


def test_quality_benchmark_survives_a_diverging_rate(tmp_path):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  report = quality.main(["--entries", "muon", "--groups", "--lr", "1e30", "--out",
                         str(tmp_path)])
  assert np.isnan(report["sizes"]["tiny"]["summary"]["muon"]["mean"])
  assert report["runs"][0]["error"] and (tmp_path / "quality.json").exists()


def test_quality_benchmark_rejects_an_unknown_entry():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  for entry in ("hybrid:bogus", "muon+router=bogus", "muon+left_polar", "nope"):
    with pytest.raises(SystemExit):
      quality.parse(["--entries", entry])


def test_quality_benchmark_on_the_moe_tunes_the_router_rule(tmp_path):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  report = quality.main(["--model", "olmoe", "--entries", "muon+router=left_polar",
                         "--groups", "router", "--seeds", "0", "--out", str(tmp_path)])
  argv = [r["argv"] for r in report["runs"]]
  assert all("router=left_polar" in a and a[a.index("--model") + 1] == "olmoe" for a in argv)
  # The router's rate x3 is its rule's default ratio (left polar on a router) x3.
  ratio = symoptax.stacks.LR_RATIO[("left_polar", "router")]
  assert any(f"router={3 * 0.02 * ratio:.6g}" in a for a in argv)
  assert report["sizes"]["tiny"]["summary"]["muon+router=left_polar"]["spikes"] >= 0


def test_loss_spikes_are_counted_against_the_recent_median():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  rng = np.random.default_rng(0)
  losses = list(5.0 - np.linspace(0, 1, 200) + 0.01 * rng.standard_normal(200))
  assert quality.spikes(losses) == 0
  losses[120] += 0.5
  losses[150] += 0.3
  assert quality.spikes(losses) == 2


def test_quality_second_pass_holds_group_rates_and_reuse_skips_known_runs(tmp_path, monkeypatch):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  s = quality.Setting.of("muon", 0.08).with_mult("vocab", 3.0).with_mult("vector", 3.0)
  held = s.with_base_held(0.02, "qwen3")
  assert held.base == 0.02
  for role, lr in s.role_lrs("qwen3").items():
    assert held.role_lrs("qwen3")[role] == pytest.approx(lr)  # 0.06 at either base
  # A group at its default ratio is held too (its multiplier becomes the base ratio's).
  assert quality.Setting.of("muon", 0.08).with_base_held(0.04, "qwen3").mult("vocab") == 2.0
  args = quality.parse(["--out", str(tmp_path), "--start", "vocab=6"])
  argv = lambda out: s.argv() + ["--size", "tiny", "--seed", "0", "--steps", "6", "--out", out,
                                 "--data", "builtin", "--eval-every", "3", "--ckpt-every", "6",
                                 "--no-progress"]
  earlier = {"argv": argv("elsewhere"), "final_val_loss": 4.5, "entry": "muon",
             "pretrain_version": quality.pretrain.RESULTS_VERSION}
  # The same run made by an earlier pretrain (other results for the same arguments): stale.
  stale = {**earlier, "final_val_loss": 9.9, "pretrain_version": 1}
  (tmp_path / "old.json").write_text(json.dumps({"runs": [stale, earlier]}))
  args.reuse, args.evals, args.seq = [str(tmp_path / "old.json")], 2, None
  monkeypatch.setattr(quality.pretrain, "run", lambda *a, **k: pytest.fail("ran again"))
  runner = quality.Runner(args, tmp_path)
  assert runner("tiny", s, 0, 6)["final_val_loss"] == 4.5 and runner.runs == [earlier]
  with pytest.raises(pytest.fail.Exception, match="ran again"):
    runner("tiny", s.with_(base=0.04), 0, 6)
  with pytest.raises(SystemExit):
    quality.parse(["--start", "vocabulary=3"])


def test_quality_tune_starts_where_told_and_a_second_pass_descends_further(monkeypatch):
  """The sweep logic on a synthetic loss (no training) whose best vocabulary rate does not
  follow the base rate: pass 1 sweeps the base with the vocabulary tied to it, so it stops
  halfway; pass 2 moves the base alone and reaches the floor."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  monkeypatch.delenv("SYMOPTAX_SMOKE", raising=False)  # the full sweep (nothing is trained)
  seen = []

  vocab = lambda s: s.role_lrs("qwen3").get("embedding", 0.25 * s.base)  # AdamW's ratio

  def fake_run(size, s, seed, steps):
    seen.append(s)
    b, v = np.log2(s.base / 0.02), np.log2(vocab(s) / 0.005)
    return {"final_val_loss": 5 + (b - 2) ** 2 + v ** 2, "val_curve": [],
            "spikes": 0, "s_per_step": 0.1}

  def tune(*argv):
    seen.clear()
    args = quality.parse(["--groups", "vocab", "--seeds", "0", "--extend", "0",
                          "--group-multipliers", "0.5", "2", *argv])
    return quality.tune(fake_run, args, "tiny", "muon"), list(seen)

  one, _ = tune()
  two, seen2 = tune("--passes", "2")
  assert one["mean"] == 6.0 and two["mean"] == 5.0
  # Pass 2's base sweep (runs 6-8, after 3 base and 3 vocabulary runs) holds the vocabulary's
  # absolute rate.
  assert len({round(vocab(s), 12) for s in seen2[6:9]}) == 1, seen2
  assert len({s.base for s in seen2[6:9]}) == 3
  _, seen3 = tune("--start", "vocab=4")
  assert [s.mult("vocab") for s in seen3[:3]] == [4.0] * 3  # the base sweep starts there


def test_pretrain_first_step_uses_a_nonzero_rate_and_logs_it(full_run):
  """Step k's logged lr is the schedule's rate for update k (optax's count k - 1), and the
  warmup does not make the first update a no-op."""
  out, rows = full_run
  args = pretrain.parse_args(["--out", str(out)])
  lr_of = pretrain.schedule(args, args.lr)
  assert float(lr_of(0)) == pytest.approx(args.lr / args.warmup)  # 1/3 of the peak in smoke
  for r in rows:
    assert r["lr"] == pytest.approx(float(lr_of(r["step"] - 1)), rel=1e-6), r["step"]
  assert max(r["lr"] for r in rows) == pytest.approx(args.lr)
  assert rows[-1]["lr"] == pytest.approx(0.1 * args.lr)  # cosine ends at 0.1 peak
  # The optimizer the run builds: every leaf moves on the first update.
  _, _, params, _, tx, opt_state, _ = pretrain.build(args, vocab=args.vocab)
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(0), p.shape, p.dtype), params)
  updates, _ = jax.jit(tx.update)(grads, opt_state, params)
  assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates))
  # WSD too: the first update gets a rate, the last one is not wasted on a zero rate.
  wsd = pretrain.parse_args(["--out", str(out), "--schedule", "wsd"])
  lr_of = pretrain.schedule(wsd, wsd.lr)
  assert float(lr_of(0)) > 0 and float(lr_of(wsd.steps - 1)) > 0


def test_pretrain_tokens_per_s_leaves_compilation_out(full_run):
  out, rows = full_run
  config = json.loads((out / "config.json").read_text())
  tokens = config["batch"] * config["seq"]
  first, rest = rows[0], rows[1:]
  assert first["compile_s"] > 0 and "tokens_per_s" not in first
  assert all("compile_s" not in r and r["tokens_per_s"] > 0 for r in rest)
  # Step 1 (compiling) is far slower than the steps after it; none of them is dragged down to
  # its rate.
  assert min(r["tokens_per_s"] for r in rest) > 2 * tokens / first["compile_s"]


def test_throughput_meter_leaves_paused_time_out():
  import time

  from examples import progress
  meter = progress.Throughput(tokens_per_step=100, halflife=1.0)
  time.sleep(0.05)
  assert meter.first() >= 0.05 and meter.rate is None
  time.sleep(0.05)
  meter.mark(1)
  meter.pause()
  time.sleep(0.3)  # evaluation, a checkpoint: not training time
  meter.resume()
  time.sleep(0.05)
  meter.mark(1)
  assert 100 / 0.1 < meter.rate <= 100 / 0.05  # ~2000/s; 500/s with the pause counted


def _help_text(path, monkeypatch, capsys) -> str:
  import runpy
  monkeypatch.setattr(sys, "path", [str(path.parent), str(ROOT), *sys.path])
  monkeypatch.setattr(sys, "argv", [str(path), "--help"])
  with pytest.raises(SystemExit) as e:
    runpy.run_path(str(path), run_name="__main__")
  assert e.value.code in (0, None)
  return capsys.readouterr().out


SCRIPTS = ["examples/pretrain.py", "examples/maxtext_style.py", "examples/custom_hybrid.py",
           "examples/quickstart.py", *(f"benchmarks/{n}.py" for n in (
               "step_time", "polar_accuracy", "polar_loop", "sharded_step", "head_drift",
               "quality"))]


def test_every_script_help_shows_the_defaults(monkeypatch, capsys):
  import re
  checked = 0
  for script in SCRIPTS:
    text = _help_text(ROOT / script, monkeypatch, capsys)
    options = text.split("\noptions:\n", 1)[1].split("\n\n")[0]
    # One entry per option: its first line and the indented help lines under it.
    entries = re.split(r"\n(?=  -)", options)
    for entry in entries:
      name = entry.split()[0].rstrip(",")
      takes_value = re.match(r"\s*-[-\w]+(,\s*-[-\w]+)*\s+[A-Z{\[]", entry)
      if takes_value:
        assert "default" in entry, f"{script} {name}: {entry!r}"
        checked += 1
  assert checked > 50


def test_accelerator_script_quick_writes_every_json(tmp_path):
  """benchmarks/accelerator.sh --quick on the CPU: every benchmark's JSON, under a folder named
  after the device kind and the date (about 45 s on a 2-core CPU)."""
  env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "accelerator.sh"), "--quick",
                         str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "No accelerator: running on the CPU." in proc.stderr
  (dest,) = tmp_path.iterdir()
  assert dest.name.startswith("cpu_") and len(dest.name.split("_")[1]) == 10  # YYYY-MM-DD
  results = {n: json.loads((dest / f"{n}.json").read_text())
             for n in ("step_time", "polar_accuracy", "polar_loop", "sharded_step")}
  assert all(r["device"] == "cpu" for r in results.values())
  assert set(results["step_time"]["results"]) == {"optax.adamw", "symoptax:hybrid"}
  assert results["polar_accuracy"]["rows"] and len(results["polar_loop"]["results"]) == 2
  assert results["sharded_step"]["device_count"] == 8
  assert {r["path"] for r in results["sharded_step"]["rows"]} == {"sharded", "jit"}


def test_pretrain_wraps_the_stack_and_quality_passes_wrappers_on():
  """--wrap NAME[,KEY=VALUE...] wraps the stack (innermost first); quality.py's
  PRESET@WRAPPER entries hand it over; unknown wrappers and malformed options are refused."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  args = pretrain.parse_args(["--wrap", "noise_adaptive,norm='frobenius'",
                              "--wrap", "drop_layers,keep_prob=0.5,seed=3"])
  assert args.wrappers == [("noise_adaptive", {"norm": "frobenius"}),
                           ("drop_layers", {"keep_prob": 0.5, "seed": 3})]
  params = {"mlp": {"up_proj": {"kernel": jnp.ones((8, 16))}}, "norm": {"scale": jnp.ones(8)}}
  tx = pretrain.make_optimizer(args, params)
  state = tx.init(params)
  assert type(state).__name__ == "DropLayersState"  # the outermost wrapper
  u, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
  # Stacked experts [E, d, ff] (3-D): the wrappers that read matrices get the roles' axes.
  moe = {"mlp": {"experts": {"down_proj": jnp.ones((2, 16, 8)), "up_proj": jnp.ones((2, 8, 16))},
                 "router": {"kernel": jnp.ones((8, 2))}}, "norm": {"scale": jnp.ones(8)}}
  tx = pretrain.make_optimizer(
      pretrain.parse_args(["--wrap", "noise_adaptive", "--wrap", "md_decoupled"]), moe)
  u, _ = tx.update(jax.tree.map(jnp.ones_like, moe), tx.init(moe), moe)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
  for bad in (["--wrap", "dropout"], ["--wrap", "drop_layers,keep_prob"]):
    with pytest.raises(SystemExit):
      pretrain.parse_args(bad)
  s = quality.Setting.of("muon:rms@drop_layers,keep_prob=0.5", 0.04)
  assert (s.preset, s.scale, s.wrap) == ("muon", "rms", "drop_layers,keep_prob=0.5")
  assert s.entry == "muon:rms@drop_layers,keep_prob=0.5"
  argv = s.argv()
  assert argv[argv.index("--wrap") + 1] == "drop_layers,keep_prob=0.5"
  assert "muon@noise_adaptive" in quality.parse(["--wrappers", "noise_adaptive"]).entries
  with pytest.raises(SystemExit):
    quality.parse(["--entries", "muon@dropout"])
  # --polar-method: every Muon-rule role takes that oracle; quality's muon+polar=METHOD.
  args = pretrain.parse_args(["--preset", "muon", "--polar-method", "layer_aware"])
  table = symoptax.stacks.resolve_rules(args.lr, args.preset, pretrain.overrides(args))
  muon_roles = {r: t for r, t in table.items() if t.rule == "muon"}
  assert muon_roles and all(dict(t.options)["method"] == "layer_aware"
                            for t in muon_roles.values())
  s = quality.Setting.of("muon+polar=randomized", 0.02)
  assert s.rules() == {} and s.argv()[-2:] == ["--polar-method", "randomized"]
  assert "muon+polar=layer_aware" in quality.parse(["--variants", "polar=layer_aware"]).entries
  with pytest.raises(SystemExit):
    quality.parse(["--entries", "muon+polar=bogus"])


def test_rule_options_reach_the_stack_and_quality_passes_them_on():
  """--rule ROLE=RULE[,KEY=VALUE...] gives the rule keyword options; quality.py's
  PRESET+RULE,KEY=VALUE entries hand them over; malformed options are refused."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  args = pretrain.parse_args(["--preset", "muon", "--rule", "hidden=conda,update_proj_gap=5",
                              "--rule", "lm_head=rownorm"])
  table = symoptax.stacks.resolve_rules(args.lr, args.preset, pretrain.overrides(args))
  assert (table["mlp_in"].rule, dict(table["mlp_in"].options)) == ("conda",
                                                                    {"update_proj_gap": 5})
  assert (table["lm_head"].rule, table["lm_head"].options) == ("rownorm", ())
  for bad in (["--rule", "hidden=conda,update_proj_gap"], ["--rule", "hidden=condor"]):
    with pytest.raises(SystemExit):
      pretrain.parse_args(bad)
  s = quality.Setting.of("muon+conda,update_proj_gap=60", 0.02)
  assert s.rules() == {"hidden": "conda,update_proj_gap=60"}
  argv = s.argv()
  assert argv[argv.index("--rule") + 1] == "hidden=conda,update_proj_gap=60"
  assert quality.Setting.of("muon+lm_head=rownorm", 0.02).rules() == {"lm_head": "rownorm"}
  s = quality.Setting.of("muon+lm_head=conda,update_proj_gap=60", 0.02)
  argv = s.with_mult("vocab", 2.0).argv()  # a role's rate beside its rule's options
  assert argv[argv.index("--rule") + 1] == "lm_head=conda,update_proj_gap=60"
  for bad in ("muon+condor,update_proj_gap=60", "muon+conda,update_proj_gap"):
    with pytest.raises(SystemExit):
      quality.parse(["--entries", bad])


def test_quality_hold_groups_sweeps_the_base_rate_alone(monkeypatch):
  """--hold-groups: the first base sweep keeps every group's absolute rate (a matrix rule's
  rate against fixed AdamW rates)."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  monkeypatch.delenv("SYMOPTAX_SMOKE", raising=False)
  seen = []

  def fake_run(size, s, seed, steps):
    seen.append(s)
    return {"final_val_loss": 5 + abs(np.log2(s.base / 0.02)), "val_curve": [], "spikes": 0,
            "s_per_step": 0.1}

  args = quality.parse(["--hold-groups", "--start", "vocab=36", "vector=4", "--groups",
                        "--seeds", "0", "--extend", "0", "--lr", "0.02",
                        "--base-multipliers", "0.5", "1", "2"])
  quality.tune(fake_run, args, "tiny", "muon+conda")
  rates = [s.role_lrs("qwen3") for s in seen[:3]]
  assert len({s.base for s in seen[:3]}) == 3
  assert all(r == pytest.approx(rates[1]) for r in rates)  # held at base 0.02's values
  assert rates[1]["embedding"] == pytest.approx(0.02 * 0.25 * 36)


def test_attention_rules_and_the_attention_group(monkeypatch):
  """--rule attention=RULE gives RULE to the q/k/v/o roles (Compositional Muon's); quality's
  "attention" group sweeps their rate alone, all four at one rate, at Muon's base rate."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quality
  monkeypatch.delenv("SYMOPTAX_SMOKE", raising=False)
  args = pretrain.parse_args(["--preset", "muon", "--rule", "attention=compositional_muon"])
  table = symoptax.stacks.resolve_rules(args.lr, args.preset, pretrain.overrides(args))
  assert {r for r in symoptax.ROLES if table[r].rule == "compositional_muon"} == set(
      symoptax.stacks.ATTENTION_ROLES)
  seen = []

  def fake_run(size, s, seed, steps):
    seen.append(s)
    m = s.mult("attention")
    return {"final_val_loss": 5 + abs(np.log(m / 3)), "val_curve": [], "spikes": 0,
            "s_per_step": 0.1}

  args = quality.parse(["--hold-groups", "--start", "vocab=36", "vector=4", "--groups",
                        "attention", "--seeds", "0", "--extend", "1", "--lr", "0.02",
                        "--base-multipliers", "1"])
  out = quality.tune(fake_run, args, "tiny", "muon+attention=compositional_muon")
  assert {s.base for s in seen} == {0.02}
  assert dict(map(tuple, out["setting"]["mults"]))["attention"] == pytest.approx(3.0)
  argv = quality.Setting(**{**out["setting"], "mults": tuple(map(tuple, out["setting"][
      "mults"]))}).argv()
  ratio = symoptax.stacks.LR_RATIO[("compositional_muon", "*")]
  for role in symoptax.stacks.ATTENTION_ROLES:
    assert f"{role}={0.02 * ratio * 3:.6g}" in argv
  # The stack takes the four rates (equal) in one branch.
  a = pretrain.parse_args(argv[:argv.index("--model")] + argv[argv.index("--model") + 2:])
  symoptax.stacks.resolve_rules(a.lr, a.preset, pretrain.overrides(a))
