#!/usr/bin/env bash
# Starts the same run on every worker of the slice, in the background, one process per host:
#   tpu/launch.sh sft configs/sft/qwen3_4b_tpu.yaml [a.b=value ...]
#   tpu/launch.sh grpo configs/grpo/qwen3_4b_tpu.yaml
# The configs set `run.distributed: {auto: true}`: JAX finds the other hosts of the slice by itself.
# Logs: ~/$REMOTE_DIR/logs/<command>.log on each worker; process 0 writes metrics, TensorBoard
# events and the HF export to run.run_dir (use a gs:// run.run_dir so every host writes its checkpoint shards
# to the same place). `tpu/launch.sh stop` ends the run on every worker; `tpu/launch.sh tail` follows
# worker 0's log.
source "$(dirname "$0")/common.sh"
cmd=${1:?usage: tpu/launch.sh sft|grpo|eval CONFIG [overrides...] | stop | tail}
shift
case "$cmd" in
  stop) on_all_workers "pkill -f '$REMOTE_DIR/.venv/bin/jaxalign' || true"; exit 0 ;;
  tail)
    # shellcheck disable=SC2086
    run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=0 \
      --command="tail -f $REMOTE_DIR/logs/*.log"; exit 0 ;;
esac
config=${1:?usage: tpu/launch.sh $cmd CONFIG [overrides...]}
shift
args=$(printf ' %q' "$config" "$@")
on_all_workers "cd $REMOTE_DIR && mkdir -p logs && JAXALIGN_NO_PROGRESS=1 nohup .venv/bin/jaxalign $cmd$args \
  > logs/$cmd.log 2>&1 < /dev/null &"
