"""What SLURM says about a sweep's jobs: their states, why they wait, and whether they can ever start.

redrep asks the controller directly: ``squeue`` lists every pending and running
job (and those that ended a few minutes ago, ``MinJobAge``) with its pending
reason and its request; ``sinfo`` lists the nodes of a partition. A job
pending for a reason that waiting cannot resolve (a request larger than any
node of its partition, a per-job limit of its QOS, ...) is told apart from one
that waits for its turn, with the flag of ``redrep sweep`` that changes it.
The states of jobs that ended long ago come from submitit's jobs (sacct), see
:class:`redrep.experiments.executors.SlurmExecutor`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

#: Job states of a job that waits for its turn (squeue, sacct).
QUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED")
#: Job states of a job that runs.
RUNNING_STATES = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
#: squeue's fields, in order: job id, state, pending reason, partition, CPUs, memory per node, TRES per node
#: (the GPUs), the nodes asked for by name, the comment (last: the one field a user may fill with anything)
SQUEUE_FORMAT = "%i|%T|%r|%P|%C|%m|%b|%n|%k"
#: sinfo's fields per node: name, CPUs, memory (MB), generic resources (the GPUs), state
SINFO_FORMAT = "%N|%c|%m|%G|%t"

#: Pending reasons that waiting never resolves, whatever the request's size: what they mean, and the flag to change.
NEVER_REASONS = {
    "PartitionTimeLimit": ("its time limit is above its partition's", "--slurm-time"),
    "BadConstraints": ("no node has the features it asks for", "--slurm-param constraint"),
    "InvalidQOS": ("its QOS is not valid for it", "--slurm-param qos"),
    "InvalidAccount": ("its account is not valid", "--slurm-param account"),
    "AccountNotAllowed": ("its account may not use the partition", "--slurm-param account or --slurm-partition"),
    "DependencyNeverSatisfied": ("its dependency can never be satisfied", "--slurm-param dependency"),
}
#: A per-job limit of a QOS or an association (QOSMaxCpuPerJobLimit, AssocMaxGRESPerJob, QOSMinMemory, ...):
#: the job itself is over it, so no other job's end lets it start (per-user and group limits do: not matched).
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)(Max\w*Per(Job|Node)\w*|Min\w+)")
#: What a per-job limit is about, by a word of its name, and the flag that changes it.
_LIMIT_FLAGS = (("Cpu", "--slurm-cpus"), ("GRES", "--slurm-gpus"), ("Mem", "--slurm-mem-gb"), ("Wall", "--slurm-time"))
#: Pending reasons under which a request larger than every node of the partition can never start.
_SIZE_REASONS = ("Resources", "Priority", "PartitionConfig", "PartitionNodeLimit", "Reservation", "None", "")
#: Node states (sinfo's short form, without its suffix) in which a node runs no job until an administrator acts.
_DOWN = ("down", "drain", "drng", "fail", "failg", "maint", "unk", "inval", "futr", "npc", "plnd", "boot")


@dataclass(frozen=True)
class QueueRow:
    """One job (array task) as squeue lists it; ``mem_mb`` per node, None when it asks for none."""

    job_id: str
    state: str
    reason: str = ""
    partition: str = ""
    cpus: int | None = None
    mem_mb: float | None = None
    gpus: int = 0
    nodelist: str = ""
    comment: str = ""


@dataclass(frozen=True)
class Node:
    """One node of a partition as sinfo lists it."""

    name: str
    cpus: int
    mem_mb: float
    gpus: int
    state: str

    @property
    def up(self) -> bool:
        return self.state.rstrip("*~#!%$@^-+").lower() not in _DOWN


def run_client(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess | None:
    """Run a SLURM client command; None when it cannot run (not installed, or no answer within ``timeout``)."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _int(text: str) -> int | None:
    text = text.strip().rstrip("+")
    return int(text) if text.isascii() and text.isdigit() else None


def parse_mem_mb(text: str) -> float | None:
    """squeue's or sinfo's memory (``2048``, ``100000M``, ``2G``, ``0``) in MB; None for none asked (0 or N/A)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\+?\s*", text or "", flags=re.IGNORECASE)
    if not m:
        return None
    mb = float(m.group(1)) * {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[m.group(2).upper()]
    return mb or None


def count_gpus(text: str) -> int:
    """GPUs in a GRES or TRES text (``gpu:4``, ``gpu:a100:2(S:0-1)``, ``gres/gpu:1``, ``(null)``, ``N/A``)."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[A-Za-z][\w.\-]*)?[:=](\d+)", text or ""))


def parse_squeue(text: str) -> dict[str, QueueRow]:
    """Job id -> :class:`QueueRow`, from squeue's output in :data:`SQUEUE_FORMAT`."""
    rows = {}
    for line in text.splitlines():
        f = [x.strip() for x in line.split("|", 8)]
        if len(f) < 9 or not f[0]:
            continue
        rows[f[0]] = QueueRow(
            job_id=f[0],
            state=f[1].split(" ")[0].upper(),
            reason=f[2],
            partition=f[3],
            cpus=_int(f[4]),
            mem_mb=parse_mem_mb(f[5]),
            gpus=count_gpus(f[6]),
            nodelist="" if f[7] in ("", "(null)") else f[7],
            comment="" if f[8] == "(null)" else f[8],
        )
    return rows


