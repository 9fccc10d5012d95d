# Sourced by the shell wrappers (inference.sh, eval/*.sh, data_prep/*.sh, finetune/torchrun_launch.sh): what they
# share.
#
# PYTHON: the interpreter every wrapper runs its script with (default python3; e.g. PYTHON=.venv/bin/python).
PYTHON="${PYTHON:-python3}"

# split_args MAX "$@" puts the leading names (at most MAX; -1 = any number) into POSITIONAL and what follows into
# FLAGS. Names end at `--` (dropped) or at the first word starting with `-`, so `wrapper -- --no_random` or
# `wrapper --no_random` never takes a flag for a model name or path.
split_args() {
    local max="$1"
    shift
    POSITIONAL=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; do
        POSITIONAL+=("$1")
        shift
    done
    if [ "$max" -ge 0 ] && [ "${#POSITIONAL[@]}" -gt "$max" ]; then
        echo "error: at most $max name(s) before the flags, got ${#POSITIONAL[@]}: ${POSITIONAL[*]}" \
             "(put script flags after --)" >&2
        exit 2
    fi
    if [ "$#" -gt 0 ] && [ "$1" = "--" ]; then
        shift
    fi
    FLAGS=("$@")
}

# run_split COMMAND...: run one split's command; its exit status is kept in STATUS when it is worse than
# what STATUS holds, and the next split still runs. End the wrapper with `exit "$STATUS"`: the worst status
# of the splits. Worse means (README, "Exit status"): 2 usage error > 1 a file could not be used >
# 3 items not done > 0 done; any other status (a crash, a signal) is worse than all of them.
STATUS=0
status_rank() {
    case "$1" in
        0) echo 0 ;;
        3) echo 1 ;;
        1) echo 2 ;;
        2) echo 3 ;;
        *) echo 4 ;;
    esac
}
run_split() {
    local code=0
    "$@" || code=$?
    if [ "$(status_rank "$code")" -gt "$(status_rank "$STATUS")" ]; then
        STATUS=$code
    fi
}
