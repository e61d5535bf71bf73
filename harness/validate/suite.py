"""The two halves of a validation, kept apart so a partition run can reuse both:

1. `run_local_node`: on one node, run the selected checks -> a `NodeResult` (a Slurm job on each
   node calls the same function and writes its result into a shared folder);
2. `aggregate` + `save`: node results -> fleet rules, verdicts, validation.json / validation.html and
   history.

`prepare` reads and checks every input (check names, the expected-versions and reference files,
the output folder) before anything runs, so bad input exits 2 with nothing run or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.distribute.measured import store_folder
from harness.validate import store
from harness.validate.aggregate import ValidationReport, aggregate
from harness.validate.checks.e2e import NAME as E2E
from harness.validate.context import NodeContext, Settings, expected_gpus, node_name
from harness.validate.expected import ExpectedVersions, load_expected
from harness.validate.nvml import NvmlReader, PynvmlReader
from harness.validate.references import ReferenceTable, load_references
from harness.validate.results import NodeResult
from harness.validate.runner import Progress, run_node
from harness.validate.spec import CheckSpec, select_checks


@dataclass(frozen=True)
class Request:
    """What the user asked for, as the CLI parsed it."""

    checks: Sequence[str] | None = None
    light: bool = False
    expected_file: Path | None = None
    reference_file: Path | None = None
    out: Path | None = None
    gpus: int | None = None
    gpu_model: str | None = None
    run_dir: Path | None = None
    scratch_dir: Path | None = None
    shared_dir: Path | None = None


@dataclass(frozen=True)
class Prepared:
    context: NodeContext
    specs: list[CheckSpec]
    references: ReferenceTable
    expected: ExpectedVersions | None


def prepare(request: Request, environ: Mapping[str, str], nvml: NvmlReader | None = None) -> Prepared:
    """Check every input and build this node's context; raises UserInputError/ConfigError (exit 2)."""
    specs = select_checks(request.checks, request.light)
    references = load_references(request.reference_file)
    expected = load_expected(request.expected_file) if request.expected_file else None
    if request.out is not None:
        store.check_out_dir(request.out)
    node = node_name(environ)
    defaults = Settings()
    settings = Settings(
        light=request.light,
        run_dir=request.run_dir or defaults.run_dir,
        scratch_dir=request.scratch_dir or defaults.scratch_dir,
        shared_dir=request.shared_dir,
        expected_gpus=expected_gpus(request.gpus, request.gpu_model, environ, node),
        measurements_dir=store_folder(environ) if any(spec.name == E2E for spec in specs) else None,
    )
    context = NodeContext(
        node=node,
        settings=settings,
        references=references,
        expected_versions=expected.for_node(node) if expected else {},
        expected_source=expected.source if expected else None,
        partition=environ.get("SLURM_JOB_PARTITION") or None,
        nvml=nvml if nvml is not None else PynvmlReader(),
    )
    return Prepared(context, specs, references, expected)


def run_local_node(prepared: Prepared, progress: Progress | None = None) -> NodeResult:
    return run_node(prepared.context, prepared.specs, progress)


def validate_local(
    request: Request,
    environ: Mapping[str, str],
    nvml: NvmlReader | None = None,
    progress: Progress | None = None,
) -> ValidationReport:
    """`harness validate --local`: this node's suite, aggregated like a fleet of one, saved to --out."""
    prepared = prepare(request, environ, nvml)
    node = run_local_node(prepared, progress)
    expected = prepared.expected.source if prepared.expected else None
    report = aggregate([node], prepared.references, "local", expected)
    if request.out is not None:
        save(request.out, report)
    return report


def save(out: Path, report: ValidationReport) -> None:
    """Node files and history lines first, then the report (which shows the history)."""
    import json

    from harness.validate.output import render_html

    for node in report.nodes:
        store.write_node(out, node)
        store.append_history(out, node)
    history = {node.node: store.read_history(out, node.node) for node in report.nodes}
    store.write_text(out / store.REPORT_JSON, json.dumps(report.to_dict(), indent=2) + "\n")
    store.write_text(out / store.REPORT_HTML, render_html(report, history))