def squeue(select: list[str]) -> dict[str, QueueRow] | None:
    """The jobs the controller knows among ``select`` (squeue's ``-j IDS`` or ``--name NAME``), array tasks one by one.

    Returns {} when it knows none of them, None when squeue does not answer.
    """
    r = run_client(["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT, *select])
    if r is None:
        return None
    if r.returncode != 0:
        # squeue -j with only ids the controller has forgotten is an error, but an answer
        return {} if "Invalid job id" in r.stderr else None
    return parse_squeue(r.stdout)


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from sinfo's output in :data:`SINFO_FORMAT` (one line per node and partition)."""
    nodes = {}
    for line in text.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) < 5 or not f[0]:
            continue
        nodes[f[0]] = Node(f[0], _int(f[1]) or 0, parse_mem_mb(f[2]) or 0.0, count_gpus(f[3]), f[4])
    return list(nodes.values())


def partition_nodes(partition: str) -> list[Node] | None:
    """The nodes of ``partition`` (all partitions for ''), None when sinfo does not answer."""
    r = run_client(["sinfo", "-h", "-N", "-o", SINFO_FORMAT, *(["-p", partition] if partition else [])])
    if r is None or r.returncode != 0:
        return None
    return parse_sinfo(r.stdout)


def expand_nodes(nodelist: str, limit: int = 10_000) -> list[str]:
    """Node names of a SLURM host list: ``gpu[07-08],vm`` -> ``gpu07, gpu08, vm`` (at most ``limit``)."""
    items, depth, cur = [], 0, ""
    for c in nodelist:
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += (c == "[") - (c == "]")
        cur += c
    items.append(cur)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item:
            out += _expand_one(item, limit - len(out))
    return out[:limit]


def _expand_one(item: str, limit: int) -> list[str]:
    m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
    if m is None or limit <= 0:
        return [item][: max(limit, 0)]
    head, ranges, tail = m.groups()
    out = []
    for r in ranges.split(","):
        lo, _, hi = r.strip().partition("-")
        if not (lo.isascii() and lo.isdigit() and (not hi or (hi.isascii() and hi.isdigit()))):
            return [item]  # not a range SLURM writes: the name as it stands
        nums = [f"{i:0{len(lo)}d}" for i in range(int(lo), min(int(hi or lo), int(lo) + limit) + 1)]
        for n in nums:
            out += [head + n + rest for rest in _expand_one(tail, limit - len(out))]
            if len(out) >= limit:
                return out[:limit]
    return out


def _size_problem(row: QueueRow, nodes: list[Node]) -> tuple[str, str] | None:
    """Why the request fits no node of its partition, and the flags that change it; None when some node fits."""
    where = f"partition {row.partition}" if row.partition else "the cluster"
    if not nodes:
        return f"{where} has no nodes", "--slurm-partition"
    cpus, mem, gpus = row.cpus or 0, row.mem_mb or 0.0, row.gpus
    if any(n.cpus >= cpus and n.mem_mb >= mem and n.gpus >= gpus for n in nodes):
        return None
    asks = []
    most_cpus, most_mem, most_gpus = (max(getattr(n, a) for n in nodes) for a in ("cpus", "mem_mb", "gpus"))
    if cpus > most_cpus:
        asks.append((f"{cpus} CPUs", f"{most_cpus}", "--slurm-cpus"))
    if mem > most_mem:
        asks.append((f"{mem / 1024:g} GB of memory", f"{most_mem / 1024:g} GB", "--slurm-mem-gb"))
    if gpus > most_gpus:
        asks.append((f"{gpus} GPUs", f"{most_gpus}", "--slurm-gpus"))
    if asks:
        why = "; ".join(f"each run asks {a}, the largest node of {where} has {b}" for a, b, _ in asks)
        return why, " and ".join(f for _, _, f in asks)
    flags = ["--slurm-cpus", "--slurm-mem-gb"] + (["--slurm-gpus"] if gpus else [])
    return f"no node of {where} has {cpus} CPUs, {mem / 1024:g} GB and {gpus} GPUs at once", " or ".join(flags)


def never_starts(row: QueueRow, nodes: list[Node] | None, known: set[str] | None = None) -> tuple[str, str] | None:
    """Why a pending job can never start, and the flag of ``redrep sweep`` to change; None while it may start.

    Parameters
    ----------
    row : the job as squeue lists it (its pending reason and request)
    nodes : the nodes of its partition (None: unknown, no conclusion drawn from sizes)
    known : every node name of the cluster (for ReqNodeNotAvail; None: unknown)
    """
    reason = row.reason.split(",")[0].strip()
    if reason in NEVER_REASONS:
        return NEVER_REASONS[reason]
    if _PER_JOB_LIMIT.fullmatch(reason):
        flag = next((f for word, f in _LIMIT_FLAGS if word in reason), "--slurm-param qos")
        owner = "QOS" if reason.startswith("QOS") else "association"
        return f"it is over a per-job limit of its {owner} ({reason})", flag
    if reason in _SIZE_REASONS and nodes is not None:
        size = _size_problem(row, nodes)
        if size is not None:
            return size
    if reason == "PartitionConfig":
        flags = "--slurm-cpus, --slurm-mem-gb, --slurm-gpus or --slurm-partition"
        return "its partition's limits refuse its request", flags
    if reason == "PartitionNodeLimit" and nodes is not None and any(n.up for n in nodes):
        # with every node down or drained this resolves when they come back; with some up, the partition's limits rule
        return "its partition's node limits exclude a one-node job", "--slurm-partition"
    if reason == "ReqNodeNotAvail" and row.nodelist and known is not None:
        missing = [n for n in expand_nodes(row.nodelist) if n not in known]
        if missing:
            return f"it asks for nodes the cluster does not have ({', '.join(missing[:5])})", "--slurm-param nodelist"
    return None


def cancel(job_ids: list[str]) -> bool:
    """scancel these jobs (array tasks ``12_3`` or whole jobs); whether scancel said it did."""
    if not job_ids:
        return True
    r = run_client(["scancel", *job_ids])
    return r is not None and r.returncode == 0
