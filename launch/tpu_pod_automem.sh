#!/usr/bin/env bash
# The AutoMem pipeline (experiments.automem) on a Cloud TPU VM slice with the local JAX
# engine: the driver runs on worker 0 and serves the agent model in-process
# (llm.backend=local) on that worker's chips, Crafter's env batch sharded over them
# (automem.envs.crafter); no GPU server is involved. The local engine places the model on
# one chip (it takes no mesh yet), so use a slice whose single host holds the model (a
# v5p-8 / v6e-8 host for a 7B-14B model); a 32B agent wants the SLURM/SGLang recipe.
#
#   TPU_NAME=my-v5p-8 ZONE=us-east5-a CKPT=/mnt/ckpt/Qwen2.5-7B-Instruct \
#   launch/tpu_pod_automem.sh experiments/configs/automem.py:paper /mnt/runs/automem
#
# Arguments: CONFIG[:VARIANT] WORKDIR [extra absl flags for experiments.automem]. Environment:
# TPU_NAME, ZONE (required), CKPT (HF-format checkpoint every worker reads, e.g. a gcsfuse
# mount; required), DRY_RUN=1 (print the gcloud command). The checkout and its venv must be at
# ~/automem on the worker (see launch/tpu_pod_train.sh). Re-running resumes (same WORKDIR).
set -euo pipefail
usage="usage: TPU_NAME=.. ZONE=.. CKPT=.. launch/tpu_pod_automem.sh CONFIG[:VARIANT] WORKDIR [flags]"
config=${1:?$usage}
workdir=${2:?$usage}
shift 2
name=${TPU_NAME:?$usage}
zone=${ZONE:?$usage}
ckpt=${CKPT:?$usage}
extra=$(printf ' %q' "$@")
remote="cd ~/automem && . .venv/bin/activate && JAX_PLATFORMS=tpu python -m experiments.automem \
 --config=$(printf '%q' "$config") --config.eval.llm.backend=local \
 --config.eval.llm.local.checkpoint=$(printf '%q' "$ckpt") --config.eval.llm.local.dtype=bfloat16 \
 --config.eval.llm.local.max_batch_size=32 --workdir=$(printf '%q' "$workdir")${extra}"
cmd=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 --command "$remote")
if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
