"""The `harness` command: parse arguments, make one library call, map errors to exit codes.

Exit codes (README.md lists the same):
  0    success
  1    a failure during a run (the last good checkpoint is kept); `doctor`: a required part is
       missing; `smoke`: a check failed; `validate`: some node failed a check (FAIL or ERROR)
  2    bad input: arguments, config, data, run directory or a damaged run file (nothing was run,
       written or deleted)
  3    the watchdog ended a distributed run: a rank made no progress for distribute.timeout_s;
       `validate`: nothing could be validated (every check ERROR or SKIPPED)
  75   stopped by SIGTERM or SIGUSR2 (preemption, time limit) after saving a checkpoint: resumable
  130  interrupted (Ctrl-C)
  128+N  `train --workers`: a worker was killed by signal N; otherwise the launcher exits with
       the code of the first worker that failed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.config import DistributeConfig
from harness.errors import ConfigError, HarnessError, RunDirError
from harness.rundir import RunDir
from harness.rundir.layout import JOB_FOLDER, REPORT_HTML, REPORT_JSON, REPORT_MD, STATE, SUBMISSION

if TYPE_CHECKING:
    from harness.distribute.measured import Choice
    from harness.train.request import RunRequest

EPILOG = """examples:
  harness train                                  train the packaged default (digits, small CNN)
  harness train configs/tabular.yaml training.epochs=5 model.name=mlp
  harness train cfg.yaml --resume                continue from the latest checkpoint
  harness report runs/a runs/b --out compare     compare several runs
  harness predict runs/digits-cnn new.csv        predictions with the saved preprocessing
  harness doctor                                 check the installation
  harness submit cfg.yaml --nodes 2 --gpus-per-node 4 --time 02:00:00   run it on Slurm
  harness status runs/NAME                       follow a submitted run (also: logs, cancel)
  harness validate --local --light               is this node fit to run jobs (a verdict per check)
"""


def _train(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.envinfo import invocation
    from harness.train.request import RunRequest

    config_path, overrides = split_config_and_overrides(args.items)
    config = load_config(config_path, overrides)
    request = RunRequest(
        config, config_path, resume=args.resume, overwrite=args.overwrite, command=invocation()
    )
    if args.workers > 1:
        return _launch_training(request, args)
    if args.own_process and config.distribute.huge_pages:
        from harness.distribute.memory import restart_with_huge_pages

        restart_with_huge_pages()  # the setting is read at start: nothing is loaded or written yet
    from harness.distribute.cluster import detect
    from harness.train.run import train  # imports TensorFlow: only in the process that trains
    from harness.train.signals import stop_on_signals

    stop = stop_on_signals(interrupt=detect(os.environ).world_size == 1)
    try:
        train(request, stop_requested=stop)
    finally:
        stop.restore()
    return 0


def _launch_training(request: RunRequest, args: argparse.Namespace) -> int:
    """Check everything once here, then start the worker processes."""
    from harness.distribute.watchdog import heartbeat_folder, remove_heartbeats
    from harness.train.request import absolute_data_path, check_request

    check_request(request, absolute_data_path(request.config, request.base_dir))
    flags = [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite)) if on]
    try:
        return launch_workers(["train", *args.items, *flags], args.workers, request.config.distribute)
    finally:  # every worker has ended: a killed one left its heartbeat file behind
        with contextlib.suppress(OSError):
            remove_heartbeats(heartbeat_folder(request.config.run.output_dir, request.config.run.name))


def launch_workers(child_args: list[str], workers: int, cfg: DistributeConfig) -> int:
    """Resolve the strategy once here and start the workers with it.

    `auto` is decided here, from what harness validate measured on this machine, and every worker
    receives the concrete strategy as an override, so all ranks agree and none reads the store.
    """
    from harness.distribute.choice import horovod_importable, resolve_strategy
    from harness.distribute.launcher import launch

    installed = horovod_importable()
    measured = _measured_choice(workers, installed) if cfg.strategy == "auto" else None
    # horovodrun starts the workers for Horovod over MPI; the harness launcher does otherwise.
    horovodrun = cfg.strategy == "horovod" and cfg.horovod_controller == "mpi"
    strategy = resolve_strategy(
        cfg.strategy,
        processes=workers,
        gpus=0,  # with several processes the GPUs do not change what runs
        launcher="horovod" if horovodrun else "launcher",
        horovod_installed=installed,
        prefer=measured.strategy if measured else None,
    )
    if measured is not None:
        reason = measured.reason if strategy == measured.strategy else f"auto: {strategy}"
        print(f"harness: {reason}; every worker runs distribute.strategy={strategy}", flush=True)
        child_args = [*child_args, f"distribute.strategy={strategy}"]
    return launch(child_args, workers, strategy, cfg.horovod_controller, cfg.pin_workers, cfg.huge_pages)


def _measured_choice(workers: int, horovod_installed: bool) -> Choice:
    """What harness validate measured faster on this machine; unreadable records are warned about."""
    from harness.distribute.measured import stored_choice

    choice, warnings = stored_choice(workers, os.environ, horovod_installed=horovod_installed)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return choice


def _smoke(args: argparse.Namespace) -> int:
    from harness.commands.smoke import format_results, run_smoke
    from harness.config import load_config

    config_path, overrides = split_config_and_overrides(args.items)
    distribute = load_config(config_path, overrides).distribute

    def run(child_args: list[str], workers: int) -> int:
        if workers == 1:
            return main(child_args)
        return launch_workers(child_args, workers, distribute)

    passed, results = run_smoke(config_path, overrides, args.workers, run, args.max_samples)
    print(format_results(passed, results))
    return 0 if passed else 1


def split_config_and_overrides(items: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The first item without '=' is the config file; `key=value` items are overrides."""
    config: Path | None = None
    overrides: list[str] = []
    for item in items:
        if "=" in item and not _names_a_file(item):
            overrides.append(item)
        elif config is None:
            config = Path(item)
        else:
            raise ConfigError(
                f"only one config file can be given; received {str(config)!r} and {item!r}. "
                "Overrides look like section.key=value"
            )
    return config, overrides


