"""The `harness validate` subcommand: its arguments, and the one library call it makes."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserInputError

if TYPE_CHECKING:
    from harness.validate.suite import Request

DESCRIPTION = """Validate nodes for running jobs: GPU inventory and health (NVML), the software
stack, compute, memory bandwidth, all-reduce within a node and between node pairs, a short training
run, free space and the shared file system. Every check reports PASS, WARN, FAIL, ERROR (it could
not run) or SKIPPED (it does not apply here); a node's verdict is its worst check.

--local validates this node; --partition P or --nodes n[1-8] submits one Slurm job per node (and
pair jobs between nodes), waits for them (Ctrl-C cancels them) and reports every node.
--drain / --resume-drained print the scontrol lines they would run; add --yes to run them.

exit codes: 0 every node PASS or WARN; 1 some node FAIL or ERROR; 2 bad input (nothing run or
written); 3 nothing could be validated."""


def add_arguments(
    parser: argparse.ArgumentParser, path_arg: Callable[[str], str], count_arg: Callable[[str], int]
) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--local", action="store_true", help="validate this node, without Slurm")
    parser.add_argument("--partition", metavar="P", help="validate every node of this Slurm partition")
    parser.add_argument("--nodes", metavar="LIST", help="validate these Slurm nodes (hostlist syntax: n[1-8],gpu07)")
    parser.add_argument("--time", type=count_arg, metavar="MIN", default=30,
                        help="time limit of each validation job, minutes (default: 30)")
    parser.add_argument("--drain", action="store_true",
                        help="set failing nodes to DRAIN, reason 'harness-validate: CHECK ...' (needs --yes)")
    parser.add_argument("--resume-drained", action="store_true",
                        help="re-validate the nodes this tool drained and resume those that pass (needs --yes)")
    parser.add_argument("--yes", action="store_true", help="run the scontrol commands of --drain/--resume-drained")
    parser.add_argument("--light", action="store_true",
                        help="only the checks that take under 60 s (for Slurm's HealthCheckProgram)")
    parser.add_argument("--checks", metavar="A,B", help="only these checks or groups (see --list)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--expected", metavar="FILE", type=path_arg, help="expected-versions YAML file")
    parser.add_argument("--reference", metavar="FILE", type=path_arg,
                        help="site reference YAML, merged over the shipped table")
    parser.add_argument("--out", metavar="DIR", type=path_arg,
                        help="write validation.json, validation.html, nodes/ and history/ here (default: none)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--gpus", type=count_arg, metavar="N",
                        help="GPUs the node should have (default: SLURM_GPUS_ON_NODE or the node's Gres)")
    parser.add_argument("--gpu-model", metavar="NAME", help="GPU model the node should have (e.g. A100)")
    parser.add_argument("--run-dir", metavar="DIR", type=path_arg, help="where runs go (free space; default: .)")
    parser.add_argument("--scratch", metavar="DIR", type=path_arg,
                        help="scratch folder (free space, temporary files; default: the system's temp folder)")
    parser.add_argument("--shared", metavar="DIR", type=path_arg,
                        help="a folder on the shared file system to write, read and delete a file in")


def run_validate(args: argparse.Namespace) -> int:
    from harness.validate.context import environment
    from harness.validate.spec import all_checks
    from harness.validate.suite import Request, validate_local

    if args.list:
        for spec in all_checks():
            light = "light" if spec.light else "full "
            needs = f" (needs {', '.join(spec.needs)})" if spec.needs else ""
            print(f"{spec.name:<30} {light} {spec.measures}{needs}")
        print(f"{'collective.internode':<30} light all-reduce bus bandwidth between node pairs "
              "(--partition/--nodes only)")
        return 0
    _check_modes(args)
    request = Request(
        checks=_names(args.checks),
        light=args.light,
        expected_file=_path(args.expected),
        reference_file=_path(args.reference),
        out=_path(args.out),
        gpus=args.gpus,
        gpu_model=args.gpu_model,
        run_dir=_path(args.run_dir),
        scratch_dir=_path(args.scratch),
        shared_dir=_path(args.shared),
    )
    if not args.local:
        return _run_partition(args, request)
    environ = environment()
    if args.drain:
        from harness.validate.context import node_name
        from harness.validate.partition import check_local_drain

        check_local_drain(node_name(environ))
    report = validate_local(request, environ, progress=None if args.json else _progress)
    _print_report(args, report, request.out)
    if args.drain:
        from harness.validate.partition import apply, local_drain_actions

        actions = local_drain_actions(report)
        if args.yes:
            apply(actions, _say)
        _act(actions, args.yes)
    return report.exit_code


def _check_modes(args: argparse.Namespace) -> None:
    """One mode, and the flags that make sense with it; all refused before anything runs."""
    slurm = args.partition is not None or args.nodes is not None
    if args.local and slurm:
        raise UserInputError("choose one: --local (this node) or --partition/--nodes (Slurm jobs), not both")
    if not args.local and not slurm:
        raise UserInputError("harness validate needs --local (this node), --partition P or --nodes LIST; "
                             "see harness validate --help")
    if args.resume_drained and args.local:
        raise UserInputError("--resume-drained works with --partition/--nodes: a drained node is re-validated by "
                             "a job in a maintenance reservation (slurm/healthcheck.sh resumes a node from the node "
                             "itself)")
    if args.drain and args.resume_drained:
        raise UserInputError("choose one: --drain (drain failing nodes) or --resume-drained (re-validate drained "
                             "nodes), not both")
    if args.yes and not (args.drain or args.resume_drained):
        raise UserInputError("--yes confirms --drain or --resume-drained; neither was given")
    if args.time == 0:
        raise UserInputError("--time must be at least 1 minute. Received: 0")
    if (args.drain or slurm) and shutil.which("scontrol") is None:
        what = "--drain" if args.drain else "--partition/--nodes"
        raise UserInputError(f"{what} needs Slurm, and Slurm's scontrol is not on PATH here")


def _run_partition(args: argparse.Namespace, request: Request) -> int:
    from harness.validate.partition import PartitionRequest, validate_partition

    partition_request = PartitionRequest(request, args.partition, args.nodes, args.time, args.drain,
                                         args.resume_drained, args.yes)
    try:
        outcome = validate_partition(partition_request, _say)
    except KeyboardInterrupt:
        print("interrupted: the validation jobs were cancelled; nothing was drained", file=sys.stderr)
        return 130
    if outcome.report is not None and outcome.report.nodes:
        _print_report(args, outcome.report, request.out)
    _act(outcome.actions, outcome.applied)
    if outcome.report is None:  # --resume-drained: nothing to re-validate, or only the commands shown
        return 0
    return outcome.report.exit_code


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _act(actions: list[Any], applied: bool) -> None:
    """What was done to nodes, or (without --yes) the exact commands that would do it."""
    from harness.validate.drain import shell_line

    for action in actions:
        if action.what == "leave":
            print(f"{action.node}: {action.why}")
        elif applied:
            print(f"{action.what} {action.node}: {action.why}")
        else:
            print(f"would {action.what} {action.node} ({action.why}); not done without --yes:")
    commands = [shell_line(a.command) for a in actions if a.command]
    if commands and not applied:
        print("\n".join(f"  {line}" for line in commands))


def _print_report(args: argparse.Namespace, report: Any, out: Path | None) -> None:
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from harness.validate.output import print_table

        print_table(report, sys.stdout)
        if out is not None:
            print(f"report: {out / 'validation.html'}")


def _progress(spec: object, outcome: object) -> None:
    if outcome is None:
        print(f"running {getattr(spec, 'name', spec)} ...", file=sys.stderr, flush=True)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserInputError(f"--checks needs check names separated by commas. Received: {text!r:.200}")
    return names


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
