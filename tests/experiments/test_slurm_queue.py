"""What squeue and sinfo say, read back; which pending reasons can never resolve, and the flag each names.

Known answers on canned squeue/sinfo output (the formats redrep asks for); the same reading against a real
cluster is in test_sweep_slurm.py.
"""

from __future__ import annotations

import pytest

from redrep.experiments.executors import waiting_line
from redrep.experiments.runs import FINISHED, QUEUED, RUNNING, RunStatus
from redrep.experiments.slurm_queue import (
    Node,
    QueueRow,
    count_gpus,
    expand_nodes,
    never_starts,
    parse_mem_mb,
    parse_sinfo,
    parse_squeue,
)

SQUEUE = """\
12_0|PENDING|PartitionConfig|debug|8|0|N/A||redrep:ab12
12_1|RUNNING|None|debug|1|2G|gres:gpu:1|vm|redrep:ab12
13|PENDING|ReqNodeNotAvail, UnavailableNodes:gpu[7-8]|gpu|4|100000M|gres/gpu:a100:2|gpu[7-8]|(null)
14|CANCELLED by 0|None|debug|1|0|N/A||a|b
"""

SINFO = """\
vm|4|2048|(null)|idle
g1|32|512000|gpu:a100:4(S:0-1)|mix
g2|64|256000|gpu:2,mps:100|down*
"""


def test_squeue_rows_known_answer():
    rows = parse_squeue(SQUEUE)
    assert list(rows) == ["12_0", "12_1", "13", "14"]
    assert rows["12_0"] == QueueRow("12_0", "PENDING", "PartitionConfig", "debug", 8, None, 0, "", "redrep:ab12")
    assert (rows["12_1"].mem_mb, rows["12_1"].gpus, rows["12_1"].nodelist) == (2048.0, 1, "vm")
    assert (rows["13"].reason, rows["13"].mem_mb, rows["13"].gpus, rows["13"].comment) == (
        "ReqNodeNotAvail, UnavailableNodes:gpu[7-8]",
        100000.0,
        2,
        "",
    )
    # a state with words after it ("CANCELLED by 0"); a comment with the separator in it stays whole
    assert (rows["14"].state, rows["14"].comment) == ("CANCELLED", "a|b")


def test_sinfo_nodes_known_answer():
    nodes = {n.name: n for n in parse_sinfo(SINFO)}
    assert nodes["vm"] == Node("vm", 4, 2048.0, 0, "idle")
    assert (nodes["g1"].gpus, nodes["g2"].gpus, nodes["g1"].mem_mb) == (4, 2, 512000.0)
    assert nodes["vm"].up and nodes["g1"].up and not nodes["g2"].up


@pytest.mark.parametrize(
    "text, mb", [("0", None), ("N/A", None), ("2048", 2048.0), ("100000M", 100000.0), ("2G", 2048.0), ("1T", 2**20)]
)
def test_memory_in_mb(text, mb):
    assert parse_mem_mb(text) == mb


@pytest.mark.parametrize(
    "text, n", [("(null)", 0), ("N/A", 0), ("gpu:4", 4), ("gres:gpu:1", 1), ("gpu:a100:2(S:0-1),gpu:v100:1", 3)]
)
def test_gpus_counted(text, n):
    assert count_gpus(text) == n


NODES = [Node("vm", 4, 2048.0, 0, "idle"), Node("g1", 32, 512000.0, 4, "mix")]


def _row(reason, cpus=1, mem_mb=None, gpus=0, **kw):
    return QueueRow("12_0", "PENDING", reason, kw.pop("partition", "debug"), cpus, mem_mb, gpus, **kw)


