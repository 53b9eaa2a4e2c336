#!/usr/bin/env bash
# GPU check of the paper profile (64^3 crops at 1 mm, ResNet-18-class encoder, pretext batch 128).
#
#   benchmarks/gpu_check.sh OUT_DIR [CASES]          (on a CUDA machine, from the repo root)
#
# 1. a phantom CT cohort and a short CAE, then residuals, on the GPU;
# 2. the pretext stage under torchrun (one process per GPU; NCCL only with several: a world of
#    one makes no process group): crops kept in GPU memory (the default), the BASELINE_CODE's
#    if given, then crops in host memory (PARANASAL_RESIDENT_DATA=0), with the GPU's
#    utilisation sampled by nvidia-smi every 100 ms;
# 3. the pretext network's pure compute throughput at the same batch (`speed --profile paper`:
#    random crops already on the GPU, no data handling) - the bound an epoch can reach;
# 4. fine-tuning at 10% labels, evaluation and predict timing (bf16 autocast);
# 5. `speed --compare-paper` at 64^3 (the paper's network against ours on this GPU), throughput
#    only by default: its AUPRC check ran past 2 minutes on an H200 (COMPARE_ARGS= to include it).
# Writes OUT_DIR/gpu_check.md (and the JSON/CSV files behind it) after each part, so a device
# call cut off later still returns what ran. Settings: PROFILE (paper), DEVICE (cuda),
# PRETEXT_EPOCHS (6), LABEL_FRACTION (0.1), WORKERS (all cores, for cropping), EXTRA_SET (more
# --set overrides, space separated), COMPARE_ARGS (`speed --compare-paper` options; default
# --no-auprc), PARTS (default "finetune compare": which of steps 4 and 5 run; the pretext stage
# and the network throughput always do), BASELINE_CODE (another version's package root, e.g.
# an older checkout's ParanasalSSL folder: its pretext stage is timed in the same run, on the
# same cohort and residuals, as row "baseline"), ARCHIVE (a .tar.gz that gets OUT_DIR after
# each part: for a device call that returns few files).
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [CASES]}
cases=${2:-600}
profile=${PROFILE:-paper}
device=${DEVICE:-cuda}
epochs=${PRETEXT_EPOCHS:-6}
fraction=${LABEL_FRACTION:-0.1}
workers=${WORKERS:-$(nproc)}
parts=" ${PARTS-finetune compare} "
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
work=$(mktemp -d)
cli() { "$py" -m paranasal_ssl "$@"; }
launch() { "$py" -m torch.distributed.run --standalone --nproc_per_node 1 -m paranasal_ssl "$@"; }
stamp() { echo "== $(date +%T) $*"; }
sets=(--set cae_train.epochs=2 --set cae_train.max_steps_per_epoch=15
      --set "pretext_train.epochs=$epochs" --set pretext_train.warmup_epochs=1
      --set finetune_train.epochs=8)
for s in ${EXTRA_SET:-}; do sets+=(--set "$s"); done

stamp environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$py" -c "import torch, monai, SimpleITK; print('torch', torch.__version__, 'CUDA',
torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
'monai', monai.__version__, 'SimpleITK', SimpleITK.Version.VersionString())"

stamp "synth $cases cases"
cli synth "$work/cohort" --cases "$cases" --modality ct --seed 0 --progress none
run="$work/run"
stamp train-cae
cli train-cae --run "$run" --manifest "$work/cohort/manifest.csv" --profile "$profile" \
    --device "$device" --workers "$workers" --progress none "${sets[@]}"
stamp residuals
cli residuals --run "$run" --device "$device" --workers "$workers" --progress none

pretext() {  # $1: label, then env settings
    local label=$1
    shift
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 \
        > "$out/util_$label.txt" 2>/dev/null &
    local smi=$!
    env NCCL_DEBUG=VERSION "$@" "$py" -m torch.distributed.run --standalone --nproc_per_node 1 -m paranasal_ssl \
        pretrain --run-dir "$run" --device "$device" --workers "$workers" --progress none
    kill "$smi" 2>/dev/null || true
    cp "$run/pretext/metrics.csv" "$out/pretext_$label.csv"
}
stamp "pretext, crops in GPU memory"
pretext gpu PARANASAL_RESIDENT_DATA=1
if [ -n "${BASELINE_CODE:-}" ]; then
    stamp "pretext of the baseline code ($BASELINE_CODE), crops in GPU memory"
    pretext baseline PARANASAL_RESIDENT_DATA=1 PYTHONPATH="$BASELINE_CODE:${PYTHONPATH:-}"
