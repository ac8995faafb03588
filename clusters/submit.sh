#!/usr/bin/env bash
# Submit a SkinR1 stage to a running Ray cluster as a Ray job (docs/cluster.md walks through it).
# It only composes `ray job submit`: nothing is contacted before the options are checked, and
# --help / --dry-run contact nothing at all.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: clusters/submit.sh [options] [--] [key=value ...]

Submits `skinr1 rl` (or `skinr1 pipeline`) to a running Ray cluster:
  ray job submit --address ADDRESS --runtime-env clusters/runtime_env.yaml --submission-id ID \
      -- skinr1 STAGE --config CONFIG [key=value ...]
from the repository root, so the checkout is the job's working_dir.

Options:
  -a, --address URL       Ray job server (default: $RAY_ADDRESS), e.g. http://127.0.0.1:8265 while
                          `ray dashboard clusters/aws.yaml` forwards the head's dashboard port
  -c, --config FILE       run config, relative to the repository root
                          (default: skinr1/configs/paper.yaml, the paper-scale preset)
  -s, --stage NAME        rl (default: GRPO, building any missing earlier stage first)
                          or pipeline (every stage, then evaluation)
  -i, --id ID             submission id, new for every submission (default: skinr1-STAGE-UTCTIME)
  -r, --runtime-env FILE  runtime env YAML (default: clusters/runtime_env.yaml)
      --env NAME          copy the local variable NAME into the job's environment (repeatable),
                          e.g. --env OPENAI_API_KEY for the teacher writer. The value is stored
                          with the job and shown by the dashboard to anyone who can reach it.
      --follow            stream the job's logs until it ends (default: return once submitted)
      --dry-run           print the command instead of running it
  -h, --help              show this text

The clusters in clusters/ run Ray with token authentication, so the `ray job` commands run with
RAY_AUTH_MODE=token (unless RAY_AUTH_MODE is set) and send the cluster's token: RAY_AUTH_TOKEN, or
~/.ray/auth_token (the token `ray up` copied to the nodes). For KubeRay:
  RAY_AUTH_TOKEN="$(kubectl get secret skinr1-ray-auth -o jsonpath='{.data.auth_token}' | base64 -d)"

Everything else (or everything after --) goes to skinr1 as config overrides, for example
  clusters/submit.sh -a http://127.0.0.1:8265 -- run_dir=/mnt/shared/skinr1/runs/paper-1 rl.learner.num_ranks=8
Submitting again with the same run_dir resumes from its last checkpoint (give a new --id).
EOF
}

die() {
    echo "submit.sh: $*" >&2
    echo "Run clusters/submit.sh --help for usage." >&2
    exit 2
}

# The Python that runs the `ray` command has PyYAML (a Ray dependency); --env needs it.
python_with_yaml() {
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
        return
    fi
    local ray_bin shebang
    ray_bin=$(command -v ray 2>/dev/null || true)
    if [[ -n "$ray_bin" ]]; then
        shebang=$(head -n 1 "$ray_bin")
        shebang=${shebang#\#!}
        if [[ -x "$shebang" ]]; then
            echo "$shebang"
            return
        fi
    fi
    echo python3
}

# The clusters this repository launches demand Ray's auth token on every request (docs/cluster.md,
# "What is exposed where"); a cluster without authentication needs RAY_AUTH_MODE=disabled, said out loud.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"

address="${RAY_ADDRESS:-}"
config="skinr1/configs/paper.yaml"
stage="rl"
submission_id=""
runtime_env="clusters/runtime_env.yaml"
follow=0
dry_run=0
env_names=()
overrides=()

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -a|--address) need_value "$@"; address="$2"; shift 2 ;;
        -c|--config) need_value "$@"; config="$2"; shift 2 ;;
        -s|--stage) need_value "$@"; stage="$2"; shift 2 ;;
        -i|--id) need_value "$@"; submission_id="$2"; shift 2 ;;
        -r|--runtime-env) need_value "$@"; runtime_env="$2"; shift 2 ;;
        --env) need_value "$@"; env_names+=("$2"); shift 2 ;;
        --follow) follow=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; overrides+=("$@"); break ;;
        -*) die "unknown option $1" ;;
        *) overrides+=("$1"); shift ;;
    esac
done

# Everything below runs from the repository root: runtime_env.yaml's working_dir is ".".
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "$stage" in
    rl|pipeline) ;;
    *) die "--stage must be rl or pipeline, not '$stage'" ;;
esac
[[ -n "$address" ]] || die "no cluster address: give --address URL or set RAY_ADDRESS"
[[ -f "$config" ]] || die "config $config does not exist (paths are relative to the repository root)"
[[ -f "$runtime_env" ]] || die "runtime env $runtime_env does not exist"
for item in ${overrides[@]+"${overrides[@]}"}; do
    # skinr1 itself rejects these too, but only once the job has started on the cluster.
    [[ "$item" == *=* ]] || die "overrides look like key=value, got '$item'"
done
for name in ${env_names[@]+"${env_names[@]}"}; do
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env takes a variable name, got '$name'"
    [[ -n "${!name+set}" ]] || die "--env $name: the variable is not set in this shell"
done
if [[ -z "$submission_id" ]]; then
    submission_id="skinr1-${stage}-$(date -u +%Y%m%d-%H%M%S)"
fi

env_file="$runtime_env"
if [[ ${#env_names[@]} -gt 0 ]]; then
    if [[ $dry_run -eq 1 ]]; then
        # Never write secrets for a dry run; show where they would go.
        env_file="<$runtime_env + env_vars ${env_names[*]}>"
    else
        env_file=$(mktemp "${TMPDIR:-/tmp}/skinr1-runtime-env.XXXXXX.yaml")
        chmod 600 "$env_file"
        trap 'rm -f "$env_file"' EXIT
        "$(python_with_yaml)" - "$runtime_env" "$env_file" "${env_names[@]}" <<'PY'
import os
import sys

import yaml

source, target, *names = sys.argv[1:]
with open(source) as handle:
    data = yaml.safe_load(handle) or {}
data.setdefault("env_vars", {}).update({name: os.environ[name] for name in names})
with open(target, "w") as handle:
    yaml.safe_dump(data, handle)
PY
    fi
fi

command=(ray job submit --address "$address" --runtime-env "$env_file" --submission-id "$submission_id")
if [[ $follow -eq 0 ]]; then
    command+=(--no-wait)
fi
command+=(-- skinr1 "$stage" --config "$config" ${overrides[@]+"${overrides[@]}"})

if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${command[@]}"
    echo
    exit 0
fi

command -v ray >/dev/null || die "the ray command is not on PATH (pip install \"ray[default]==2.60.0\")"

# Say how to follow and stop the job before streaming: with --follow, Ctrl-C stops only the log
# stream, never the job.
cat <<EOF
Submitting $submission_id to $address
  follow logs:    ray job logs --address $address --follow $submission_id
  status:         ray job status --address $address $submission_id
  stop:           ray job stop --address $address $submission_id
  rollout actors: skinr1 scale --job $submission_id --rollout-workers N --address auto   (on the head node)
  resume later:   run this command again with the same run_dir and a new --id
EOF
"${command[@]}"
