#!/usr/bin/env bash
# Loop 2 training on a Cloud TPU pod slice: the same command on every worker;
# jax.distributed.initialize() finds the pod's coordinator itself.
#
#   launch/tpu_pod_train.sh my-v5p-64 us-east5-a gs://bucket/Qwen2.5-7B gs://bucket/runs/loop2 \
#       --config.fsdp=... (any absl flags)
#
# The checkout must already be on every worker at ~/automem with a venv made
# from requirements.txt plus jax[tpu] of the pinned jax version:
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command \
#     "cd ~/automem && python3 -m venv .venv && . .venv/bin/activate && \
#      pip install -r requirements.txt 'jax[tpu]==0.10.2' && pip install --no-deps -e ."
# CHECKPOINT and WORKDIR should be paths every worker can read (a gcsfuse
# mount or a shared filesystem); orbax writes from all workers.
set -euo pipefail
name=${1:?usage: launch/tpu_pod_train.sh TPU_NAME ZONE CHECKPOINT WORKDIR [flags]}
zone=${2:?zone}
ckpt=${3:?checkpoint}
workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${name}" --zone "${zone}" --worker=all --command \
  "cd ~/automem && . .venv/bin/activate && python -m experiments.train_proficiency \
   --config=experiments/configs/train_proficiency.py:gpu,checkpoint=${ckpt} \
   --config.distributed.enabled=True --workdir=${workdir}${extra}"
