# Shared settings of the tpu/ scripts (sourced). Override any of them in the environment.
set -euo pipefail
TPU_NAME=${TPU_NAME:-jaxalign}
ZONE=${ZONE:-us-east5-a}                 # v5p: us-east5-a; v5e: e.g. us-west4-a
ACCELERATOR=${ACCELERATOR:-v5p-32}       # v5p-32 = 16 chips on 4 hosts; v5litepod-16 = 16 v5e chips on 4 hosts
case "$ACCELERATOR" in
  v5litepod-*) DEFAULT_RUNTIME=v2-alpha-tpuv5-lite ;;
  v5p-*) DEFAULT_RUNTIME=v2-alpha-tpuv5 ;;
  *) DEFAULT_RUNTIME=tpu-ubuntu2204-base ;;
esac
RUNTIME=${RUNTIME:-$DEFAULT_RUNTIME}
REMOTE_DIR=${REMOTE_DIR:-jaxalign}       # the checkout on every worker, relative to the home directory
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

# `run CMD...` prints the command and runs it, or only prints it when DRY_RUN=1.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

# `on_all_workers 'shell command'` runs the command on every host of the slice, in parallel.
on_all_workers() {
  # shellcheck disable=SC2086
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"
}
