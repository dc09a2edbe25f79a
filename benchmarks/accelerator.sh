#!/usr/bin/env bash
# The accelerator benchmarks in one command, on whatever device JAX sees (the CPU if none):
#   step_time.py       optimizer step time and state memory, Qwen3-0.6B shapes (--scale 1)
#   polar_accuracy.py  accuracy, safety and speed of every polar oracle (full sweep)
#   polar_loop.py      Polar Express loop unrolled vs lax.scan (--scale 1)
#   sharded_step.py    collectives and step time of the sharded step over 8 devices (--scale 1;
#                      with fewer than 8 devices: 8 fake CPU devices at --scale 16, whose
#                      collective counts hold on any backend but whose times do not)
# Their JSON goes to OUTDIR/<device kind>_<date>/ (OUTDIR: benchmarks/results), with the
# console output of each in a .log beside it.
#
#   bash benchmarks/accelerator.sh [--quick] [OUTDIR]
#
# --quick (or QUICK=1): every part tiny (small shapes, one repeat, a few oracles/configs), a
# smoke test that runs in well under a minute on a CPU. PYTHON picks the interpreter (default:
# the repository's .venv if there is one, else python3).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick="${QUICK:-0}"
outdir=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "accelerator.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *)
      if [[ -n "$outdir" ]]; then
        echo "accelerator.sh: one OUTDIR, got '$outdir' and '$arg'" >&2; exit 2
      fi
      outdir="$arg" ;;
  esac
done
outdir="${outdir:-$root/benchmarks/results}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"

# The devices first; then their kind, platform and count for what follows.
read -r kind platform count < <("$PYTHON" - <<'EOF'
import re, sys
import jax
devices = jax.devices()
d = devices[0]
print(f"JAX {jax.__version__} sees {len(devices)} device(s): {devices}", file=sys.stderr)
if d.platform == "cpu":
  print("No accelerator: running on the CPU.", file=sys.stderr)
print(re.sub(r"[^a-z0-9]+", "-", d.device_kind.lower()).strip("-") or d.platform, d.platform,
      len(devices))
EOF
)
dest="$outdir/${kind}_$(date +%Y-%m-%d)"
mkdir -p "$dest"
echo "platform $platform, $count x $kind; quick=$quick; results in $dest"

run() {  # run NAME ARGS...: benchmarks/NAME.py ARGS, its output shown and kept in NAME.log
  local name="$1"
  shift
  echo
  echo "== $name $*"
  local t0=$SECONDS
  "$PYTHON" "benchmarks/$name.py" "$@" 2>&1 | tee "$dest/$name.log"
  echo "== $name: $((SECONDS - t0)) s"
}

if [[ "$quick" == 1 ]]; then
  # polar_accuracy measures with numpy's SVD and QR: on small matrices one BLAS thread is
  # faster, and several thrash on a busy CPU (5x slower on a loaded 2-core machine).
  export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
  step_time=(--scale 64 --repeats 1 --only optax.adamw symoptax:hybrid)
  polar_accuracy=(--quick --repeats 1 --oracles full:polar_express gram:eigh)
  polar_loop=(--scale 64 --repeats 1)
  sharded_step=(--scale 32 --repeats 1 --configs hybrid --meshes 2x2x2)  # 64: vocab % 4 != 0
else
  # --sequential: one optimizer's state at a time (all of them at once need ~60 GB).
  step_time=(--scale 1 --sequential)
  polar_accuracy=()
  polar_loop=(--scale 1)
  sharded_step=(--scale 1)
fi

run step_time "${step_time[@]}" --json "$dest/step_time.json"
run polar_accuracy "${polar_accuracy[@]}" --json "$dest/polar_accuracy.json"
run polar_loop "${polar_loop[@]}" --json "$dest/polar_loop.json"
if (( count >= 8 )); then
  run sharded_step "${sharded_step[@]}" --out "$dest/sharded_step.json"
else
  echo
  echo "sharded_step: JAX sees $count $platform device(s), the benchmark needs 8: running it on" \
       "8 fake CPU devices (collective counts valid for any backend, times not)."
  if [[ "$quick" != 1 ]]; then sharded_step=(--scale 16); fi
  JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=8" \
    run sharded_step "${sharded_step[@]}" --out "$dest/sharded_step.json"
fi

echo
echo "done: $dest"
ls -1 "$dest"
