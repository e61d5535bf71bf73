"""`harness validate --partition P` / `--nodes LIST`: a verdict per node across a Slurm partition.

1. Every input is checked first (checks, reference and expected-versions files, --out, the
   partition and node names against `sinfo`, with "did you mean"): bad input submits nothing.
2. One job per node, pinned with --nodelist (`harness.slurm.node_jobs`), runs the node-local
   suite (`jobs.NodeJob`) and writes its `NodeResult` into OUT/jobs/STAMP/nodes/.
3. Pair jobs (two nodes, one process on each) measure all-reduce between nodes; failing pairs are
   retested with nodes that passed, so the blame lands on one node (`pairs`).
4. The results are aggregated like a local run (`aggregate`), saved to OUT, and failing nodes
   drained (`drain`) when asked.

The command waits for its jobs with a progress line per change; Ctrl-C cancels them. Nodes that
cannot take a job (drained, down) are named and left out: `--resume-drained` re-validates the ones
this tool drained inside a maintenance reservation, and returns those that pass to service.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import atomic
from harness.distribute.cluster import expand_hostlist
from harness.distribute.measured import store_folder
from harness.errors import HarnessError, LaunchError, UserInputError
from harness.registry import closest
from harness.slurm import node_jobs, scheduler
from harness.slurm.node_jobs import PinnedResources
from harness.validate import drain, pairs, store
from harness.validate.aggregate import ValidationReport, aggregate
from harness.validate.checks.e2e import NAME as E2E
from harness.validate.drain import Action, NodeState, SlurmNodes
from harness.validate.expected import load_expected
from harness.validate.jobs import NodeJob, PairJob
from harness.validate.references import ReferenceTable, load_references
from harness.validate.results import CheckResult, NodeResult, node_from_dict
from harness.validate.runner import now
from harness.validate.spec import select_checks
from harness.validate.suite import Request, save
from harness.validate.verdict import Verdict

POLL_S = 2.0
USABLE_STATES = {"idle", "mixed", "allocated", "completing", "planned"}
Say = Callable[[str], None]
Runner = scheduler.Runner


class CouldNotRun(HarnessError):
    """The jobs could not be submitted at all: nothing was validated (exit 3)."""

    exit_code = 3


@dataclass(frozen=True)
class PartitionRequest:
    base: Request
    partition: str | None = None
    nodes: str | None = None
    time_minutes: int = 30
    drain: bool = False
    resume_drained: bool = False
    yes: bool = False


@dataclass
class Outcome:
    report: ValidationReport | None
    actions: list[Action]
    applied: bool
    notes: list[str]


# --- which nodes ---------------------------------------------------------------------------------


def query_nodes(runner: Runner = scheduler.run) -> SlurmNodes:
    """Nodes, partitions, states and reasons from `sinfo`; exit 2 without a Slurm to ask."""
    try:
        return drain.parse_sinfo_nodes(runner(drain.SINFO_NODES))
    except scheduler.SchedulerUnavailable as err:
        raise UserInputError(f"this needs Slurm, and Slurm cannot be asked here: {err}") from None


def select_nodes(partition: str | None, spec: str | None, known: SlurmNodes) -> tuple[str | None, list[str]]:
    """The partition the jobs go to and the nodes to validate, in sinfo's (or the hostlist's) order."""
    if partition is not None and partition not in known.partitions:
        hint = closest(partition, list(known.partitions))
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise UserInputError(f"--partition: unknown partition {partition!r} (from sinfo).{did_you_mean} "
                             f"Known: {', '.join(known.partitions) or 'none'}")
    if spec is None:
        assert partition is not None
        return partition, list(known.partitions[partition])
    try:
        names = list(dict.fromkeys(expand_hostlist(spec)))
    except LaunchError as err:
        raise UserInputError(f"--nodes: {err}") from None
    if not names:
        raise UserInputError(f"--nodes needs node names (Slurm hostlist syntax, e.g. n[1-8]). Received: {spec!r:.200}")
    unknown = [name for name in names if name not in known.states]
    if unknown:
        hints = [f"{name!r} (did you mean {hint!r}?)" if (hint := closest(name, known.names)) else repr(name)
                 for name in unknown[:10]]
        raise UserInputError(f"--nodes: unknown node{'s' if len(unknown) > 1 else ''} {', '.join(hints)} "
                             f"(from sinfo). Known: {', '.join(known.names[:50]) or 'none'}")
    if partition is not None:
        outside = [name for name in names if name not in known.partitions[partition]]
        if outside:
            raise UserInputError(f"--nodes: {', '.join(outside)} not in partition {partition!r} "
                                 f"(its nodes: {', '.join(known.partitions[partition])})")
        return partition, names
    return _partition_holding(names, known), names


def _partition_holding(names: Sequence[str], known: SlurmNodes) -> str | None:
    """The default partition when it holds every node, else the first that does."""
    order = [known.default_partition] if known.default_partition else []
    order += [p for p in known.partitions if p != known.default_partition]
    for candidate in order:
        if all(name in known.partitions[candidate] for name in names):
            return candidate
    raise UserInputError(f"--nodes: no partition holds all of {', '.join(names)}; validate them per partition "
                         "(--partition P --nodes ...)")


def unusable(state: NodeState) -> str | None:
    """Why Slurm would not start a job on this node now, or None when it would."""
    text = state.state.strip().lower()
    if text.endswith("*"):
        return f"not responding ({state.state})"
    base = text.rstrip("~#!%$@^-+")
    if base in USABLE_STATES:
        return None
    reason = f", reason: {state.reason}" if state.reason else ""
    return f"{state.state}{reason}"


# --- inputs ----------------------------------------------------------------------------------------


def node_checks(checks: Sequence[str] | None) -> list[str] | None:
    """The node-local part of --checks: `collective.internode` is not one (it runs between nodes);
    asked for alone, the nodes still run their basics (a node job has to report something)."""
    if checks is None:
        return None
    local = [name for name in checks if name != pairs.CHECK]
    return local or ["node"]


def check_inputs(request: Request) -> tuple[ReferenceTable, str | None]:
    """What `prepare` checks on a node, checked here before anything is submitted."""
    specs = select_checks(node_checks(request.checks), request.light)
    if any(spec.name == E2E for spec in specs):
        store_folder(os.environ)  # node jobs save their e2e rates there: a file in its place fails here, once
    references = load_references(request.reference_file)
    expected = load_expected(request.expected_file) if request.expected_file else None
    if request.out is None:
        raise UserInputError("--partition/--nodes need --out DIR, a folder on a file system every node can write "
                             "(the jobs write their results there)")
    store.check_out_dir(request.out)
    return references, expected.source if expected else None


def absolute(request: Request) -> Request:
    """Paths as every node sees them: absolute, resolved on the submitting side."""
    def fix(path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None

    return replace(request, expected_file=fix(request.expected_file), reference_file=fix(request.reference_file),
                   out=fix(request.out), run_dir=fix(request.run_dir), scratch_dir=fix(request.scratch_dir),
                   shared_dir=fix(request.shared_dir))


def wants_pairs(checks: Sequence[str] | None) -> bool:
    return checks is None or any(name in ("collective", pairs.CHECK) for name in checks)


# --- the run -------------------------------------------------------------------------------------


def validate_partition(request: PartitionRequest, say: Say, runner: Runner = scheduler.run) -> Outcome:
    base = absolute(request.base)
    references, expected = check_inputs(base)
    known = query_nodes(runner)
    partition, names = select_nodes(request.partition, request.nodes, known)
    assert base.out is not None
    resources = PinnedResources(time_minutes=request.time_minutes, partition=partition)
    if request.resume_drained:
        return _resume(request, base, names, known, resources, references, expected, say, runner)
    notes = []
    ready = []
    for name in names:
        why = unusable(known.states[name])
        if why is None:
            ready.append(name)
        else:
            notes.append(f"{name}: not validated: Slurm cannot start a job there ({why})")
    for note in notes:
        say(note)
    results = run_jobs(ready, base, resources, references, say) if ready else []
    report = aggregate(results, references, "partition", expected)
    if results:
        save(base.out, report)
    actions = drain.plan_drain(report.nodes, known.states) if request.drain else []
    if request.yes:
        apply(actions, say, runner)
    return Outcome(report, actions, request.yes, notes)


def run_jobs(
    names: Sequence[str], request: Request, resources: PinnedResources, references: ReferenceTable, say: Say
) -> list[NodeResult]:
    """Node jobs, then pair jobs and retests; one NodeResult per node (ERROR for a job that died)."""
    assert request.out is not None
    folder = request.out / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    atomic.make_dirs(folder / "nodes")
    atomic.make_dirs(folder / "pairs")
    node_request = replace(request, out=None, checks=node_checks(request.checks))
    batch = JobBatch(folder, resources, say)
    try:
        for name in names:
            target = folder / "nodes" / f"{store.safe_name(name)}.json"
            batch.submit(name, NodeJob(node_request, str(target)), [name], target, "node-local checks")
        batch.wait()
        results = [_node_result(name, batch.done[name], batch.log_tail) for name in names]
        ran = [r.node for r in results if r.check(drain.NOT_RUN_CHECK) is None]
        if wants_pairs(request.checks) and len(ran) >= 2:
            per_node = _pair_checks(batch, ran, request.light, references)
            results = [replace(r, checks=(*r.checks, per_node[r.node])) if r.node in per_node else r
                       for r in results]
    except BaseException:
        batch.cancel()
        raise
    return results


def _pair_checks(batch: JobBatch, names: Sequence[str], light: bool,
                 references: ReferenceTable) -> dict[str, CheckResult]:
    first = _run_pairs(batch, pairs.plan_pairs(names), light, retest=False)
    first, median = pairs.judge_rates(first, references.fleet_warn, references.fleet_fail)
    retests = pairs.plan_retests(first)
    second: list[pairs.PairOutcome] = []
    if retests:
        batch.say(f"retesting {len(retests)} pair(s) to place the blame: "
                  f"{', '.join(f'{a}-{b}' for a, b in retests)}")
        second = _run_pairs(batch, retests, light, retest=True)
        second, _ = pairs.judge_rates(second, references.fleet_warn, references.fleet_fail, median)
    return pairs.blame(names, [*first, *second])


def _run_pairs(batch: JobBatch, plan: Sequence[pairs.Pair], light: bool, retest: bool) -> list[pairs.PairOutcome]:
    keys = []
    for a, b in plan:
        key = f"{a}-{b}" + (" (retest)" if retest else "")
        suffix = "-retest" if retest else ""
        target = batch.folder / "pairs" / f"{store.safe_name(a)}--{store.safe_name(b)}{suffix}.json"
        batch.submit(key, PairJob((a, b), light, str(target)), [a, b], target, "all-reduce between the nodes")
        keys.append((key, (a, b)))
    batch.wait()
    return [_pair_outcome(nodes, batch.done[key], retest, batch.log_tail) for key, nodes in keys]


@dataclass
class Waiting:
    key: str
    job_id: str
    target: Path
    state: str = "PENDING"
    ended: str | None = None


class JobBatch:
    """Submitted jobs, waited for together; `cancel` scancels every one not finished (Ctrl-C).

    A job counts as finished when it has left the queue, not when its result appears: the next
    jobs (pairs, exclusive) and the end of a reservation need its nodes free.
    """

    def __init__(self, folder: Path, resources: PinnedResources, say: Say) -> None:
        self.folder = folder
        self.resources = resources
        self.say = say
        self.pending: dict[str, Waiting] = {}
        self.done: dict[str, Waiting] = {}

    def submit(self, key: str, function: Callable[[], Any], nodes: Sequence[str], target: Path, what: str) -> None:
        name = f"harness-validate-{key.split(' ')[0]}"
        try:
            job_id = node_jobs.submit_pinned(self.folder / "logs", function, nodes, self.resources, name)
        except Exception as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise CouldNotRun(f"could not submit the job for {key}: {detail or type(err).__name__}") from None
        self.pending[key] = Waiting(key, job_id, target)
        self.say(f"submitted job {job_id}: {what} on {key}")

    def wait(self) -> None:
        while self.pending:
            states = self._states()
            for key, job in list(self.pending.items()):
                state = states.get(job.job_id) if states is not None else job.state
                if state is None or state not in scheduler.ACTIVE:
                    job.ended = None if job.target.exists() else (state or "gone from the queue")
                    self.done[key] = self.pending.pop(key)
                    self.say(f"job {job.job_id} ({key}): " + ("finished" if job.ended is None
                                                             else f"ended ({job.ended}) without a result"))
                elif state != job.state:
                    job.state = state
                    self.say(f"job {job.job_id} ({key}): {state}")
            if self.pending:
                time.sleep(POLL_S)

    def _states(self) -> dict[str, str] | None:
        try:
            return node_jobs.job_states([job.job_id for job in self.pending.values()])
        except scheduler.SchedulerUnavailable as err:
            self.say(f"cannot ask Slurm about the jobs now ({err}); waiting")
            return None

    def cancel(self) -> None:
        ids = [job.job_id for job in self.pending.values()]
        if not ids:
            return
        problems = node_jobs.cancel_jobs(ids)
        self.say(f"cancelled job{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
                 + (f" ({'; '.join(problems)})" if problems else ""))
        self.pending.clear()

    def log_tail(self, job: Waiting) -> str:
        path = self.folder / "logs" / f"{job.job_id}_0_log.err"
        try:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"no log at {path}"
        return f"{lines[-1][:200] if lines else 'empty log'} (log: {path})"


def _node_result(name: str, job: Waiting, log_tail: Callable[[Waiting], str]) -> NodeResult:
    if job.ended is None:
        try:
            import json

            result = node_from_dict(json.loads(job.target.read_text(encoding="utf-8")), str(job.target))
            if result.node == name:
                return result
            message = f"the job ran on {result.node!r}, not on {name!r}"
        except (OSError, ValueError, UserInputError) as err:
            message = f"unreadable result {job.target}: {err}"
    else:
        message = f"validation job {job.job_id} ended ({job.ended}) without a result: {log_tail(job)}"
    stamp = now()
    check = CheckResult(drain.NOT_RUN_CHECK, Verdict.ERROR, message)
    return NodeResult(name, (check,), stamp, stamp, False, "")


def _pair_outcome(
    nodes: tuple[str, str], job: Waiting, retest: bool, log_tail: Callable[[Waiting], str]
) -> pairs.PairOutcome:
    if job.ended is None:
        try:
            import json

            data = json.loads(job.target.read_text(encoding="utf-8"))
            rate = data.get("busbw_gbs")
            return pairs.PairOutcome(nodes, Verdict(data["verdict"]), str(data["message"]),
                                     float(rate) if rate is not None else None, retest)
        except (OSError, ValueError, KeyError) as err:
            return pairs.PairOutcome(nodes, Verdict.ERROR, f"unreadable result {job.target}: {err}", None, retest)
    return pairs.PairOutcome(nodes, Verdict.ERROR, f"pair job {job.job_id} ended ({job.ended}) without a result: "
                             f"{log_tail(job)}", None, retest)


# --- drain and resume ----------------------------------------------------------------------------


def apply(actions: Sequence[Action], say: Say, runner: Runner = scheduler.run) -> list[str]:
    """Run each action's command; returns the problems (a failed scontrol does not stop the others)."""
    problems = []
    for action in actions:
        if not action.command:
            continue
        try:
            runner(list(action.command))
        except scheduler.SchedulerUnavailable as err:
            problems.append(f"{action.node}: {err}")
            say(f"could not {action.what} {action.node}: {err}")
    return problems


