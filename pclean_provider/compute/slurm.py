"""Dask workers as SLURM jobs (dask-jobqueue), and the few SLURM commands the project needs.

The scheduler lives in the process that starts the ``SlurmBackend`` (dask-jobqueue keeps it in-process);
each worker is one SLURM job named ``slurm_job_name`` so that anything left behind (a crashed host,
a job still queued when start-up failed) can be found and cancelled by that name.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from distributed import Client

from pclean_provider.compute import tls as cluster_tls
from pclean_provider.compute.backend import ClusterBackend, ClusterHandle
from pclean_provider.compute.dask_work import cancel_with_reason
from pclean_provider.compute.errors import ClusterError, SlurmError
from pclean_provider.compute.worker_setup import export_lines, quiet_dask_config, worker_environment
from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.errors import PcleanInputError

log = logging.getLogger(__name__)

# A worker that loses its scheduler (host killed) ends its SLURM job after this many seconds
# instead of holding an allocation until the wall time.
WORKER_DEATH_TIMEOUT_S = 60
SLURM_CMD_TIMEOUT_S = 30
# Default margin between a worker's retirement and its job's walltime: a quarter of the walltime
# (short test walltimes), at most this. It covers the worker's start-up inside the job (Python,
# CASA import) and handing its work over before SLURM kills the job.
MAX_LIFETIME_MARGIN_S = 600.0
# Replacement workers are not all started at once: each lifetime is drawn within +- this share of
# the walltime (at most MAX_STAGGER_S), so the workers of one cluster do not all retire together.
STAGGER_SHARE = 0.05
MAX_STAGGER_S = 300.0
# How often the process holding a SLURM cluster checks that it has workers.
WATCH_INTERVAL_S = 2.0


def default_job_name(cluster_id: str) -> str:
    return f"pclean-worker-{cluster_id}"


def job_name_for(spec: ClusterSpec, cluster_id: str) -> str:
    return spec.slurm_job_name or default_job_name(cluster_id)


def log_directory(spec: ClusterSpec) -> Path:
    # Resolved now: the jobs start in SLURM's working directory, not necessarily ours.
    return Path(spec.slurm_log_directory).expanduser().resolve()


_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def slurm_mem(text: str) -> str:
    """'20GB' / '20 GiB' / '20G' -> '20G': sbatch --mem wants an integer and a K/M/G/T suffix."""
    match = _MEM.match(text)
    if not match:
        raise ClusterError(f"slurm_job_mem={text!r} is not a memory size; write it like '4GB' or '500MB'")
    number, unit = float(match.group(1)), match.group(2).upper()
    if not number.is_integer():  # 1.5G -> 1536M: SLURM takes integers only
        units = "KMGT"
        if unit in ("", "K"):
            raise ClusterError(f"slurm_job_mem={text!r}: use a whole number of megabytes or more")
        number, unit = number * 1024, units[units.index(unit) - 1]
    return f"{int(round(number))}{unit or 'M'}"


class SlurmSpecError(PcleanInputError):
    """A SLURM field of the cluster spec cannot be used as written."""


_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def walltime_seconds(text: str) -> int:
    """A SLURM --time value in seconds: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _WALLTIME.match(text.strip())
    if not match or text.strip() in ("0", "-1"):
        raise SlurmSpecError(f"slurm_walltime={text!r} is not a SLURM time limit; write it as HH:MM:SS "
                             "(e.g. '04:00:00') or D-HH:MM:SS")
    days, first, second, third = match.groups()
    if days is not None:  # after "D-" the first number is hours
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif third is not None:
        total = int(first) * 3600 + int(second) * 60 + int(third)
    else:  # MM or MM:SS, as sbatch reads them
        total = int(first) * 60 + int(second or 0)
    if total <= 0:
        raise SlurmSpecError(f"slurm_walltime={text!r} is zero; give the worker jobs a time limit")
    return total


