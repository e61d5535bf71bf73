"""`harness validate`: is this node fit to run jobs? Checks, verdicts, reports for sysadmins.

Layout: `spec` (the check registry), `checks/` (the node-local checks), `runner` (run them on
one node, guarded -> NodeResult), `aggregate` (node results -> fleet rules and verdicts),
`store`/`output`/`schema` (files, table, HTML, the JSON contract), `suite` (both halves for
`--local`); for `--partition`/`--nodes`: `partition` (node selection from sinfo, the jobs, waiting),
`jobs` (what runs on the nodes), `pairs` (inter-node pairs and blame), `drain` (drain and resume
rules). Verdict order and exit codes: `verdict`.
"""

from harness.validate.aggregate import ValidationReport, aggregate
from harness.validate.results import CheckResult, Measurement, NodeResult, Reference
from harness.validate.suite import Request, prepare, run_local_node, save, validate_local
from harness.validate.verdict import Verdict

__all__ = [
    "CheckResult", "Measurement", "NodeResult", "Reference", "Request", "ValidationReport", "Verdict",
    "aggregate", "prepare", "run_local_node", "save", "validate_local",
]
