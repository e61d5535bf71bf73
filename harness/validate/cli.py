"""The `harness validate` subcommand: its arguments, and the one library call it makes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness.errors import UserInputError

DESCRIPTION = """Validate this node for running jobs: GPU inventory and health (NVML), the software
stack, compute, memory bandwidth, in-node all-reduce, a short training run, free space and the
shared file system. Every check reports PASS, WARN, FAIL, ERROR (it could not run) or SKIPPED
(it does not apply here); a node's verdict is its worst check.

exit codes: 0 every node PASS or WARN; 1 some node FAIL or ERROR; 2 bad input (nothing run or
written); 3 nothing could be validated."""


def add_arguments(
    parser: argparse.ArgumentParser, path_arg: Callable[[str], str], count_arg: Callable[[str], int]
) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--local", action="store_true", help="validate this node, without Slurm")
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
        return 0
    if not args.local:
        raise UserInputError("harness validate needs --local (validate this node); see harness validate --help")
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
    report = validate_local(request, environment(), progress=None if args.json else _progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from harness.validate.output import print_table

        print_table(report, sys.stdout)
        if request.out is not None:
            print(f"report: {request.out / 'validation.html'}")
    return report.exit_code


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