fi
stamp "pretext, crops in host memory"
pretext host PARANASAL_RESIDENT_DATA=0
cp "$run/config.json" "$out/run_config.json"

stamp "network throughput ($profile profile)"
cli speed --profile "$profile" --device "$device" --steps 10 --out "$out/speed" > /dev/null || true
archive() {
    if [ -n "${ARCHIVE:-}" ]; then tar czf "$ARCHIVE" -C "$(dirname "$out")" "$(basename "$out")"; fi
}
summarise() {
"$py" - "$out" "$run" <<'EOF'
import csv, json, statistics, sys
from pathlib import Path

from paranasal_ssl.training.checkpoint import read_checkpoint

out, run = Path(sys.argv[1]), Path(sys.argv[2])
cfg = json.loads((run / "config.json").read_text())
batch = cfg["pretext_train"]["batch_size"]
lines = ["# GPU check", ""]
speed = json.loads((out / "speed" / "speed.json").read_text()) \
    if (out / "speed" / "speed.json").exists() else None
env = (speed or {}).get("environment", {})
lines += [f"Machine: {env.get('cuda')}, {env.get('cpu_threads')} CPU threads, torch "
          f"{env.get('torch')}; profile {cfg['profile']}, crop {cfg['data']['crop']['shape']}^3,"
          f" pretext batch {batch}.", ""]
bound = None
if speed:
    nets = speed["reports"][0]["networks"]
    bound = nets["stage 3 pretext (encoder + decoder)"]["train_samples_per_s"]
    lines += ["| network | batch | train samples/s | inference samples/s |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['batch']} | {v['train_samples_per_s']} | "
              f"{v['inference_samples_per_s']} |" for k, v in nets.items()]
    pc = speed["reports"][0].get("predict_per_case")
    if pc:
        lines += ["", f"predict, one case ({pc['sides']} sides, scan {pc['scan_size']}): "
                  f"median {pc['median_s']:.3f} s, peak RSS {pc['peak_rss_mb']:.0f} MB"]
lines += ["", "| pretext data | epoch s (median, epochs 2+) | train samples/s | GPU busy "
          "(median of 100 ms samples) | vs pure compute |", "|---|---|---|---|---|"]
rows_named = {"gpu": "crops in GPU memory", "baseline": "baseline code, crops in GPU memory",
              "host": "crops in host memory"}
for label, name in rows_named.items():
    if not (out / f"pretext_{label}.csv").exists():
        continue
    rows = list(csv.DictReader(open(out / f"pretext_{label}.csv")))
    secs = [float(r["seconds"]) for r in rows[1:]] or [float(rows[0]["seconds"])]
    util = [int(x) for x in (out / f"util_{label}.txt").read_text().split() if x.isdigit()]
    busy = [u for u in util if u > 0]
    n = read_checkpoint(run / "pretext" / "last.pt")["meta"]["n_train_sinuses"]
    sps = (n // min(batch, n)) * min(batch, n) / statistics.median(secs)
    lines.append(f"| {name} | {statistics.median(secs):.2f} | {sps:.0f} | "
                 f"{statistics.median(busy) if busy else 0}% | "
                 f"{sps / bound if bound else float('nan'):.2f} |")
    lines.append(f"<!-- {label} losses: {[r['train_loss'] for r in rows]} -->")
cmp_md = out / "compare" / "paper_compare.md"
if cmp_md.exists():
    lines += ["", cmp_md.read_text()]
text = "\n".join(lines)
(out / "gpu_check.md").write_text(text)
print(text)
EOF
}
stamp summary
summarise > /dev/null
archive

if [[ $parts == *" finetune "* ]]; then
    stamp "fine-tune ${fraction} of the labels, evaluate"
    launch finetune --run-dir "$run" --label-fraction "$fraction" --label-seed 0 \
        --device "$device" --workers "$workers" --progress none
    cli evaluate --run "$run" --device "$device" --workers "$workers" --progress none \
        | tee "$out/evaluate.txt"
    stamp "network throughput ($profile profile) and predict"
    cli speed --profile "$profile" --device "$device" --steps 10 --out "$out/speed" \
        --model "$run" --manifest "$work/cohort/manifest.csv" > /dev/null || true
    summarise > /dev/null
    archive
fi
if [[ $parts == *" compare "* ]]; then
    stamp "compare with the paper's network"
    cli speed --compare-paper --device "$device" --steps 10 --batch 32 --out "$out/compare" \
        ${COMPARE_ARGS---no-auprc} > /dev/null || true
    summarise > /dev/null
    archive
fi
summarise
