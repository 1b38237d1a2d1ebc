#!/usr/bin/env bash
# Starts an SGLang server for one checkpoint, configured for AutoMem runs:
# prefix-friendly scheduling (lpm), LoRA adapters (the memory specialist) and
# grammar-constrained decoding. See launch/README.md.
#
#   launch/sglang_server.sh --model-path /ckpt/Qwen2.5-32B-Instruct --tp 4 \
#       --lora specialist=/runs/loop2/export/adapter --port 30000
#
# --dry-run prints the command instead of running it. Arguments after `--`
# go to sglang.launch_server unchanged. SGLANG_PYTHON picks the interpreter of
# the serving environment (pip install -r requirements-serve.txt).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/sglang_server.sh --model-path PATH [options] [-- extra sglang args]

  --model-path PATH          HF-format checkpoint dir (or hub id on a machine with access)
  --tp N                     tensor-parallel size (GPUs per replica)            [1]
  --dp N                     data-parallel replicas (total GPUs = tp * dp)      [1]
  --lora NAME=PATH           serve a LoRA adapter under NAME (repeatable); requests
                             select it with lora_path=NAME (LLMRequest.adapter)
  --enable-lora              LoRA on even without --lora, to load adapters at run time
                             (SGLangClient.load_lora_adapter); then also give
                             --max-lora-rank and --lora-target-modules
  --max-loras-per-batch N    adapters mixed in one batch                       [4]
  --max-lora-rank R          largest adapter rank to reserve memory for        [from adapters]
  --lora-target-modules M    modules adapters may touch: "all" or a list such as
                             "q_proj v_proj" (one quoted argument)            [from adapters]
  --schedule-policy P        lpm (longest prefix match: reuses the shared prompt
                             prefix of concurrent episodes) | fcfs | dfs-weight  [lpm]
  --mem-fraction-static F    GPU memory fraction for weights + KV cache        [0.85]
  --context-length N         max tokens per request                            [model's]
  --grammar-backend B        xgrammar | outlines | llguidance (regex/EBNF)     [xgrammar]
  --served-model-name NAME   name reported to clients                           [model path]
  --api-key KEY              require this key from clients
  --host HOST                bind address                                      [127.0.0.1]
  --port PORT                                                                   [30000]
  --dry-run                  print the command and exit
EOF
}

model_path=""; tp=1; dp=1; loras=(); enable_lora=0; max_loras=4; max_lora_rank=""
lora_modules=""; policy="lpm"
mem_fraction=0.85; context_length=""; grammar_backend="xgrammar"; served_name=""
api_key=""; host="127.0.0.1"; port=30000; dry_run=0; extra=()

need() { [[ $# -ge 2 && -n "$2" ]] || { echo "error: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model-path) need "$@"; model_path="$2"; shift 2 ;;
    --tp|--tp-size) need "$@"; tp="$2"; shift 2 ;;
    --dp|--dp-size) need "$@"; dp="$2"; shift 2 ;;
    --lora) need "$@"; loras+=("$2"); shift 2 ;;
    --enable-lora) enable_lora=1; shift ;;
    --lora-target-modules) need "$@"; lora_modules="$2"; shift 2 ;;
    --max-loras-per-batch) need "$@"; max_loras="$2"; shift 2 ;;
    --max-lora-rank) need "$@"; max_lora_rank="$2"; shift 2 ;;
    --schedule-policy) need "$@"; policy="$2"; shift 2 ;;
    --mem-fraction-static) need "$@"; mem_fraction="$2"; shift 2 ;;
    --context-length) need "$@"; context_length="$2"; shift 2 ;;
    --grammar-backend) need "$@"; grammar_backend="$2"; shift 2 ;;
    --served-model-name) need "$@"; served_name="$2"; shift 2 ;;
    --api-key) need "$@"; api_key="$2"; shift 2 ;;
    --host) need "$@"; host="$2"; shift 2 ;;
    --port) need "$@"; port="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

[[ -n "$model_path" ]] || { echo "error: --model-path is required" >&2; usage >&2; exit 2; }
for n in "$tp" "$dp" "$max_loras" "$port"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "error: expected a positive integer, got '$n'" >&2; exit 2; }
done
[[ "$mem_fraction" =~ ^0?\.[0-9]+$ ]] || { echo "error: --mem-fraction-static must be in (0, 1), got '$mem_fraction'" >&2; exit 2; }
case "$policy" in lpm|random|fcfs|dfs-weight|lof|priority) ;; *)
  echo "error: unknown --schedule-policy '$policy'" >&2; exit 2 ;; esac
if [[ "$model_path" == /* || "$model_path" == .* ]] && [[ ! -d "$model_path" && $dry_run -eq 0 ]]; then
  echo "error: checkpoint dir '$model_path' does not exist" >&2; exit 2
fi

python="${SGLANG_PYTHON:-python}"
cmd=("$python" -m sglang.launch_server
  --model-path "$model_path"
  --tp-size "$tp" --dp-size "$dp"
  --schedule-policy "$policy"
  --mem-fraction-static "$mem_fraction"
  --grammar-backend "$grammar_backend"
  --host "$host" --port "$port")
if [[ ${#loras[@]} -gt 0 || $enable_lora -eq 1 ]]; then
  cmd+=(--enable-lora)
  if [[ ${#loras[@]} -gt 0 ]]; then
    for l in "${loras[@]}"; do
      [[ "$l" == *=* ]] || { echo "error: --lora expects NAME=PATH, got '$l'" >&2; exit 2; }
    done
    cmd+=(--lora-paths "${loras[@]}")
  elif [[ -z "$max_lora_rank" || -z "$lora_modules" ]]; then
    echo "error: --enable-lora without --lora needs --max-lora-rank and --lora-target-modules" >&2
    exit 2
  fi
  cmd+=(--max-loras-per-batch "$max_loras")
  [[ -n "$max_lora_rank" ]] && cmd+=(--max-lora-rank "$max_lora_rank")
  # shellcheck disable=SC2206  # the module list is split on purpose
  [[ -n "$lora_modules" ]] && cmd+=(--lora-target-modules $lora_modules)
fi
[[ -n "$context_length" ]] && cmd+=(--context-length "$context_length")
[[ -n "$served_name" ]] && cmd+=(--served-model-name "$served_name")
[[ -n "$api_key" ]] && cmd+=(--api-key "$api_key")
cmd+=("${extra[@]}")

if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
if ! "$python" -c "import sglang" 2>/dev/null; then
  echo "error: '$python' cannot import sglang; install requirements-serve.txt into a GPU" \
       "environment and set SGLANG_PYTHON to its python" >&2
  exit 3
fi
echo "SGLang for $model_path on http://$host:$port (tp=$tp dp=$dp, ${#loras[@]} LoRA adapters)" >&2
echo "client config: --config.llm.backend=sglang --config.llm.base_url=http://$host:$port" >&2
exec "${cmd[@]}"
