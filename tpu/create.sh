#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice: `tpu/create.sh` (settings in tpu/common.sh, e.g.
# ACCELERATOR=v5litepod-16 ZONE=us-west4-a tpu/create.sh). QUEUED=1 asks through the queued-resources
# API (waits for capacity instead of failing); SPOT=1 asks for spot capacity. DRY_RUN=1 only prints.
source "$(dirname "$0")/common.sh"
extra=()
[ "${SPOT:-0}" = 1 ] && extra+=(--spot)
if [ "${QUEUED:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
    --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME" "${extra[@]}"
  echo "queued; watch it with: gcloud compute tpus queued-resources describe $TPU_NAME --zone=$ZONE"
else
  # shellcheck disable=SC2086
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${extra[@]}"
fi
