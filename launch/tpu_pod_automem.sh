#!/usr/bin/env bash
# The AutoMem pipeline (experiments.automem) on a Cloud TPU VM slice with the local JAX
# engine: the driver runs on worker 0 and serves the agent model in-process
# (llm.backend=local, bf16) sharded over that worker's chips (llm.local.mesh, tensor parallel
# by default: heads, MLP, vocabulary and the KV cache split over the chips), Crafter's env
# batch sharded over them too (automem.envs.crafter); no GPU server is involved. The mesh
# spans one host (the driver is one process), so pick a single-host slice whose chips hold
# the model together: the 32B paper agent (8 KV heads) fits a v5p-8 (4 chips, MESH=tensor=4)
# or a v6e-8 (8 chips, MESH=tensor=8, the default tensor=-1).
#
#   TPU_NAME=my-v5p-8 ZONE=us-east5-a CKPT=/mnt/ckpt/Qwen2.5-32B-Instruct \
#   launch/tpu_pod_automem.sh experiments/configs/automem.py:paper /mnt/runs/automem
#
# Arguments: CONFIG[:VARIANT] WORKDIR [extra absl flags for experiments.automem]. Environment:
# TPU_NAME, ZONE (required), CKPT (HF-format checkpoint every worker reads, e.g. a gcsfuse
# mount; required), MESH (llm.local.mesh: "tensor=-1" = every chip of the host, default;
# "tensor=4", "fsdp=2,tensor=4"; tensor must divide the model's KV heads; "" = one chip),
# DRY_RUN=1 (print the gcloud command). The checkout and its venv must be at ~/automem on
# the worker (see launch/tpu_pod_train.sh). Re-running resumes (same WORKDIR).
set -euo pipefail
usage="usage: TPU_NAME=.. ZONE=.. CKPT=.. launch/tpu_pod_automem.sh CONFIG[:VARIANT] WORKDIR [flags]"
config=${1:?$usage}
workdir=${2:?$usage}
shift 2
name=${TPU_NAME:?$usage}
zone=${ZONE:?$usage}
ckpt=${CKPT:?$usage}
mesh=${MESH-tensor=-1}
extra=""
if (($#)); then extra=$(printf ' %q' "$@"); fi
remote="cd ~/automem && . .venv/bin/activate && JAX_PLATFORMS=tpu python -m experiments.automem \
 --config=$(printf '%q' "$config") --config.eval.llm.backend=local \
 --config.eval.llm.local.checkpoint=$(printf '%q' "$ckpt") --config.eval.llm.local.dtype=bfloat16 \
 --config.eval.llm.local.mesh=$(printf '%q' "$mesh") --config.eval.llm.local.max_batch_size=32 \
 --workdir=$(printf '%q' "$workdir")${extra}"
cmd=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 --command "$remote")
if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
