#!/usr/bin/env bash
# Evaluation over a Ray cluster on a Cloud TPU VM pod slice: worker 0 runs the Ray head and
# the driver, every worker joins as a Ray node, and the episodes' LLM calls go to SGLang
# servers (on GPU nodes; launch/sglang_server.sh), listed comma-separated in ENDPOINTS.
#
#   ENDPOINTS=http://10.0.0.5:30000,http://10.0.0.6:30000 \
#   launch/tpu_pod_ray_eval.sh my-v5p-64 us-east5-a /mnt/ckpt/Qwen2.5-32B-Instruct \
#       /mnt/runs/eval --config.episodes_per_task=25
#
# Arguments: TPU_NAME ZONE CHECKPOINT (the served model; its tokenizer is read here) WORKDIR
# (a path every worker mounts, e.g. a gcsfuse or Filestore mount) [extra absl flags]. The
# checkout and venv must already be on every worker at ~/automem (see tpu_pod_train.sh).
# Environment: CONFIG (default experiments/configs/evaluate.py:full,ray), RAY_PORT (6379),
# DRY_RUN=1 (print the gcloud commands instead of running them).
set -euo pipefail
name=${1:?usage: launch/tpu_pod_ray_eval.sh TPU_NAME ZONE CHECKPOINT WORKDIR [flags]}
zone=${2:?zone}
ckpt=${3:?checkpoint}
workdir=${4:?workdir}
shift 4
endpoints=${ENDPOINTS:?set ENDPOINTS to the SGLang servers, comma-separated}
ray_port=${RAY_PORT:-6379}
config=${CONFIG:-experiments/configs/evaluate.py:full,ray}
extra=$(printf ' %q' "$@")
# DRY_RUN prints each command as one write (background jobs' lines do not interleave).
run() { if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "$(printf '%q ' "$@")"; else "$@"; fi; }
ssh_to() {  # WORKER COMMAND: run COMMAND in the venv on one worker (or all)
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker="$1" --command \
    "cd ~/automem && . .venv/bin/activate && export PYTHONPATH=\$HOME/automem && $2"
}
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  head_ip=HEAD_IP
else
  head_ip=$(gcloud compute tpus tpu-vm describe "$name" --zone "$zone" \
    --format='value(networkEndpoints[0].ipAddress)')
fi
# Ray detects each worker's TPU chips ("TPU" resource); a shard's Craftax batch is sharded over
# the chips of the worker it runs on (CrafterEnv uses all local devices).
ssh_to 0 "ray start --head --node-ip-address=${head_ip} --port=${ray_port} --include-dashboard=false"
ssh_to all "ray start --address=${head_ip}:${ray_port} || true"   # worker 0 is already in
ssh_to 0 "python -m experiments.evaluate --config=${config} \
  --config.ray.address=${head_ip}:${ray_port} --config.llm.model=${ckpt} \
  --config.llm.sglang.tokenizer_path=${ckpt} --config.llm.sglang.endpoints=${endpoints} \
  --workdir=${workdir}${extra}"
ssh_to all "ray stop"
