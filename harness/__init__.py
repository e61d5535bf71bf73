"""harness: run Keras experiments from one YAML file, on a laptop or across a Slurm cluster."""

__version__ = "0.1.0"