def reservation_commands(name: str, nodes: Sequence[str], user: str, minutes: int) -> tuple[list[str], list[str]]:
    """Create and delete a maintenance reservation holding `nodes` for `user` only."""
    create = ["scontrol", "create", "reservation", f"ReservationName={name}", "StartTime=now",
              f"Duration={minutes}", f"Nodes={','.join(nodes)}", f"Users={user}", "Flags=MAINT,IGNORE_JOBS"]
    return create, ["scontrol", "delete", f"ReservationName={name}"]


def _resume(
    request: PartitionRequest, base: Request, names: Sequence[str], known: SlurmNodes, resources: PinnedResources,
    references: ReferenceTable, expected: str | None, say: Say, runner: Runner,
) -> Outcome:
    """Re-validate the nodes this tool drained (inside a reservation, so no other job lands on them
    meanwhile); resume those that pass, drain the others again with the new reason."""
    notes = []
    ours = []
    for name in names:
        state = known.states[name]
        if state.drained_by_us:
            ours.append(name)
        elif state.drained:
            notes.append(f"{name}: drained by someone else (reason: {state.reason or 'none'}): left alone")
        else:
            notes.append(f"{name}: not drained ({state.state}): nothing to resume")
    for note in notes:
        say(note)
    if not ours:
        return Outcome(None, [], request.yes, notes)
    reservation = f"harness-validate-{os.getpid()}-{int(time.time())}"
    create, delete = reservation_commands(reservation, ours, getpass.getuser(), request.time_minutes * 4)
    steps = [Action(",".join(ours), "reserve", "hold the nodes for the validation jobs only", tuple(create)),
             *(Action(n, "resume", "return to idle inside the reservation", tuple(drain.resume_command(n)))
               for n in ours)]
    if not request.yes:
        after = Action(",".join(ours), "then", "validate them; a node that fails is drained again; at the end the "
                       "reservation is deleted", tuple(delete))
        return Outcome(None, [*steps, after], False, notes)
    if apply(steps[:1], say, runner):
        raise CouldNotRun(f"could not create the reservation for {', '.join(ours)}; nothing was changed")
    decided: set[str] = set()
    try:
        apply(steps[1:], say, runner)
        held = replace(resources, reservation=reservation)
        results = run_jobs(ours, base, held, references, say)
        report = aggregate(results, references, "partition", expected)
        assert base.out is not None
        save(base.out, report)
        actions = []
        for node in report.nodes:
            if node.verdict.fit:
                actions.append(Action(node.node, "resume", f"now {node.verdict.value}: back in service"))
            else:
                reason = drain.drain_reason(node)
                actions.append(Action(node.node, "drain", reason, tuple(drain.drain_command(node.node, reason))))
        apply(actions, say, runner)
        decided.update(node.node for node in report.nodes)
    finally:
        undecided = [n for n in ours if n not in decided]
        apply([Action(n, "drain", "validation did not finish",
                      tuple(drain.drain_command(n, known.states[n].reason))) for n in undecided], say, runner)
        apply([Action(reservation, "delete", "", tuple(delete))], say, runner)
    return Outcome(report, actions, True, notes)


def local_drain_actions(report: ValidationReport, runner: Runner = scheduler.run) -> list[Action]:
    """--local --drain: this node drains itself when it fails (what a HealthCheckProgram does)."""
    known = query_nodes(runner)
    return drain.plan_drain(report.nodes, known.states)


def check_local_drain(node: str, runner: Runner = scheduler.run) -> None:
    """Before a --local --drain run: Slurm must be there and know this node by this name."""
    known = query_nodes(runner)
    if node not in known.states:
        hint = closest(node, known.names)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise UserInputError(f"--drain: this node is {node!r}, which Slurm does not know (from sinfo).{did_you_mean} "
                             "Inside a HealthCheckProgram or a job, SLURMD_NODENAME names it")
