"""Tuning sweeps: a search space over run-config keys, Optuna samplers and pruners, job arrays.

The study lives in Optuna's journal file inside the sweep directory; each Slurm array task (or
local worker process) claims trials from it, trains each as an ordinary run directory and tells
the study the result, so nothing stays alive on the login node. `status` reads only the ledger.
"""
