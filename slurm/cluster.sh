#!/usr/bin/env bash
# A real two-node Slurm cluster (nodes n1 and n2, partition "debug") on this one machine, for
# tests and demos. Debian 12's slurm-wlm 22.05 and munge; no systemd needed; run as root.
#
#   slurm/cluster.sh install   apt-get install slurm-wlm munge when missing (root)
#   slurm/cluster.sh start     start munged, slurmctld, slurmd n1 + n2; wait until both nodes are up (idempotent)
#   slurm/cluster.sh stop      cancel jobs, stop the daemons started here (idempotent)
#   slurm/cluster.sh status    sinfo / squeue summary
#   slurm/cluster.sh env       export lines for callers: eval "$(slurm/cluster.sh env)"
#   slurm/cluster.sh logs      tail of every daemon log
#
# Settings (environment):
#   HARNESS_SLURM_DIR         all state, config, logs, pid files   [/tmp/harness-slurm]
#   HARNESS_SLURM_PORT        slurmctld port; slurmd n1/n2 use +1/+2 [11817]
#   HARNESS_SLURM_TIMEOUT     seconds to wait for the nodes        [30]
#   HARNESS_SLURM_NODE_MEM_MB RealMemory of each node              [(MemTotal - headroom) / 2]
#   HARNESS_SLURM_CPUS        CPUs of each node                    [max(nproc, 2)]
#   HARNESS_SLURM_ETC_HOSTS   1: add "127.0.0.1 n1 n2" to /etc/hosts when they do not resolve (root) [1]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/slurm.conf.in"
DIR="${HARNESS_SLURM_DIR:-/tmp/harness-slurm}"
CTLD_PORT="${HARNESS_SLURM_PORT:-11817}"
TIMEOUT="${HARNESS_SLURM_TIMEOUT:-30}"
NODES=(n1 n2)

CONF="$DIR/etc/slurm.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_PID="$MUNGE_DIR/munged.pid"
CTLD_PID="$DIR/run/slurmctld.pid"

REQUIRED_COMMANDS=(slurmctld slurmd sbatch srun sinfo squeue scontrol scancel munged munge unmunge)

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

missing_commands() {
    local c missing=()
    for c in "${REQUIRED_COMMANDS[@]}"; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    echo "${missing[*]:-}"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# pid from a pid file, printed only when that process is alive and is the expected program.
running_pid() {
    local pidfile="$1" comm="$2" pid
    [ -r "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    echo "$pid"
}

slurmd_pidfile() { echo "$DIR/run/slurmd-$1.pid"; }
node_port() { case "$1" in n1) echo $((CTLD_PORT + 1)) ;; n2) echo $((CTLD_PORT + 2)) ;; esac; }

# stop_daemons "NAME|PIDFILE|COMM" ...: SIGTERM to each (only the pid recorded in our own pid
# file, and only when that process is the expected program), all at once; wait up to 10 s, then SIGKILL.
stop_daemons() {
    local spec name pidfile comm pid i alive names=() pids=()
    for spec in "$@"; do
        IFS='|' read -r name pidfile comm <<<"$spec"
        if pid="$(running_pid "$pidfile" "$comm")"; then
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name") pids+=("$pid")
        fi
        rm -f "$pidfile"
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    for i in $(seq 1 100); do
        alive=0
        for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive=1; done
        [ "$alive" = 1 ] || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if [ -d "/proc/${pids[$i]}" ]; then
            say "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        say "stopped ${names[$i]} (pid ${pids[$i]})"
    done
}

export_conf() { export SLURM_CONF="$CONF"; }

cmd_install() {
    local missing
    missing="$(missing_commands)"
    if [ -z "$missing" ]; then
        say "slurm-wlm and munge are installed ($(slurmctld -V 2>/dev/null || echo '?'))"
        return 0
    fi
    if ! is_root; then
        die "missing: $missing. Installing needs root: run 'sudo $0 install' (or: sudo apt-get install slurm-wlm munge)"
    fi
    command -v apt-get >/dev/null || die "missing: $missing, and there is no apt-get here to install slurm-wlm and munge"
    say "installing slurm-wlm and munge (missing: $missing)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq slurm-wlm munge >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    missing="$(missing_commands)"
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
    say "installed $(slurmctld -V)"
}

# ---- rendering -------------------------------------------------------------------------------

mem_total_mb() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

render_conf() {
    local out="$1" host cpus total headroom node_mem def_mem
    host="$(hostname -s)"
    cpus="${HARNESS_SLURM_CPUS:-$(nproc)}"
    [ "$cpus" -ge 2 ] || cpus=2   # room for a 2-task job on one node, even on a 1-CPU machine
    total="$(mem_total_mb)"
    headroom=$(( total / 8 > 1024 ? total / 8 : 1024 ))
    node_mem="${HARNESS_SLURM_NODE_MEM_MB:-$(( (total - headroom) / 2 ))}"
    [ "$node_mem" -ge 256 ] || die "only ${total} MB of memory: too little for two nodes (set HARNESS_SLURM_NODE_MEM_MB)"
    def_mem=$(( node_mem / cpus < 1024 ? node_mem / cpus : 1024 ))
    sed -e "s|@HOSTNAME@|$host|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@N1_PORT@|$(node_port n1)|g" \
        -e "s|@N2_PORT@|$(node_port n2)|g" \
        -e "s|@DIR@|$DIR|g" \
        -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" \
        -e "s|@CPUS@|$cpus|g" \
        -e "s|@NODE_MEM@|$node_mem|g" \
        -e "s|@DEF_MEM_PER_CPU@|$def_mem|g" \
        "$TEMPLATE" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then
        die "unfilled placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"
    fi
}

