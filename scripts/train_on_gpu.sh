#!/usr/bin/env bash
# Train song-model candidates side by side on one GPU from an exported tokens.npz, and keep what each
# learned for the CPU machine to evaluate. Needs only python3 with torch and numpy (a GPU machine's image).
#
#   .venv/bin/personalize train transformer --config personalize/generate/configs/song.json \
#       --export-tokens var/gpu/tokens.npz
#   OUT=/some/folder MINUTES=6 bash scripts/train_on_gpu.sh var/gpu/tokens.npz
#
# Each candidate writes $OUT/<name>.pt (its best weights by validation loss, float16) and its config,
# history and loss curve into $OUT/runs.tar.gz; their logs go to $OUT/train.log.
set -uo pipefail
TOKENS=${1:?tokens.npz}
OUT=${OUT:?set OUT to the folder for the results}
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA <<< "${EXTRA:-}"  # more --set options for every run (a local dry run: tiny step counts)
WORK=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"${PYTHON:-python3}" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

common=(--set "train.device=\"$DEVICE\"" --set train.batch_size=32 --set train.lr=0.0015 --set train.min_lr=0.0001
        --set train.warmup_steps=200 --set train.max_steps=6000 --set train.eval_every=100
        --set train.eval_windows=512 --set train.patience=10 --set train.checkpoint_every_s=60
        --set "train.max_minutes=$MINUTES")
declare -A RUNS=(
  [l4d256_p20]="--set model.n_layer=4 --set model.n_embd=256 --set model.n_head=8 --set model.dropout=0.2"
  [l4d256_p20_kv2]="--set model.n_layer=4 --set model.n_embd=256 --set model.n_head=8 --set model.n_kv_head=2 --set model.dropout=0.2"
  [l4d256_p20_kv1]="--set model.n_layer=4 --set model.n_embd=256 --set model.n_head=8 --set model.n_kv_head=1 --set model.dropout=0.2"
  [l4d256_p30_kv1]="--set model.n_layer=4 --set model.n_embd=256 --set model.n_head=8 --set model.n_kv_head=1 --set model.dropout=0.3"
  [l6d256_p20_kv1]="--set model.n_layer=6 --set model.n_embd=256 --set model.n_head=8 --set model.n_kv_head=1 --set model.dropout=0.2"
  [l4d320_p20_kv1]="--set model.n_layer=4 --set model.n_embd=320 --set model.n_head=8 --set model.n_kv_head=1 --set model.dropout=0.2"
)
for name in "${!RUNS[@]}"; do
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 "${PYTHON:-python3}" personalize/generate/fit.py --tokens "$TOKENS" --out "$WORK/$name" \
      "${common[@]}" ${RUNS[$name]} "${EXTRA[@]}" > "$WORK/$name.log" 2>&1 &
done
wait
for name in "${!RUNS[@]}"; do
  echo "== $name"; tail -n 4 "$WORK/$name.log"
  cp "$WORK/$name/model.pt" "$OUT/$name.pt" 2>/dev/null || echo "$name wrote no weights"
  cat "$WORK/$name.log" >> "$OUT/train.log"
done
(cd "$WORK" && tar czf "$OUT/runs.tar.gz" --exclude='*.pt' --exclude='*.tmp' --exclude='*.ckpt' */)
ls -la "$OUT"