def _names_a_file(item: str) -> bool:
    """Whether `item` is an existing path; an override too long to be a file name is not one."""
    try:
        return Path(item).exists()
    except (OSError, ValueError):
        return False


def _evaluate(args: argparse.Namespace) -> int:
    from harness.commands.share import evaluate_run

    evaluate_run(Path(args.run_dir))
    print(f"report: {RunDir(Path(args.run_dir)).report_html}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from harness.commands.share import predict_file
    from harness.data.newrows import PredictOptions

    options = PredictOptions(missing=args.missing, strict=args.strict, id_column=args.id_column)
    output = Path(args.output) if args.output else None
    result = predict_file(Path(args.run_dir), Path(args.input), output, options)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"predictions: {result.path} ({result.predicted} of {result.rows} rows predicted)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from harness.evaluate import gather_reports, load_report, render_report
    from harness.sweep.sweepdir import is_sweep_dir

    run_dirs = [Path(d) for d in args.run_dirs]
    if len(run_dirs) == 1 and args.out is None and is_sweep_dir(run_dirs[0]):
        from harness.sweep.report import write_sweep_report

        print(f"sweep report: {write_sweep_report(run_dirs[0])}")
        return 0
    if len(run_dirs) == 1 and args.out is None:
        html, plots = report_settings(run_dirs[0], load_report(run_dirs[0]))
        render_report(run_dirs[0], html, plots)
        print(f"report: {RunDir(run_dirs[0]).report_md}")
        return 0
    out = gather_reports(run_dirs, Path(args.out or "comparison"))
    print(f"comparison: {out}")
    return 0


def report_settings(run_dir: Path, report: Mapping[str, Any]) -> tuple[bool, bool]:
    """`report.html` and `report.plots` as the run was configured (true where report.json lacks them)."""
    section = report.get("config")
    section = section.get("report") if isinstance(section, Mapping) else None
    found = section if isinstance(section, Mapping) else {}
    values = []
    for key in ("html", "plots"):
        value = found.get(key, True)
        if not isinstance(value, bool):
            raise RunDirError(
                f"{RunDir(run_dir).report}: config.report.{key} must be true or false. Received: {value!r:.200}"
            )
        values.append(value)
    return values[0], values[1]


def _sweep(args: argparse.Namespace) -> int:
    """`sweep SPEC`, `sweep status SWEEP_DIR` or `sweep resume SWEEP_DIR`."""
    from harness.sweep import launch

    target = args.target
    if len(target) == 2 and target[0] in ("status", "resume"):
        if args.overwrite or args.resume:
            raise ConfigError(f"`harness sweep {target[0]}` takes no --resume or --overwrite")
        if target[0] == "status":
            from harness.sweep.status import format_status, read_status

            print(format_status(read_status(Path(target[1]))), end="")
            return 0
        print(launch.resume_sweep(Path(target[1]).absolute(), args.executor), end="")
        return 0
    if len(target) != 1:
        raise ConfigError(
            "usage: harness sweep SPEC | harness sweep status SWEEP_DIR | harness sweep resume SWEEP_DIR. "
            f"Received: {' '.join(target)[:200]}"
        )
    print(launch.start(Path(target[0]), args.executor, resume=args.resume, overwrite=args.overwrite), end="")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from harness.commands.doctor import exit_code, format_table, run_checks

    checks = run_checks()
    if args.json:
        print(json.dumps([check.__dict__ for check in checks], indent=2))
    else:
        print(format_table(checks))
    return exit_code(checks)


def _validate(args: argparse.Namespace) -> int:
    from harness.validate.cli import run_validate

    return run_validate(args)


def _submit(args: argparse.Namespace) -> int:
    from harness.envinfo import invocation
    from harness.slurm import submit as slurm_submit

    config_path, overrides = split_config_and_overrides(args.items)
    options = slurm_submit.SubmitOptions(
        config_path=config_path,
        overrides=overrides,
        flags=submit_flags(args),
        profile=args.profile,
        profiles_file=Path(args.profiles) if args.profiles else None,
        overwrite=args.overwrite,
        command=invocation(),
    )
    print(slurm_submit.run(options, dry_run=args.dry_run), end="")
    return 0


def submit_flags(args: argparse.Namespace) -> dict[str, object]:
    """Resource flags as `slurm:` keys; flags not given are left out so the config's values stand."""
    from harness.slurm.resources import parse_time

    flags: dict[str, object] = {
        key: getattr(args, key)
        for key in (
            "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb",
            "partition", "account", "qos", "constraint", "executor",
        )
    }
    if args.time is not None:
        flags["time_minutes"] = parse_time(args.time)
    return {key: value for key, value in flags.items() if value is not None}


def _status(args: argparse.Namespace) -> int:
    from harness.slurm.follow import format_status, status

    print(format_status(status(args.target)))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from harness.slurm.follow import log_text

    sys.stdout.write(log_text(args.target, rank=args.rank, tail=args.tail, err=args.err))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from harness.slurm.follow import cancel

    _, message = cancel(args.target)
    print(message)
    return 0


def path_arg(text: str) -> str:
    """A path the filesystem accepts: a name too long for it is a usage error, not a traceback later."""
    try:
        Path(text).exists()
    except OSError as err:
        raise argparse.ArgumentTypeError(f"not a usable path ({err.strerror or err}): {text[:200]!r}") from None
    return text


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number. Received: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0. Received: {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number. Received: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Run Keras experiments from one YAML file: locally, on GPUs, or across Slurm nodes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train",
        help="train a model and write a run directory with its report",
        description="Train from a YAML config (default: the packaged digits CNN), "
        "evaluate on the test split and write the run directory.",
    )
    train.add_argument(
        "items",
        nargs="*",
        metavar="[CONFIG] [KEY=VALUE ...]",
        help="config file, then dotted overrides such as training.epochs=5",
    )
    group = train.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="start N local worker processes (multiworker or horovod strategy)",
    )
    train.set_defaults(func=_train)

    smoke = sub.add_parser(
        "smoke",
        help="run a few steps of the real path locally and print PASS/FAIL",
        description="Train the config shrunk to a small subset for one epoch, with N local "
        "workers, in a temporary run directory; check metrics, checkpoint, report and model.",
    )
    smoke.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    smoke.add_argument(
        "--workers", type=positive_int, default=2, metavar="N", help="local workers (default 2)"
    )
    smoke.add_argument(
        "--max-samples", type=positive_int, default=512, metavar="N", help="data subset size (default 512)"
    )
    smoke.set_defaults(func=_smoke)

    evaluate = sub.add_parser("evaluate", help="re-run the test-split evaluation of a finished run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=path_arg)
    evaluate.set_defaults(func=_evaluate)

    predict = sub.add_parser(
        "predict",
        help="predict a CSV, NPZ file or image folder with a trained run",
        description="Write one prediction per input row, with the run's saved preprocessing. The first "
        "output column identifies the row: `row` (CSV: 1 is the first row after the header), the "
        "--id-column, `index` (NPZ/NPY: 0-based) or `file` (images: path relative to the input folder).",
    )
    predict.add_argument("run_dir", metavar="RUN_DIR", type=path_arg)
    predict.add_argument(
        "input",
        metavar="INPUT",
        type=path_arg,
        help="CSV with the training feature columns (others are ignored), NPZ/NPY, or images",
    )
    predict.add_argument(
        "-o", "--output", type=path_arg, help="output CSV (default: INPUT with .predictions.csv; replaced if it exists)"
    )
    predict.add_argument(
        "--missing",
        choices=("impute", "skip", "error"),
        help="CSV rows with missing feature values: fill with the training split's median or most frequent "
        "value, leave their predictions empty, or refuse (default: impute if the run was trained with "
        "data.missing=mean/median/most_frequent, error if with drop)",
    )
    predict.add_argument(
        "--strict",
        action="store_true",
        help="refuse category values not seen in training (default: warn and predict them as unknown)",
    )
    predict.add_argument(
        "--id-column", metavar="NAME", help="CSV: copy this column into the output as the row identifier"
    )
    predict.set_defaults(func=_predict)

    report = sub.add_parser(
        "report",
        help="rebuild a run's report, or compare several runs",
        description=f"With one RUN_DIR: rebuild {REPORT_MD}/{REPORT_HTML} from {REPORT_JSON}. "
        "With several (or --out): write a comparison table and plots.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=path_arg)
    report.add_argument(
        "--out",
        type=path_arg,
        help="folder for the comparison (default: ./comparison); a new or empty folder, or one an earlier "
        "`harness report` made",
    )
    report.set_defaults(func=_report)

    doctor = sub.add_parser(
        "doctor", help="check the installed stack (TensorFlow, Keras, Horovod, MPI, GPUs, Slurm)"
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=_doctor)
    add_slurm_commands(sub)
    from harness.validate.cli import add_arguments

    validate = sub.add_parser(
        "validate",
        help="validate nodes for sysadmins: GPU health, stack, compute, bandwidth; a verdict per node",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(validate, path_arg, non_negative_int)
    validate.set_defaults(func=_validate)
    add_sweep_command(sub)
    return parser


SWEEP_DESCRIPTION = """Tune a run config with Optuna: `harness sweep SPEC` checks the spec, creates the sweep
directory (study journal, ledger, one run directory per trial) and starts `parallelism` workers:
a Slurm job array that returns at once, or local processes (--executor local) it waits for.
`harness sweep status SWEEP_DIR` prints the ledger; `harness sweep resume SWEEP_DIR` continues
after a cancel or crash; `harness report SWEEP_DIR` writes the leaderboard and plots."""


def add_sweep_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="tune hyperparameters: submit a sweep, or `sweep status|resume SWEEP_DIR`",
        description=SWEEP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("target", nargs="+", metavar="SPEC | status SWEEP_DIR | resume SWEEP_DIR", type=path_arg)
    sweep.add_argument("--executor", choices=("slurm", "local"), help="default: the base config's slurm.executor")
    group = sweep.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the spec's existing sweep directory")
    group.add_argument("--overwrite", action="store_true", help="replace the spec's existing sweep directory")
    sweep.set_defaults(func=_sweep)


SUBMIT_DESCRIPTION = f"""Submit the experiment as a Slurm job (through submitit) and return at once.

Resources: flags > the config's slurm: section > the cluster profile > defaults. Tasks: one per
GPU for multiworker/horovod, one per node otherwise (--tasks-per-node overrides). Checks the
strategy against the resources and the partition against sinfo before submitting (exit 2,
nothing created). The run directory holds {SUBMISSION} and the job's logs ({JOB_FOLDER}/); a
preempted or timed-out job checkpoints, is requeued and resumes by itself."""


def add_slurm_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = sub.add_parser(
        "submit",
        help="submit the experiment to Slurm (or run the same job locally) and return at once",
        description=SUBMIT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    submit.add_argument("--profile", help="cluster profile (partition, account, GPU type, setup lines...)")
    submit.add_argument(
        "--profiles", metavar="FILE", help="profiles file (default: $HARNESS_PROFILES, configs/clusters.yaml, "
        "~/.config/harness/clusters.yaml)"
    )
    resources = submit.add_argument_group("resources (override the config's slurm: section)")
    resources.add_argument("--nodes", type=positive_int, metavar="N")
    resources.add_argument("--gpus-per-node", type=non_negative_int, metavar="G")
    resources.add_argument("--tasks-per-node", type=positive_int, metavar="T")
    resources.add_argument("--cpus-per-task", type=positive_int, metavar="C")
    resources.add_argument("--mem-gb", type=positive_number, metavar="M", help="memory per node in GB")
    resources.add_argument("--time", metavar="LIMIT", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    resources.add_argument("--partition", metavar="P")
    resources.add_argument("--account", metavar="A")
    resources.add_argument("--qos", metavar="Q")
    resources.add_argument("--constraint", metavar="C")
    submit.add_argument("--executor", choices=("slurm", "local"), help="local: run the same job on this machine")
    submit.add_argument(
        "--dry-run", action="store_true", help="print the batch script and every rank's environment; submit nothing"
    )
    submit.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    submit.set_defaults(func=_submit)

    status = sub.add_parser(
        "status",
        help="state of a submitted run: queued, running (epoch x/N), completed, failed, requeued",
        description=f"State from the run directory's {STATE}, checked against squeue/scontrol.",
    )
    status.add_argument("target", metavar="RUN_DIR|JOB_ID")
    status.set_defaults(func=_status)

    logs = sub.add_parser("logs", help="print the log of one task of a submitted run")
    logs.add_argument("target", metavar="RUN_DIR|JOB_ID")
    logs.add_argument("--rank", type=non_negative_int, default=0, metavar="N", help="task rank (default 0)")
    logs.add_argument("--tail", type=positive_int, metavar="K", help="only the last K lines")
    logs.add_argument("--err", action="store_true", help="stderr instead of stdout")
    logs.set_defaults(func=_logs)

    cancel = sub.add_parser("cancel", help="cancel a submitted run's job (scancel)")
    cancel.add_argument("target", metavar="RUN_DIR|JOB_ID")
    cancel.set_defaults(func=_cancel)


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides come after flags too (`train cfg.yaml --workers 2 a=1`).

    argparse ends a positional list at the first flag; the overrides left over after it are put
    back in order, while anything else unknown is still an error.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "items") and not any(item.startswith("-") for item in extra):
        args.items = [*args.items, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: object = None,
) -> None:
    """A warning as one line naming what it is about (a skipped metrics line...), not our source line."""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    print(f"warning: {kind}{message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_command_line(build_parser(), argv)
    args.own_process = argv is None  # the command itself, not a call from Python (tests, notebooks)
    handler: Callable[[argparse.Namespace], int] = args.func
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        return _run(handler, args)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # `harness status RUN | head`: the reader has what it wanted; end quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE


def _stdout_closed() -> bool:
    """Whether our output is a pipe whose reader has gone (not some other connection that broke)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
