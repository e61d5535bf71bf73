"""Where this process sits in a parallel job, read once from the environment that started it.

Every way of starting workers (Slurm's srun, a TF_CONFIG, horovodrun or mpirun, our own local
launcher, submitit's local executor) describes the job in its own environment variables. Each
is parsed by a pure function over a mapping, in its own module, so parsers are tested with
tables of real values and never read `os.environ` themselves; `detect` picks one and adds the
job around it. The result, `ClusterEnv`, is all a strategy, the training entry point and the
run directory need to know about where they run.

    context.py       the ClusterEnv dataclass and its invariants
    hostlist.py      Slurm host lists and tasks-per-node lists
    ports.py         rendezvous ports derived from the job id
    slurm.py         srun tasks and the batch shell (SLURM_*)
    tf_config.py     TF_CONFIG
    mpi.py           horovodrun, mpirun, PMI launchers
    local.py         harness's local launcher and submitit's local executor
    gpu.py           which visible GPU a process binds
    environments.py  precedence between them (`detect`)
"""

from __future__ import annotations

from harness.distribute.cluster.context import UNKNOWN_HOST, ClusterEnv, _derive_addresses
from harness.distribute.cluster.environments import ENVIRONMENTS, detect, job_of, single
from harness.distribute.cluster.gpu import gpu_index, visible_gpu_index
from harness.distribute.cluster.hostlist import MAX_HOSTS_PER_RANGE, expand_hostlist, expand_tasks_per_node
from harness.distribute.cluster.local import from_launcher, from_submitit_local, launcher_env
from harness.distribute.cluster.mpi import from_horovod, from_mpi_launcher
from harness.distribute.cluster.ports import PORT_SLOT, STEPS_PER_JOB, port_for_job, port_free, port_taken_message
from harness.distribute.cluster.slurm import SLURM_MAX_NORMAL_STEP_ID, from_slurm
from harness.distribute.cluster.tf_config import from_tf_config

__all__ = [
    "ENVIRONMENTS",
    "MAX_HOSTS_PER_RANGE",
    "PORT_SLOT",
    "SLURM_MAX_NORMAL_STEP_ID",
    "STEPS_PER_JOB",
    "UNKNOWN_HOST",
    "ClusterEnv",
    "_derive_addresses",
    "detect",
    "expand_hostlist",
    "expand_tasks_per_node",
    "from_horovod",
    "from_launcher",
    "from_mpi_launcher",
    "from_slurm",
    "from_submitit_local",
    "from_tf_config",
    "gpu_index",
    "job_of",
    "launcher_env",
    "port_for_job",
    "port_free",
    "port_taken_message",
    "single",
    "visible_gpu_index",
]
