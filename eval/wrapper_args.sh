# Sourced by the shell wrappers (inference.sh, eval/*.sh). split_args MAX "$@" puts the leading
# names (at most MAX; -1 = any number) into POSITIONAL and what follows into FLAGS. Names end at
# `--` (dropped) or at the first word starting with `-`, so `wrapper -- --no_random` or
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

# run_split COMMAND...: run one split's command; a failure (exit 1: some file could not be used) is
# remembered in STATUS and the next split still runs. End the wrapper with `exit "$STATUS"`.
STATUS=0
run_split() {
    "$@" || STATUS=$?
}