def worker_lifetime(spec: ClusterSpec) -> tuple[float, float]:
    """(lifetime, stagger) in seconds of a worker: it retires at lifetime +- stagger after starting,
    always before its job's walltime, and the cluster submits a job to replace it."""
    wall = walltime_seconds(spec.slurm_walltime)
    margin = (spec.slurm_lifetime_margin if spec.slurm_lifetime_margin is not None
              else min(wall / 4, MAX_LIFETIME_MARGIN_S))
    stagger = min(wall * STAGGER_SHARE, MAX_STAGGER_S)
    lifetime = wall - margin - stagger
    # Below a few seconds of useful life a worker would only start and retire.
    if lifetime < 10:
        raise SlurmSpecError(
            f"slurm_walltime={spec.slurm_walltime!r} leaves a worker {lifetime:.0f} s of work after "
            f"slurm_lifetime_margin={margin:g} s and the stagger ({stagger:g} s); lengthen slurm_walltime "
            "or lower slurm_lifetime_margin")
    return lifetime, stagger


def lifetime_args(spec: ClusterSpec) -> list[str]:
    lifetime, stagger = worker_lifetime(spec)
    return ["--lifetime", f"{lifetime:.0f}s", "--lifetime-stagger", f"{stagger:.0f}s"]


def prologue_lines(spec: ClusterSpec, env: dict[str, str] | None = None) -> list[str]:
    """User prologue first (module load / conda activate may reset PATH), then the CASA runtime."""
    lines = list(spec.slurm_job_script_prologue or [])
    if spec.tls_directory:
        # A node that cannot read the certificate would start a worker that can never join: end the
        # job at once with the reason, which the start-up check reports from the job's log.
        folder = shlex.quote(str(Path(spec.tls_directory)))
        lines.append("# pclean: the cluster's TLS certificate must be readable here")
        lines.append(f"if [ ! -r {folder}/{cluster_tls.CERT_NAME} ] || [ ! -r {folder}/{cluster_tls.KEY_NAME} ]; "
                     f"then echo \"pclean: this node cannot read the cluster's TLS certificate in {folder}; "
                     "put tls_directory (or the address file) on a filesystem the compute nodes share, "
                     "or set tls: false\" >&2; exit 1; fi")
    lines.append("# pclean: CASA runtime for this worker (offline measures, one thread)")
    lines.extend(export_lines(worker_environment() if env is None else env))
    return lines


def worker_env(spec: ClusterSpec) -> dict[str, str]:
    """What a worker job exports: the CASA runtime, and with TLS the cluster's Dask security, so
    processes a worker starts (the cube coordinator opening its own client) use the certificate."""
    env = worker_environment()
    if spec.tls_directory:
        env.update(cluster_tls.environment(spec.tls_directory))
    return env


