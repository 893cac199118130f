#!/usr/bin/env bash
# Submits one night's mhgan-dist dataset to the Ray head on this machine, and
# waits for it: the command a systemd timer or cron runs every night.
#
# The submission id is mhgan-nightly-DATE-ATTEMPT. Ray refuses a second job
# with an id it already has, and this script submits nothing while an attempt
# of the night is pending, running or succeeded, so a night is never submitted
# twice by accident; a night whose attempts failed or were stopped gets the
# next attempt number, so running this again resubmits it (the job resumes).
# Exits 0 when the night is done or already in hand, else the job's status.
#
# Settings, from the environment (see nightly.env.example):
#   MHGAN_OUTPUT        the nightly root: an absolute path or a pyarrow URI (required)
#   MHGAN_MODEL         a shipped model name or a model directory (default: grid2d)
#   MHGAN_KEEP          complete dates to keep (default: 7)
#   MHGAN_DATE          the night, YYYY-MM-DD (default: today, UTC)
#   MHGAN_ARGS          more jobs.generate flags, split on spaces (e.g. --num-samples 100000)
#   MHGAN_RUNTIME_ENV   a runtime_env YAML file for the job (e.g. env_vars with credentials)
#   MHGAN_MAX_ATTEMPTS  attempts per night (default: 3)
#   MHGAN_REPO          the checkout uploaded as the job's working directory (default: this one)
#   RAY_API_SERVER_ADDRESS  the head's job API (default: http://127.0.0.1:8265)
#   RAY_AUTH_MODE       token (default) sends ~/.ray/auth_token; disabled for a head without it
# `python` and `ray` must be those of the environment Ray runs in, on PATH here and on the head.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=${MHGAN_REPO:-$(cd "$here/../.." && pwd)}
output=${MHGAN_OUTPUT:?set MHGAN_OUTPUT to the nightly root, an absolute path or a URI}
model=${MHGAN_MODEL:-grid2d}
keep=${MHGAN_KEEP:-7}
night=${MHGAN_DATE:-$(date -u +%Y-%m-%d)}
max_attempts=${MHGAN_MAX_ATTEMPTS:-3}
address=${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
read -r -a extra <<< "${MHGAN_ARGS:-}"
prefix="mhgan-nightly-$night"

# The night's attempts that this head knows, one "ATTEMPT STATUS" line each.
attempts=$(python - "$address" "$prefix" <<'PY'
import sys

from ray.job_submission import JobSubmissionClient

address, prefix = sys.argv[1:]
for job in JobSubmissionClient(address).list_jobs():
    suffix = (job.submission_id or "").removeprefix(prefix + "-")
    if suffix != job.submission_id and suffix.isdigit():
        print(suffix, job.status.value)
PY
)

next=1
while read -r attempt status; do
    [ -n "$attempt" ] || continue
    case "$status" in
        SUCCEEDED|PENDING|RUNNING)
            echo "$prefix-$attempt is $status: the night is not submitted again"
            exit 0 ;;
    esac
    if [ "$attempt" -ge "$next" ]; then next=$((attempt + 1)); fi
done <<< "$attempts"
if [ "$next" -gt "$max_attempts" ]; then
    echo "error: the night of $night failed $max_attempts times; fix the cause, then raise MHGAN_MAX_ATTEMPTS" >&2
    exit 1
fi

submit_options=(--address "$address" --submission-id "$prefix-$next" --working-dir "$repo")
if [ -n "${MHGAN_RUNTIME_ENV:-}" ]; then
    submit_options+=(--runtime-env "$MHGAN_RUNTIME_ENV")
fi
echo "submitting $prefix-$next to $address"
exec ray job submit "${submit_options[@]}" -- \
    python -m jobs.generate --nightly --date "$night" --keep "$keep" --model "$model" --output "$output" \
    --quiet "${extra[@]}"
