"""Slurm submission through submitit: plan and check a job, submit it, follow it, requeue it.

The only package that imports submitit. `submit` plans (resources from flags, the config and a
cluster profile, checked against the strategy and `sinfo`) and submits `job.TrainJob`; `follow`
reads the run directory and the scheduler for `harness status`, `logs` and `cancel`.
"""