def job_kwargs(spec: ClusterSpec, cluster_id: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments of SLURMCluster/SLURMJob for one worker process per job."""
    logdir = log_directory(spec)
    env = worker_env(spec) if env is None else env
    tls: dict[str, Any] = {}
    if spec.tls_directory:
        # File paths, not certificates in memory: dask-jobqueue passes them to each worker's command
        # line, and the nodes read them from the shared filesystem.
        tls = {"security": cluster_tls.security(spec.tls_directory), "protocol": "tls://"}
    return dict(**tls,
        queue=spec.slurm_queue,
        account=spec.slurm_account,
        walltime=spec.slurm_walltime,
        job_mem=slurm_mem(spec.slurm_job_mem),
        job_cpu=spec.slurm_cores_per_job,
        cores=spec.threads_per_worker,
        processes=1,
        memory=spec.memory_limit,
        job_name=job_name_for(spec, cluster_id),
        job_extra_directives=list(spec.slurm_job_extra_directives or []),
        python=spec.slurm_python or sys.executable,
        local_directory=spec.slurm_local_directory,
        log_directory=str(logdir),
        job_script_prologue=prologue_lines(spec, env),
        death_timeout=WORKER_DEATH_TIMEOUT_S,
        # The nanny keeps glibc's malloc defaults for the worker (see worker_setup.NANNY_ENV_DROPPED).
        # A worker retires before its job's walltime and a new job takes its place (the cluster is
        # always adaptive, see SlurmBackend.start), so a run may outlast any one job.
        worker_extra_args=["--preload-nanny", "pclean_provider.compute.worker_setup", *lifetime_args(spec)],
    )


def job_script(spec: ClusterSpec, cluster_id: str, scheduler_address: str = "tcp://SCHEDULER:8786",
               env: dict[str, str] | None = None) -> str:
    """The batch script one worker job runs, without starting a scheduler (for reviews and tests)."""
    from dask_jobqueue.slurm import SLURMJob

    return SLURMJob(scheduler_address, name="worker", **job_kwargs(spec, cluster_id, env)).job_script()


def require_slurm_commands() -> None:
    missing = [c for c in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(c) is None]
    if missing:
        raise SlurmError(
            f"cluster_type='slurm' needs the SLURM client commands, missing: {', '.join(missing)}; "
            "install slurm-client (or run tests/slurm/start-local-slurm.sh for a one-node SLURM here), "
            "or use cluster_type='local'")


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SLURM_CMD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(cmd)}` did not return within {SLURM_CMD_TIMEOUT_S} s; "
                         "is slurmctld running (`sinfo`)?") from None
    if check and proc.returncode != 0:
        raise SlurmError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def partitions() -> list[str]:
    out = _run(["sinfo", "-h", "-o", "%R"]).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


def check_partition(queue: str) -> None:
    known = partitions()
    if queue not in known:
        raise SlurmError(f"slurm_queue={queue!r} is not a partition of this SLURM "
                         f"(partitions: {', '.join(known) or 'none'}); set slurm_queue to one of them")


def test_only(script: str) -> None:
    """Ask slurmctld whether it would accept the worker job, without submitting it.

    A wrong account, a memory or CPU request no node can meet, a malformed directive: SLURM says
    so now, in its own words, instead of the workers silently never arriving.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="pclean-check-", delete=False) as fh:
        fh.write(script)
    try:
        proc = _run(["sbatch", "--test-only", fh.name], check=False)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise SlurmError("SLURM refuses the worker job: " + (proc.stderr or proc.stdout).strip().replace(
            "sbatch: error: ", "") + "; check slurm_queue, slurm_account, slurm_job_mem, "
            "slurm_cores_per_job and slurm_job_extra_directives")


def list_jobs(job_name: str, ended_too: bool = False) -> list[dict[str, str]]:
    """Jobs of this name still known to slurmctld: id, state, reason (why pending). `ended_too`: also
    the ended ones slurmctld still remembers (for MinJobAge, 300 s by default)."""
    if shutil.which("squeue") is None:
        return []
    proc = _run(["squeue", "-h", "--name", job_name, "-o", "%i|%T|%r", *(["--states=all"] if ended_too else [])],
                check=False)
    jobs = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            jobs.append({"id": parts[0], "state": parts[1], "reason": parts[2]})
    return jobs


def cancel_jobs_by_name(job_name: str, wait_s: float = 20.0) -> list[str]:
    """Cancel every job called ``job_name``; wait until squeue no longer lists them."""
    if shutil.which("scancel") is None:
        return []
    jobs = list_jobs(job_name)
    if not jobs:
        return []
    _run(["scancel", "--name", job_name], check=False)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        # Cancelled jobs linger a moment in CANCELLED/COMPLETING; only live ones count as orphans.
        if not [j for j in list_jobs(job_name) if j["state"] in LIVE_STATES]:
            break
        time.sleep(0.5)
    return [j["id"] for j in jobs]


LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING", "COMPLETING"}


def describe_jobs(job_name: str, spec: ClusterSpec) -> str:
    jobs = list_jobs(job_name)
    if not jobs:
        return (f"no SLURM job named {job_name!r} is in the queue (they ended or were refused; "
                f"job logs: {log_directory(spec)})")
    states = ", ".join(f"{j['id']} {j['state']} ({j['reason']})" for j in jobs)
    return f"SLURM jobs named {job_name!r}: {states}; job logs: {log_directory(spec)}"


