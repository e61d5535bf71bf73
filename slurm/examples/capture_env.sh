#!/usr/bin/env bash
# Re-capture the real SLURM_* environments kept in this folder (test tables for the harness's
# Slurm environment parser). Needs a running cluster: slurm/cluster.sh start.
#
#   env-srun-2nodes.txt         every task of `srun -N2 -n2` (srun makes its own allocation)
#   env-srun-1node-2tasks.txt   every task of `srun -N1 -n2` (two tasks on one node)
#   env-sbatch-srun-2nodes.txt  every task of `srun` inside `sbatch -N2 -n2` (how jobs usually run)
#   env-batch.txt               the batch script itself of `sbatch -N2 -n2`, no srun
#
# Format: "# ..." comment lines, then per task a "# task PROCID=<n>" line and sorted NAME=VALUE
# lines of every variable whose name starts with SLURM (SLURM_* and SLURMD_NODENAME).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$HERE/../cluster.sh" env)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
VERSION="$(sinfo -V)"

# Prints one task's variables as a section; run by each task.
cat >dump.sh <<'EOF'
#!/bin/bash
{
    echo "# task PROCID=${SLURM_PROCID:-unset}"
    env | grep '^SLURM' | LC_ALL=C sort
} >"$1.${SLURM_PROCID:-batch}.part"
EOF
chmod +x dump.sh

header() {  # header FILE DESCRIPTION COMMAND
    printf '# %s\n# command: %s\n# %s, cluster from slurm/cluster.sh (nodes n1 n2 on one host), captured %s\n' \
        "$2" "$3" "$VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$1"
}

wait_job() {
    local jid="$1"
    while squeue -h -j "$jid" 2>/dev/null | grep -q .; do sleep 0.2; done
}

# 1. srun alone.
srun -N2 -n2 "$WORK/dump.sh" "$WORK/srun"
header "$HERE/env-srun-2nodes.txt" "A task of a 2-node, 2-task srun step (srun makes the allocation)" "srun -N2 -n2 ./dump.sh"
cat "$WORK"/srun.*.part >>"$HERE/env-srun-2nodes.txt"

srun -N1 -n2 "$WORK/dump.sh" "$WORK/one"
header "$HERE/env-srun-1node-2tasks.txt" "A task of a 1-node, 2-task srun step" "srun -N1 -n2 ./dump.sh"
cat "$WORK"/one.*.part >>"$HERE/env-srun-1node-2tasks.txt"

# 2. srun inside sbatch, and 3. the batch script itself.
cat >job.sh <<EOF
#!/bin/bash
"$WORK/dump.sh" "$WORK/batch"
srun "$WORK/dump.sh" "$WORK/step"
EOF
jid="$(sbatch --parsable -N2 -n2 -o "$WORK/job.out" job.sh)"
wait_job "$jid"
header "$HERE/env-sbatch-srun-2nodes.txt" "A task of srun inside a 2-node, 2-task batch job (srun with no options)" "sbatch -N2 -n2 job.sh; job.sh runs: srun ./dump.sh"
cat "$WORK"/step.*.part >>"$HERE/env-sbatch-srun-2nodes.txt"
header "$HERE/env-batch.txt" "The batch script's own environment (runs on the first node only; no srun)" "sbatch -N2 -n2 job.sh; job.sh runs ./dump.sh"
cat "$WORK"/batch.*.part >>"$HERE/env-batch.txt"
cat "$WORK/job.out"
wc -l "$HERE"/env-*.txt
