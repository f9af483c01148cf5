#!/usr/bin/env bash
# The GPU check of redrep: one script, at most about 6 minutes on one GPU, run from the repository root:
#
#     bash benchmarks/gpu_wheels.sh      # once, on a machine with network: the missing packages as wheels, in .whl/
#     bash benchmarks/gpu_check.sh       # on the GPU machine (no network needed); log and summary in $OUT
#
# Steps, each under its own time limit (and all under GPU_CHECK_BUDGET seconds, 345 by default); a step that fails
# or runs out of time is reported and the next one runs:
#   1. set-up: the wheels of .whl/ into /tmp/site, the compiled fast pass built in place, redrep installed
#      (pip install -e . without network; PYTHONPATH=src:/tmp/site either way);
#   2. the machine: nvidia-smi, Python, torch, CUDA;
#   3. pytest -m gpu: the CUDA tests of tests/gpu;
#   4. benchmarks/bench_gpu.py, the analysis on the GPU against the CPU, where it exists (with its --quick or
#      --budget option);
#   5. a 4-width WRN-16 sweep on one GPU with --jobs 4, then --jobs 1, on CIFAR-format data written here, and the
#      speedup of the run stage;
#   6. benchmarks/bench_train_gpu.py (with what is left of the budget): training images per second of
#      WRN-28-1..16, packed and compiled, and the estimate of the paper's grid;
#   7. a summary of every figure, printed and written to $OUT/summary.txt.
# Without a CUDA GPU the GPU steps say so and are skipped; the training bench runs its --quick setting and the
# sweep step a tiny CPU stand-in, so that everything but the GPU itself is checked on any machine.
#
# Environment: OUT (default ./gpu_check_out), PYTHON (default python3), GPU_CHECK_BUDGET (seconds),
# GPU_CHECK_SWEEP_EPOCHS and GPU_CHECK_SWEEP_IMAGES (the size of each sweep run), GPU_CHECK_BENCH_GPU (seconds
# of bench_gpu.py, 150 by default).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PY
BUDGET=${GPU_CHECK_BUDGET:-345}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/redrep_gpu_check.XXXXXX")
export WORK
LOG=$OUT/gpu_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
T0=$SECONDS
SUMMARY=()

note() { SUMMARY+=("$*"); }

# run_step NAME LIMIT CMD...: CMD under `timeout`, cut to what is left of the budget; its output also in $WORK/NAME.txt
run_step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - T0)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        echo "=== $name: skipped (the budget of $BUDGET s is spent)"
        note "$(printf '%-22s skipped: the budget of %s s is spent' "$name" "$BUDGET")"
        return 124
    fi
    echo "=== $name (at most $limit s): $*"
    local t=$SECONDS rc st
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$WORK/$name.txt"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) st=ok ;;
        124 | 137) st="timed out after $limit s" ;;
        *) st="failed (exit status $rc)" ;;
    esac
    echo "=== $name: $st in $((SECONDS - t)) s"
    note "$(printf '%-22s %s in %d s' "$name" "$st" $((SECONDS - t)))"
    return "$rc"
}

skip_step() {
    echo "=== $1: skipped: $2"
    note "$(printf '%-22s skipped: %s' "$1" "$2")"
}

echo "redrep GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null | cut -c1-80)"
echo "log and summary in $OUT; scratch in $WORK"