# ---- munge -----------------------------------------------------------------------------------

munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munged() {
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR"
    if [ ! -s "$MUNGE_KEY" ]; then
        say "creating munge key $MUNGE_KEY"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    if running_pid "$MUNGE_PID" munged >/dev/null && munge_ok; then
        return 0
    fi
    stop_daemons "munged|$MUNGE_PID|munged"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- munged \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
        </dev/null >"$DIR/log/munged.out" 2>&1 \
        || { cat "$DIR/log/munged.out" >&2; die "munged failed to start (output above)"; }
    local i
    for i in $(seq 1 50); do
        munge_ok && { say "started munged (pid $(cat "$MUNGE_PID"), socket $MUNGE_SOCKET)"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$MUNGE_DIR/munged.log" >&2
    die "munged does not answer on $MUNGE_SOCKET (log above)"
}

# ---- slurm daemons ---------------------------------------------------------------------------

slurm_daemons_running() {
    local n
    running_pid "$CTLD_PID" slurmctld >/dev/null && return 0
    for n in "${NODES[@]}"; do
        running_pid "$(slurmd_pidfile "$n")" slurmd >/dev/null && return 0
    done
    return 1
}

stop_slurm_daemons() {
    local n specs=("slurmctld|$CTLD_PID|slurmctld")
    for n in "${NODES[@]}"; do specs+=("slurmd $n|$(slurmd_pidfile "$n")|slurmd"); done
    stop_daemons "${specs[@]}"
}

log_tails() {
    local f
    for f in "$DIR/log/slurmctld.log" "$DIR"/log/slurmd-*.log "$MUNGE_DIR/munged.log"; do
        [ -f "$f" ] || continue
        printf '\n==> %s (last 15 lines) <==\n' "$f" >&2
        tail -n 15 "$f" >&2
    done
}

fail_with_logs() {
    say "$1"
    log_tails
    die "$1 (daemon logs above; config: $CONF)"
}

# True while every Slurm daemon that has a pid file is alive (a daemon that died while we wait
# for it must fail the start at once, not after the timeout).
started_daemons_alive() {
    local n
    if [ -f "$CTLD_PID" ] && ! running_pid "$CTLD_PID" slurmctld >/dev/null; then
        echo slurmctld; return 1
    fi
    for n in "${NODES[@]}"; do
        if [ -f "$(slurmd_pidfile "$n")" ] && ! running_pid "$(slurmd_pidfile "$n")" slurmd >/dev/null; then
            echo "slurmd $n"; return 1
        fi
    done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds="$1" what="$2" deadline dead
    shift 2
    deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        if ! dead="$(started_daemons_alive)"; then
            fail_with_logs "$dead exited while waiting for $what"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "timed out after ${seconds}s waiting for $what"
        sleep 0.2
    done
}

# Refuse to start a daemon whose port is taken (another Slurm, maybe another HARNESS_SLURM_DIR).
check_port_free() {  # check_port_free PORT WHO
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "port $1 for $2 is already in use on 127.0.0.1 (another Slurm cluster? a cluster started with another HARNESS_SLURM_DIR?). Stop it, or choose other ports with HARNESS_SLURM_PORT (now $CTLD_PORT; slurmd n1/n2 use +1/+2)"
    fi
}

# "n1 idle" lines from sinfo; ready when every node is up (idle, or busy with jobs).
nodes_ready() {
    local states
    states="$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null)" || return 1
    local n
    for n in "${NODES[@]}"; do
        grep -Eq "^$n (idle|mix|alloc|comp)$" <<<"$states" || return 1
    done
}

resolve_node_names() {
    local missing=() n
    for n in "${NODES[@]}"; do
        getent hosts "$n" >/dev/null || missing+=("$n")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "${HARNESS_SLURM_ETC_HOSTS:-1}" = 1 ] && is_root && [ -w /etc/hosts ]; then
        printf '127.0.0.1 %s  # added by harness slurm/cluster.sh: Slurm node names on this machine\n' \
            "${missing[*]}" >>/etc/hosts
        say "added '127.0.0.1 ${missing[*]}' to /etc/hosts (jobs use SLURM_*NODELIST names as host names)"
    else
        say "warning: ${missing[*]} do not resolve; jobs that connect to hosts named in SLURM_JOB_NODELIST will fail"
    fi
}

