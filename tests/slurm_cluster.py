"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd on 127.0.0.1.

Everything lives in one temporary folder: slurm.conf, state, spool, logs, pid
files and munge's socket, so that nothing on the machine is touched and the
daemons are stopped by their pid files, never by process name.

Accounting: SLURM without accounting has no working ``sacct``, and submitit
then sees every job as UNKNOWN. Instead of slurmdbd and a MariaDB server (two
more daemons and a database on a 2-core test machine), the cluster puts a small
``sacct`` stand-in first on PATH: it answers submitit's one query (JobID, State,
NodeList of some jobs) from ``squeue -t all``, which reports the controller's own
job states; ``MinJobAge`` keeps finished jobs in the controller for a day so
they stay visible. The states are SLURM's, not invented.

Needs root (slurmd runs jobs as their user; munged must run as the munge user)
and Debian's slurm-wlm and munge (``apt-get install -y slurm-wlm munge``).
:func:`unavailable_reason` says why a cluster cannot start here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localhttp import closed_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "srun", "mungekey")
#: CPUs the node announces: more than the machine has, so that short test jobs overlap their start-up.
NODE_CPUS = 4

SACCT_STAND_IN = """#!{python}
# Test-only sacct: answers `sacct -o JobID,State,NodeList --parsable2 -j ID ...` from squeue -t all.
import subprocess, sys

args = sys.argv[1:]
ids = [args[i + 1] for i, a in enumerate(args) if a == "-j" and i + 1 < len(args)]
print("JobID|State|NodeList")
for jid in ids:
    r = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%N", "-j", jid], capture_output=True, text=True
    )
    if r.returncode == 0:
        sys.stdout.write(r.stdout)
"""


def unavailable_reason() -> str | None:
    """Why no test cluster can start here (None when it can)."""
    if not sys.platform.startswith("linux"):
        return "the SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmd, and munged as the munge user)"
    missing = [p for p in DAEMONS + CLIENTS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        return f"SLURM or munge not installed (missing {', '.join(missing)}; apt-get install -y slurm-wlm munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (apt-get install -y munge)"
    return None


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` is what clients need (SLURM_CONF, PATH)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="redrep-slurm-"))
        self.root.chmod(0o755)  # munged (the munge user) must reach its own folder below
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.bin = self.root / "bin"
        self.env = dict(os.environ)
        self._procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------ set-up
    def _munge(self) -> None:
        mu = pwd.getpwnam("munge")
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o711)  # munged insists that every client can reach its socket
        os.chown(self.munge_dir, mu.pw_uid, mu.pw_gid)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True)
            os.chown(key, mu.pw_uid, mu.pw_gid)
            key.chmod(0o400)
        pid = self.munge_dir / "munged.pid"
        self._procs["munged"] = subprocess.Popen(
            [
                _which("munged"),
                "--foreground",
                f"--socket={self.socket}",
                f"--key-file={key}",
                f"--log-file={self.munge_dir / 'munged.log'}",
                f"--pid-file={pid}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ],
            user="munge",
            group="munge",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self._wait_for(lambda: self.socket.exists(), "munged", self.munge_dir / "munged.log")

    def _write_conf(self) -> None:
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        mem_mb = 2048
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=redreptest",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    f"SlurmctldPort={closed_port()}",
                    f"SlurmdPort={closed_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire is also how long a requeued job waits before it may start again (default 120 s)
                    f"AuthInfo=socket={self.socket},cred_expire=10",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    # no cgroups in a test container
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    # CR_Core_Memory without a default memory per CPU would run one job at a time
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SchedulerType=sched/backfill",
                    # a round trip in about 1 s instead of 3; a requeued job starts within seconds of its begin
                    # time (the scheduler passes every 2 s instead of every 30-60 s)
                    "SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2",
                    "MinJobAge=86400",  # finished jobs stay visible to squeue -t all (the sacct stand-in)
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",  # trust NodeName's CPUs over the hardware
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    "KillWait=5",
                    f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={mem_mb} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _write_sacct(self) -> None:
        self.bin.mkdir(exist_ok=True)
        f = self.bin / "sacct"
        f.write_text(SACCT_STAND_IN.format(python=sys.executable))
        f.chmod(0o755)

    def _wait_for(self, ready, what: str, log: Path, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if ready():
                return
            p = self._procs.get(what)
            if p is not None and p.poll() is not None:
                break
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"{what} did not start within {timeout:.0f} s; its log ends:\n{tail}")

    def start(self) -> SlurmCluster:
        self._munge()
        self._write_conf()
        self._write_sacct()
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf)
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        for daemon in ("slurmctld", "slurmd"):
            self._procs[daemon] = subprocess.Popen(
                [_which(daemon), "-D"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_for(self._idle, "slurmd", self.root / "log" / "slurmd.log")
        return self

    def _idle(self) -> bool:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")

    # ------------------------------------------------------------ use
    def run(self, *args: str, check: bool = True) -> str:
        """Run a SLURM client (squeue, scancel, ...) against this cluster; its stdout."""
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def wait_state(self, job_id: str, state: str, timeout: float = 60.0) -> None:
        """Until the job is in ``state`` (e.g. RUNNING)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.run("squeue", "-h", "-r", "-t", "all", "-o", "%T", "-j", job_id, check=False).strip() == state:
                return
            time.sleep(0.2)
        raise RuntimeError(f"job {job_id} not {state} after {timeout:.0f} s")

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until no job is pending or running (between tests)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.run("squeue", "-h", "-t", "pending,running,completing", "-o", "%i").strip():
                return
            time.sleep(0.5)
        raise RuntimeError("the test cluster still has jobs after 60 s")

    # ------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by their pid files."""
        if self._procs.get("slurmctld") is not None and self._procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True)
        pid_files = {
            "slurmd": self.root / "slurmd.pid",
            "slurmctld": self.root / "slurmctld.pid",
            "munged": self.munge_dir / "munged.pid",
        }
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            pid = None
            try:
                pid = int(pid_files[name].read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = proc.pid if proc is not None else None
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)