def _latest_log_tail(spec: ClusterSpec, job_name: str) -> str:
    logs = sorted(log_directory(spec).glob(f"{job_name}-*.err"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "no log written"
    lines = [line for line in logs[-1].read_text(errors="replace").splitlines() if line.strip()]
    return f"{logs[-1].name}: " + (" | ".join(lines[-3:]) if lines else "empty")


class SlurmBackend(ClusterBackend):
    """A SLURMCluster with the scheduler in this process, scaled (or adaptive) as the spec says."""

    cluster_type: ClassVar[str] = "slurm"

    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(spec)
        # True once squeue listed a worker job: tells "not submitted yet" from "submitted and gone".
        self._jobs_seen = False
        self._own_certificate: Path | None = None  # a certificate this backend made (removed on close)

    def job_name(self, cluster_id: str) -> str | None:
        return job_name_for(self.spec, cluster_id)

    def casa_log_dir(self) -> str | None:
        # SLURM workers' own scratch folders vanish with the job; their CASA logs belong next to
        # the job logs.
        return str(log_directory(self.spec) / "casa")

    def start(self, cluster_id: str) -> ClusterHandle:
        require_slurm_commands()
        if self.spec.slurm_queue:
            check_partition(self.spec.slurm_queue)
        self._with_certificate(cluster_id)
        spec = self.spec
        import dask
        from dask_jobqueue import SLURMCluster

        try:
            kwargs = job_kwargs(spec, cluster_id)
            # The scheduler runs in this process: its housekeeping as a local cluster's (the jobs get
            # theirs from worker_environment).
            with dask.config.set(quiet_dask_config()):
                cluster = SLURMCluster(
                    name=f"pclean-{cluster_id}",
                    # A random dashboard port (several clusters may share the submit host), on loopback
                    # only: the dashboard has no authentication, and it shows (and lets anyone who reaches
                    # it inspect) every task of the cluster. Reach it through an SSH tunnel.
                    scheduler_options={"dashboard_address": "127.0.0.1:0", **self._scheduler_bind(kwargs)},
                    **kwargs,
                )
        except BaseException:
            if self._own_certificate is not None:
                shutil.rmtree(self._own_certificate, ignore_errors=True)
            raise
        handle = ClusterHandle(spec=spec, client=None, cluster=cluster, cluster_id=cluster_id,  # type: ignore[arg-type]
                               job_name=kwargs["job_name"], backend=self)
        try:
            test_only(cluster.job_script())
            handle.client = Client(cluster, set_as_default=False)
            # Adaptive even for a fixed size (minimum = maximum): a plain scale() never looks again,
            # while the adaptive loop submits a new job for every worker that retired at its lifetime
            # or was killed (after distributed's lost-worker-timeout).
            if spec.adaptive:
                cluster.adapt(minimum_jobs=spec.adaptive_minimum,
                              maximum_jobs=spec.adaptive_maximum or spec.resolved_nworkers())
            else:
                cluster.adapt(minimum_jobs=spec.resolved_nworkers(), maximum_jobs=spec.resolved_nworkers())
            if spec.slurm_no_workers_timeout:
                handle.watch = NoWorkersWatch(handle, spec.slurm_no_workers_timeout, self.spec)
                handle.watch.start()
        except BaseException:
            handle.close()
            raise
        return handle

    def _with_certificate(self, cluster_id: str) -> None:
        """TLS unless the spec says ``tls: false``: the scheduler listens on an address other nodes
        reach, where anyone could otherwise submit code to the workers. A cluster host brings its
        certificate (beside its address file); a cluster of one run gets its own, made here in the
        job log folder (the nodes must see that one anyway) and removed when the cluster closes."""
        if self.spec.tls is False or self.spec.tls_directory:
            return
        folder = log_directory(self.spec) / f"tls-{cluster_id}"
        cluster_tls.create_certificates(folder)
        self._own_certificate = folder
        self.spec = self.spec.model_copy(update={"tls": True, "tls_directory": str(folder)})

    def _scheduler_bind(self, kwargs: dict[str, Any]) -> dict[str, str]:
        # Workers on other nodes reach the scheduler at this machine's outward address (or on the
        # interface the site configured for dask-jobqueue): bind that one, not every interface.
        import dask

        if self.spec.scheduler_interface or not (kwargs.get("interface") or dask.config.get(
                "jobqueue.slurm.interface", None)):
            from distributed.utils import get_ip

            return self.scheduler_bind(get_ip())
        return {}

    def expected_workers(self) -> int:
        return self.spec.adaptive_minimum if self.spec.adaptive else self.spec.resolved_nworkers()

    def check_start(self, handle: ClusterHandle, workers_seen: int) -> None:
        """Fail at once when every worker job has already ended, instead of at the timeout."""
        if not handle.job_name:
            return
        jobs = list_jobs(handle.job_name, ended_too=True)
        if [j for j in jobs if j["state"] in LIVE_STATES]:
            self._jobs_seen = True
            return
        # A job that fails within a second (a wrong python) may end before the first look: slurmctld
        # still lists it, ended. Only this cluster's own jobs count (an earlier cluster may have used
        # the same name).
        ours = {str(job.job_id) for job in getattr(handle.cluster, "workers", {}).values()
                if getattr(job, "job_id", None)}
        if any(j["id"] in ours for j in jobs):
            self._jobs_seen = True
        if self._jobs_seen and workers_seen == 0:
            raise ClusterError(
                f"the SLURM worker jobs named {handle.job_name!r} ended before any Dask worker joined; "
                f"their output is in {log_directory(self.spec)} ({_latest_log_tail(self.spec, handle.job_name)})")

    def no_workers_hint(self, handle: ClusterHandle) -> str:
        jobs = describe_jobs(handle.job_name, self.spec) + "; " if handle.job_name else ""
        return (jobs + "raise worker_start_timeout if the queue is just busy, or check slurm_queue, "
                "slurm_job_mem and slurm_cores_per_job against `sinfo`")

    def close(self, handle: ClusterHandle) -> None:
        if handle.watch is not None:
            handle.watch.stop()
        super().close(handle)
        if handle.job_name:
            # dask-jobqueue cancels the jobs it knows by id; jobs submitted while it was failing
            # (or still queued) are only reachable by name.
            cancel_jobs_by_name(handle.job_name)
        if self._own_certificate is not None:
            shutil.rmtree(self._own_certificate, ignore_errors=True)


_WAITING_STATES = ("no-worker", "queued", "processing", "waiting")


def _waiting_work(dask_scheduler: Any) -> tuple[int, int]:
    """On the scheduler (in its event loop): (workers, tasks still to run)."""
    waiting = sum(1 for ts in dask_scheduler.tasks.values() if ts.state in _WAITING_STATES)
    return len(dask_scheduler.workers), waiting


def _fail_work(dask_scheduler: Any, client: str, message: str) -> int:
    # The keys are collected here, not sent over: a tuple key would come back as a list.
    keys = [key for key, ts in dask_scheduler.tasks.items() if ts.state in _WAITING_STATES]
    cancel_with_reason(dask_scheduler, keys, client, message)
    return len(keys)


class NoWorkersWatch:
    """Fails the work of a SLURM cluster that has had no worker for ``timeout`` seconds.

    Without it a run whose jobs stay pending (a full queue, a reservation) or are never replaced
    waits for ever. The work is cancelled on the scheduler with a message that gives each job's
    state and SLURM's reason, so whoever waits on it (a ``pclean`` run, an Airflow task) fails with
    that reason. Idle time does not count: an adaptive cluster with nothing to do has no workers
    on purpose.
    """

    def __init__(self, handle: ClusterHandle, timeout: float, spec: ClusterSpec) -> None:
        import threading

        self.handle, self.timeout, self.spec = handle, timeout, spec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pclean-no-workers-watch", daemon=True)
        self.failures: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        since: float | None = None
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                since = self._check(since)
            except Exception as exc:  # the scheduler is closing; the next check (or stop) decides
                log.debug("no-workers watch: %s", exc)

    def _check(self, since: float | None) -> float | None:
        client = self.handle.client
        workers, waiting = client.run_on_scheduler(_waiting_work)
        if workers or not waiting:
            return None
        now = time.monotonic()
        if since is None:
            return now
        if now - since < self.timeout:
            return since
        message = (f"the SLURM cluster has had no Dask worker for {self.timeout:g} s "
                   f"(slurm_no_workers_timeout) while {waiting} task(s) waited; "
                   f"{describe_jobs(self.handle.job_name or '', self.spec)}. Pending jobs wait for what "
                   "SLURM's reason names (Resources, Priority, a reservation, a limit); free or change "
                   "slurm_queue, slurm_job_mem or slurm_walltime, or raise slurm_no_workers_timeout")
        log.error("%s", message)
        self.failures.append(message)
        client.run_on_scheduler(_fail_work, client=client.id, message=message)
        return None