cmd_start() {
    local missing
    missing="$(missing_commands)"
    [ -z "$missing" ] || die "missing: $missing. Run '$0 install' first (as root)"
    if ! is_root; then
        # Not root: fine when the cluster is already up (started by root, e.g. by CI), else refuse.
        export_conf
        if running_pid "$CTLD_PID" slurmctld >/dev/null && nodes_ready; then
            say "already running (started by root): $(sinfo -h -p debug -o '%P %D nodes %N %t' | tr '\n' ' ')"
            return 0
        fi
        die "start needs root: slurmd must run as root to start jobs as their users (SlurmUser=root). Run: sudo $0 start"
    fi
    id munge >/dev/null 2>&1 || die "no 'munge' user: is the munge package installed? ('$0 install')"
    [ -r "$TEMPLATE" ] || die "template $TEMPLATE not found"

    local t0 n
    t0="$(date +%s.%N)"
    install -d -m 0755 "$DIR" "$DIR/etc" "$DIR/run" "$DIR/log" "$DIR/state"
    for n in "${NODES[@]}"; do install -d -m 0755 "$DIR/spool/$n"; install -d -m 1777 "$DIR/tmp/$n"; done

    render_conf "$CONF.new"
    if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
        rm -f "$CONF.new"
    else
        if slurm_daemons_running; then
            say "configuration changed: restarting the Slurm daemons with the new $CONF"
            stop_slurm_daemons
        fi
        mv "$CONF.new" "$CONF"
        chmod 0644 "$CONF"
    fi
    export_conf

    start_munged
    resolve_node_names

    if running_pid "$CTLD_PID" slurmctld >/dev/null; then
        :
    else
        rm -f "$CTLD_PID"
        check_port_free "$CTLD_PORT" slurmctld
        slurmctld -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 \
            || fail_with_logs "slurmctld failed to start"
        wait_for 10 "slurmctld pid file" running_pid "$CTLD_PID" slurmctld
        say "started slurmctld (pid $(cat "$CTLD_PID"), port $CTLD_PORT)"
    fi
    wait_for "$TIMEOUT" "slurmctld to answer (scontrol ping)" scontrol ping

    for n in "${NODES[@]}"; do
        local pidfile
        pidfile="$(slurmd_pidfile "$n")"
        running_pid "$pidfile" slurmd >/dev/null && continue
        rm -f "$pidfile"
        check_port_free "$(node_port "$n")" "slurmd $n"
        slurmd -f "$CONF" -N "$n" </dev/null >>"$DIR/log/slurmd-$n.out" 2>&1 \
            || fail_with_logs "slurmd $n failed to start"
        wait_for 10 "slurmd $n pid file" running_pid "$pidfile" slurmd
        say "started slurmd $n (pid $(cat "$pidfile"))"
    done

    local deadline
    deadline=$(( $(date +%s) + TIMEOUT ))
    local dead
    until nodes_ready; do
        if ! dead="$(started_daemons_alive)"; then
            fail_with_logs "$dead exited while waiting for the nodes"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            sinfo -N -p debug -o '%N %T %E' >&2 || true
            fail_with_logs "nodes ${NODES[*]} not up after ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    say "ready in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: $(sinfo -h -p debug -o '%P %D nodes %N %t' | tr '\n' ' ')"
    say "use it with: eval \"\$($0 env)\""
}

cmd_stop() {
    export_conf
    if running_pid "$CTLD_PID" slurmctld >/dev/null && [ -f "$CONF" ]; then
        local jobs
        jobs="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ' || true)"
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            local i
            for i in $(seq 1 50); do
                [ -z "$(squeue -h -t running,completing -o '%i' 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    local n specs=("slurmctld|$CTLD_PID|slurmctld" "munged|$MUNGE_PID|munged")
    for n in "${NODES[@]}"; do specs+=("slurmd $n|$(slurmd_pidfile "$n")|slurmd"); done
    stop_daemons "${specs[@]}"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    say "stopped (state kept in $DIR)"
}

cmd_status() {
    export_conf
    local n p state=()
    if p="$(running_pid "$MUNGE_PID" munged)"; then state+=("munged:$p"); else state+=("munged:-"); fi
    if p="$(running_pid "$CTLD_PID" slurmctld)"; then state+=("slurmctld:$p"); else state+=("slurmctld:-"); fi
    for n in "${NODES[@]}"; do
        if p="$(running_pid "$(slurmd_pidfile "$n")" slurmd)"; then state+=("slurmd-$n:$p"); else state+=("slurmd-$n:-"); fi
    done
    echo "daemons (pid or -): ${state[*]}"
    echo "config: $CONF"
    if ! running_pid "$CTLD_PID" slurmctld >/dev/null; then
        echo "cluster: stopped"
        return 0
    fi
    sinfo -N -o '%N %P %T %c %m %E' || true
    squeue -o '%.8i %.9P %.20j %.8u %.2t %.10M %.4D %R' || true
}

cmd_env() {
    # Client commands (sinfo, sbatch, srun, ...) and submitit honour SLURM_CONF; jobs inherit it.
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export HARNESS_SLURM_DIR=%q\n' "$DIR"
}

cmd_logs() { log_tails; }

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    logs) cmd_logs ;;
    -h|--help|help) usage ;;
    *) usage >&2; die "unknown command '${1:-}' (expected install, start, stop, status, env, logs)" ;;
esac
