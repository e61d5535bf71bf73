#!/usr/bin/env bash
# Slurm HealthCheckProgram: `harness validate --local --light` on this node, NHC style.
#
# slurmd runs it (as root) every HealthCheckInterval seconds. It follows the conventions of
# LBNL's Node Health Check: the node drains itself when a check fails, with a reason that names
# the tool and the check ("harness-validate: gpu.ecc FAIL: ..."), and returns itself to service
# when it passes again, but only if this tool drained it (a node drained by someone else for
# their own reason is left alone).
#
#   exit 0  the node passed (and was resumed if this tool had drained it)
#   exit 1  a check failed or could not run: the node is drained (harness validate --drain --yes)
#   exit 2  bad arguments or configuration: nothing is drained (a typo in slurm.conf must not
#           drain the whole cluster); the message goes to stderr and syslog
#   exit 3  nothing could be validated: the node is drained
#
# Settings (environment, e.g. from /etc/default/slurmd):
#   HARNESS_HEALTHCHECK_CMD   the harness command                         [harness]
#   HARNESS_HEALTHCHECK_ARGS  more arguments, e.g. "--gpus 4 --expected /etc/harness/expected.yaml"
#   HARNESS_HEALTHCHECK_LOG   append the report here                     [/var/log/harness-healthcheck.log
#                             when writable, else no file]
set -uo pipefail

PREFIX="harness-validate:"
NODE="${SLURMD_NODENAME:-$(hostname -s)}"
export SLURMD_NODENAME="$NODE"
HARNESS="${HARNESS_HEALTHCHECK_CMD:-harness}"
LOG="${HARNESS_HEALTHCHECK_LOG:-/var/log/harness-healthcheck.log}"

say() {
    printf 'harness-healthcheck %s: %s\n' "$NODE" "$*" >&2
    command -v logger >/dev/null 2>&1 && logger -t harness-healthcheck -- "$NODE: $*" || true
}

# shellcheck disable=SC2086  # HARNESS_HEALTHCHECK_CMD/ARGS are word lists by design
report="$($HARNESS validate --local --light --drain --yes ${HARNESS_HEALTHCHECK_ARGS:-} 2>&1)"
rc=$?
if { [ -e "$LOG" ] && [ -w "$LOG" ]; } || { [ ! -e "$LOG" ] && [ -w "$(dirname "$LOG")" ]; }; then
    printf '%s %s exit %s\n%s\n' "$(date -Is)" "$NODE" "$rc" "$report" >>"$LOG"
fi

case "$rc" in
    0)
        # NHC's rule: resume only a node whose drain reason is ours.
        line="$(scontrol --oneliner show node "$NODE" 2>/dev/null)"
        state="$(sed -n 's/.*\bState=\([^ ]*\).*/\1/p' <<<"$line")"
        reason="$(sed -n 's/.*\bReason=\(.*\)$/\1/p' <<<"$line")"
        if [[ "$state" == *DRAIN* ]]; then
            if [[ "$reason" == "$PREFIX"* ]]; then
                if scontrol update NodeName="$NODE" State=RESUME; then
                    say "passed; resumed (it had been drained by harness validate: $reason)"
                else
                    say "passed, but scontrol could not resume the node"
                fi
            else
                say "passed; left drained: drained by someone else (reason: ${reason:-none})"
            fi
        fi
        ;;
    1 | 3)
        say "failed (exit $rc): $(grep -E '^(drain|would drain|[^ ]+: already drained)' <<<"$report" | head -n 1)"
        ;;
    *)
        say "harness validate could not start (exit $rc); the node is not drained: $(tail -n 1 <<<"$report")"
        ;;
esac
exit "$rc"