def test_never_starts_known_answers():
    # too much of each resource, alone and together: the flag of what is too large
    assert never_starts(_row("PartitionConfig", cpus=8), NODES[:1]) == (
        "each run asks 8 CPUs, the largest node of partition debug has 4",
        "--slurm-cpus",
    )
    assert never_starts(_row("Resources", cpus=64), NODES) == (
        "each run asks 64 CPUs, the largest node of partition debug has 32",
        "--slurm-cpus",
    )
    assert never_starts(_row("Resources", mem_mb=600 * 1024), NODES) == (
        "each run asks 600 GB of memory, the largest node of partition debug has 500 GB",
        "--slurm-mem-gb",
    )
    assert never_starts(_row("Priority", gpus=8), NODES) == (
        "each run asks 8 GPUs, the largest node of partition debug has 4",
        "--slurm-gpus",
    )
    assert never_starts(_row("Resources", cpus=64, gpus=8), NODES)[1] == "--slurm-cpus and --slurm-gpus"
    # each resource fits some node, but no node has all of them: 8 CPUs (g1 has) and 3 GB without a GPU (vm lacks)
    mixed = [Node("a", 4, 8192.0, 0, "idle"), Node("b", 16, 2048.0, 0, "idle")]
    assert never_starts(_row("Resources", cpus=8, mem_mb=4096), mixed) == (
        "no node of partition debug has 8 CPUs, 4 GB and 0 GPUs at once",
        "--slurm-cpus or --slurm-mem-gb",
    )
    # a request some node can hold waits for its turn, whatever the reason says
    for reason in ("Resources", "Priority", "None", "BeginTime", "QOSMaxCpuPerUserLimit", "JobArrayTaskLimit"):
        assert never_starts(_row(reason, cpus=16, gpus=2), NODES) is None, reason
    # PartitionConfig with a request that fits: the partition's own limits (MaxCPUsPerNode, ...), no size to blame
    assert never_starts(_row("PartitionConfig", cpus=2), NODES) == (
        "its partition's limits refuse its request",
        "--slurm-cpus, --slurm-mem-gb, --slurm-gpus or --slurm-partition",
    )
    # reasons that never resolve, whatever the sizes
    assert never_starts(_row("PartitionTimeLimit"), NODES) == (
        "its time limit is above its partition's",
        "--slurm-time",
    )
    assert never_starts(_row("QOSMaxCpuPerJobLimit"), NODES) == (
        "it is over a per-job limit of its QOS (QOSMaxCpuPerJobLimit)",
        "--slurm-cpus",
    )
    assert never_starts(_row("AssocMaxGRESPerJob"), NODES)[1] == "--slurm-gpus"
    assert never_starts(_row("QOSMaxWallDurationPerJobLimit"), NODES)[1] == "--slurm-time"
    assert never_starts(_row("QOSMinMemory"), NODES)[1] == "--slurm-mem-gb"
    assert never_starts(_row("BadConstraints"), NODES)[1] == "--slurm-param constraint"
    # PartitionNodeLimit: with every node down it resolves when they come back; with one up it never does
    down = [Node("vm", 4, 2048.0, 0, "down*")]
    assert never_starts(_row("PartitionNodeLimit"), down) is None
    assert never_starts(_row("PartitionNodeLimit"), NODES)[1] == "--slurm-partition"
    # an empty partition; and no node information at all: nothing concluded from sizes
    assert never_starts(_row("Resources"), []) == ("partition debug has no nodes", "--slurm-partition")
    assert never_starts(_row("Resources", cpus=10**6), None) is None


def test_host_lists_expand_like_slurms():
    assert expand_nodes("gpu[07-09,11],vm") == ["gpu07", "gpu08", "gpu09", "gpu11", "vm"]
    assert expand_nodes("r[1-2]-n[1-2]") == ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]
    assert expand_nodes("a,b") == ["a", "b"] and expand_nodes("") == []
    assert len(expand_nodes("n[0-99999999]")) == 10_000  # bounded


def test_a_node_the_cluster_lacks_never_frees():
    row = _row("ReqNodeNotAvail, UnavailableNodes:gpu[7-8]", nodelist="gpu[7-8]", partition="gpu")
    assert never_starts(row, NODES, known={"vm", "g1"}) == (
        "it asks for nodes the cluster does not have (gpu7, gpu8)",
        "--slurm-param nodelist",
    )
    # nodes the cluster has, only down or reserved now: they come back
    assert never_starts(row, NODES, known={"gpu7", "gpu8"}) is None


def test_waiting_line_counts_by_reason():
    st = {
        "a": RunStatus(RUNNING),
        "b": RunStatus(QUEUED, reason="Resources"),
        "c": RunStatus(QUEUED, reason="Resources"),
        "d": RunStatus(QUEUED, reason="None"),
        "e": RunStatus(FINISHED),
    }
    assert waiting_line(st) == "1 running, 2 pending (Resources), 1 pending"
