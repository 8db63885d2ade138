"""A single-node SLURM on 127.0.0.1 for tests: munged + slurmctld + slurmd, started and stopped by PID.

Needs Debian's slurm-wlm and munge packages and root (CI installs them; see .ci/run).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path


def available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged"))


CONF = """ClusterName=chaintest
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort={port}
SlurmdPort={port2}
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmNode:
    def __init__(self, folder: Path, port: int = 16817):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.port = port
        self.procs: list[subprocess.Popen] = []
        self.munge_pid: int | None = None

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create", "--keyfile", str(key)], check=True)
        pidfile = Path("/run/munge/munged.pid")
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 0)
                return  # already running (not ours: left alone at stop)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        for _ in range(50):
            if pidfile.exists():
                self.munge_pid = int(pidfile.read_text())
                return
            time.sleep(0.1)

    def start(self, timeout: float = 60) -> SlurmNode:
        for d in ("state", "spool"):
            (self.folder / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONF.format(d=self.folder, port=self.port, port2=self.port + 1, cpus=os.cpu_count() or 2))
        os.environ["SLURM_CONF"] = str(self.conf)
        self._start_munge()
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()
            if state.startswith("idle"):
                return self
            if state.startswith(("down", "drain")):
                subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], env=env, capture_output=True)
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM node did not become idle; logs in {self.folder}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        if self.munge_pid:
            try:
                os.kill(self.munge_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.munge_pid = None