# ------------------------------------------------------------------ 1. set-up
cat >"$WORK/setup.sh" <<'EOF'
PIP_TARGET=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site)
if compgen -G ".whl/*.whl" >/dev/null; then
    if ! "$PY" "${PIP_TARGET[@]}" .whl/*.whl 2>/dev/null; then  # one unusable wheel stops them all: one by one
        for w in .whl/*.whl; do
            "$PY" "${PIP_TARGET[@]}" "$w" 2>/dev/null || echo "not installed: $(basename "$w") (not for this Python)"
        done
    fi
    echo "wheels of .whl/ in /tmp/site: $(ls /tmp/site | grep -c dist-info)"
else
    echo "no .whl/ here (benchmarks/gpu_wheels.sh makes it): using the packages this Python has"
fi
if "$PY" setup.py -q build_ext --inplace >"$WORK/build.txt" 2>&1 && compgen -G "src/redrep/core/_fastpass*.so" >/dev/null; then
    echo "compiled fast pass built in place: $(cd src/redrep/core && ls _fastpass*.so)"
else
    echo "no compiled fast pass (the numpy pass counts the same): $(grep -i -m2 'error\|redrep:' "$WORK/build.txt")"
fi
if "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$WORK/pip.txt" 2>&1; then
    echo "installed: pip install --no-deps --no-build-isolation -e ."
else
    echo "pip install -e . failed ($(tail -1 "$WORK/pip.txt")); redrep runs from src/ (PYTHONPATH)"
fi
"$PY" -c "import redrep; print('redrep', redrep.__version__, 'from', redrep.__file__)"
EOF
export PYTHONPATH="$ROOT/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
run_step setup 90 bash "$WORK/setup.sh"

# ------------------------------------------------------------------ 2. the machine
cat >"$WORK/machine.py" <<'EOF'
import os, platform, sys

print("python", sys.version.split()[0], platform.machine(), os.cpu_count(), "cores")
try:
    import torch
except ImportError:
    print("torch not installed")
    raise SystemExit
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
import numpy, scipy

print("numpy", numpy.__version__, "scipy", scipy.__version__)
from redrep.core.accuracy import fastpass_name

print("accuracy pass on the CPU:", fastpass_name())
EOF
cat >"$WORK/machine.sh" <<'EOF'
if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
"$PY" "$WORK/machine.py"
EOF
run_step machine 30 bash "$WORK/machine.sh"
GPU_NAME=$("$PY" -c "
import os, torch
os.environ.setdefault('PYTORCH_NVML_BASED_CUDA_CHECK', '1')
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
if [[ -n $GPU_NAME ]]; then
    echo "GPU: $GPU_NAME"
    note "GPU: $GPU_NAME"
    NO_GPU=""
else
    NO_GPU="no CUDA GPU (torch.cuda.is_available() is False)"
    echo "$NO_GPU: the GPU steps are skipped or run as CPU stand-ins"
    note "GPU: none ($NO_GPU)"
fi
note "$(grep -m1 '^torch ' "$WORK/machine.txt" 2>/dev/null || echo 'torch: ?')"

# ------------------------------------------------------------------ 3. pytest -m gpu
if [[ -z $NO_GPU ]]; then
    # four test processes at once where pytest-xdist is there: the tests wait mostly on their own subprocesses
    XDIST=()
    "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)
    run_step pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" ${XDIST[@]+"${XDIST[@]}"}
    note "  $(grep -E '(passed|failed|skipped|error)' "$WORK/pytest_gpu.txt" | tail -1)"
else
    # the same command, to check it here: every gpu test is skipped, with its reason
    run_step pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" tests/gpu
    note "  $(grep -E '(passed|failed|skipped|error)' "$WORK/pytest_gpu.txt" | tail -1)"
fi

# ------------------------------------------------------------------ 4. the analysis benchmark
if [[ ! -f benchmarks/bench_gpu.py ]]; then
    skip_step bench_gpu "benchmarks/bench_gpu.py is not in this checkout"
elif [[ -n $NO_GPU ]]; then
    skip_step bench_gpu "$NO_GPU"
else
    # the paper shape and the ImageNet shape at full size (the CPU side of the latter on a row subset that fits)
    BG=${GPU_CHECK_BENCH_GPU:-150}
    run_step bench_gpu $((BG + 30)) "$PY" benchmarks/bench_gpu.py --budget "$BG" --workdir "$WORK/bench_gpu"
fi

# ------------------------------------------------------------------ 5. sweeps: --jobs 4 against --jobs 1
cat >"$WORK/sweeps.py" <<'EOF'
"""A 4-width WRN-16 sweep with --jobs J, then --jobs 1, on one GPU; the speedup of their run stages."""
import json, os, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, "benchmarks")
from bench_train import write_sample_cifar  # noqa: E402

work, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
gpu = device == "cuda"
epochs = int(os.environ.get("GPU_CHECK_SWEEP_EPOCHS", 12 if gpu else 1))
images = int(os.environ.get("GPU_CHECK_SWEEP_IMAGES", 5120 if gpu else 256))
jobs = 4 if gpu else min(4, os.cpu_count() or 1)
limit = float(sys.argv[4]) / 2  # seconds for each of the two sweeps
(work / "data").mkdir(parents=True, exist_ok=True)
write_sample_cifar(work / "data" / "cifar-10-python.tar.gz", images, images // 5)
env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")} if gpu else dict(os.environ)
results = {"device": device, "epochs": epochs, "train_images": images, "widths": [16, 32, 64, 128]}
print(f"WRN-16, W = 16, 32, 64, 128 (k = 0.25 .. 2), 1 seed, {epochs} epochs of {images} images, on {device}")
for j in (jobs, 1):
    cmd = [sys.executable, "-m", "redrep", "sweep", "--dataset", "cifar10", "--data-dir", str(work / "data"),
           "--arch", "wide_resnet16", "--widths", "16,32,64,128", "--seeds", "1", "--epochs", str(epochs),
           "--jobs", str(j), "--device", device, "--acc-rep", "5", "--r2-rep", "3", "--out", str(work / f"jobs{j}"), "-q"]
    t0 = time.perf_counter()
    try:  # a sweep that hangs must leave time for the other (its workers die with it)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"--jobs {j}: stopped after {limit} s")
        results[f"jobs{j}"] = {"exit": "timeout", "wall_s": limit}
        continue
    wall = time.perf_counter() - t0
    print("\n".join(x for x in r.stdout.splitlines() if not x.startswith("figure:")), r.stderr[-1500:], sep="\n")
    if r.returncode != 0:
        print(f"--jobs {j}: the sweep failed (exit status {r.returncode})")
        results[f"jobs{j}"] = {"exit": r.returncode, "wall_s": wall}
        continue
    doc = json.loads((work / f"jobs{j}" / "sweep.json").read_text())
    results[f"jobs{j}"] = {"exit": 0, "wall_s": round(wall, 1), **doc["timings_s"], "status": doc["status"]}
    print(f"--jobs {j}: {wall:.1f} s in all, runs {doc['timings_s']['runs']} s, status {doc['status']}")
a, b = results.get(f"jobs{jobs}", {}), results.get("jobs1", {})
if a.get("exit") == 0 and b.get("exit") == 0:
    results["jobs"] = jobs
    results["speedup_runs"] = round(b["runs"] / max(a["runs"], 1e-9), 2)
    results["speedup_wall"] = round(b["wall_s"] / max(a["wall_s"], 1e-9), 2)
    print(f"--jobs {jobs} against --jobs 1: run stage {results['speedup_runs']}x, whole command "
          f"{results['speedup_wall']}x faster")
(out / "sweeps.json").write_text(json.dumps(results, indent=1))
sys.exit(0 if a.get("exit") == 0 and b.get("exit") == 0 else 1)
EOF
if [[ -z $NO_GPU ]]; then
    run_step sweeps 110 "$PY" "$WORK/sweeps.py" "$WORK/sweeps" "$OUT" cuda 100
else
    echo "(CPU stand-in: checks the step, not the speed: $NO_GPU)"
    run_step sweeps 400 "$PY" "$WORK/sweeps.py" "$WORK/sweeps" "$OUT" cpu 380
fi

# ------------------------------------------------------------------ 6. the training benchmark
if [[ -z $NO_GPU ]]; then
    # what is left of the budget, less the start-up of torch and a margin; its plain table needs about 30 s
    TB=$((BUDGET - (SECONDS - T0) - 25))
    ((TB < 40)) && TB=40
    run_step bench_train_gpu $((TB + 25)) "$PY" benchmarks/bench_train_gpu.py --budget "$TB" --json "$OUT/bench_train_gpu.json"
else
    run_step bench_train_gpu 240 "$PY" benchmarks/bench_train_gpu.py --quick --device cpu --json "$OUT/bench_train_gpu.json"
fi

# ------------------------------------------------------------------ 7. summary
figures() {
    "$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
f = out / "bench_train_gpu.json"
if f.is_file():
    d = json.loads(f.read_text())
    print(f"training, WRN-28-k at batch {d['batch']} on {d['device_name']} (images/s):")
    comp = {c["k"]: c for c in d.get("compiled", [])}
    for m in d.get("plain", []):
        c = comp.get(m["k"], {})
        extra = f", compiled {c['train_images_per_s']:,.0f} ({c['gain']:.2f}x)" if c.get("gain") else ""
        extra += f", compile failed" if "error" in c else ""
        print(f"  k = {m['k']:>4g} (W = {m['width']:>4}): train {m['train_images_per_s']:>9,.0f}, "
              f"eval {m['eval_images_per_s']:>9,.0f}{extra}")
    for p in d.get("packed", []):
        print(f"  packed k = {p['k']:g}, {p['processes']} processes: {p['aggregate_images_per_s']:,.0f} "
              f"together, {p['gain']:.2f}x one alone")
    g = d.get("grid")
    if g:
        print(f"  the paper's grid on one {d['device_name']}: {g['sequential_h']:.1f} h one run after the other "
              f"({g['training_only_h']:.1f} h training), {g['packed_h']:.1f} h packed")
f = out / "sweeps.json"
if f.is_file():
    d = json.loads(f.read_text())
    for k in sorted(x for x in d if x.startswith("jobs") and x != "jobs"):
        r = d[k]
        print(f"sweep --{k[:4]} {k[4:]}: " + (f"{r['wall_s']} s, runs {r['runs']} s, {r['status']}"
                                              if r.get("exit") == 0 else f"failed (exit {r.get('exit')})"))
    if "speedup_runs" in d:
        print(f"sweep speedup, --jobs {d['jobs']} against --jobs 1 on {d['device']}: run stage "
              f"{d['speedup_runs']}x (target >= 2), whole command {d['speedup_wall']}x")
EOF
}
{
    echo
    echo "==================== summary ($((SECONDS - T0)) s) ===================="
    printf '%s\n' "${SUMMARY[@]}"
    if [[ -f $WORK/bench_gpu.txt ]]; then
        echo "bench_gpu.py, its last lines:"
        tail -n 15 "$WORK/bench_gpu.txt" | sed 's/^/  /'
    fi
    figures
} | tee "$OUT/summary.txt"
rm -rf "$WORK"
exec >&- 2>&-
wait "$TEE_PID"  # the log complete before this script ends
