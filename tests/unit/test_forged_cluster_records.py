"""Forged cluster records are never believed (issue 30, item 3): a record another user wrote (or could
have replaced) names a real process of ours, a rogue scheduler, someone else's SLURM jobs; a link is
planted under a record's name; a run's conf points its work folder where others can write. Real files,
a real second owner (the suite runs as root and hands files to 'nobody'), real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pclean_provider.compute import host
from pclean_provider.compute.private_files import UntrustedRecord
from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.pipeline.conf_policy import RunConfRefused, check_run_conf
from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from tests.conftest import require

NOBODY = 65534


@pytest.fixture
def as_root():
    """Handing a file to another user needs root: skipped on a developer's machine, a failure in CI."""
    require("root", os.geteuid() == 0, "run the suite as root, as CI does")


@pytest.fixture
def bystander():
    """An unrelated process of this user, in a session of its own (as a cluster host is)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up"
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def record_for(proc: subprocess.Popen, **extra) -> dict:
    """What a running cluster host writes, naming ``proc`` (its pid and start time are public in /proc)."""
    return {"state": "running", "scheduler_address": "tcp://127.0.0.1:9", "host_pid": proc.pid,
            "host_started": psutil.Process(proc.pid).create_time(), "cluster_type": "local", "cluster_id": "c0ffee01",
            "log_file": "x.log", "started_at": "2026-01-01T00:00:00+00:00", **extra}


def plant(path: Path, data: dict, *, owner: int | None = None, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(data))
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


@pytest.fixture
def cluster_dir(tmp_path):
    folder = tmp_path / "run" / "cluster"
    folder.mkdir(parents=True, mode=0o700)
    return folder


def test_a_record_another_user_planted_kills_nothing(as_root, cluster_dir, bystander):
    afile = plant(cluster_dir / "scheduler.address", record_for(bystander), owner=NOBODY)
    with pytest.raises(UntrustedRecord, match="is not this user's.*uid 65534"):
        host.stop_host(afile)
    assert bystander.poll() is None  # still running
    with pytest.raises(UntrustedRecord):
        host.read_address_file(afile)  # and no client is ever pointed at its scheduler


def test_a_record_others_could_rewrite_is_refused(cluster_dir, bystander):
    afile = plant(cluster_dir / "scheduler.address", record_for(bystander), mode=0o666)
    with pytest.raises(UntrustedRecord, match="writable by other users"):
        host.host_status(afile)
    # The host file stands in for the address file while a host starts: judged the same way.
    hfile = plant(cluster_dir / "other.address.host.json", record_for(bystander), mode=0o622)
    with pytest.raises(UntrustedRecord):
        host.stop_host(cluster_dir / "other.address")
    assert hfile.exists() and bystander.poll() is None


def test_a_link_planted_as_a_record_or_the_lock_is_never_followed(cluster_dir, tmp_path, bystander):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (cluster_dir / "a.address").symlink_to(plant(tmp_path / "real.json", record_for(bystander)))
    with pytest.raises(UntrustedRecord, match="symbolic link"):
        host.host_status(cluster_dir / "a.address")
    (cluster_dir / "b.address.lock").symlink_to(victim)
    with pytest.raises(UntrustedRecord, match="symbolic link"):
        host.stop_host(cluster_dir / "b.address")
    assert victim.read_text() == "keep me" and bystander.poll() is None


def test_a_host_on_another_machine_is_not_signalled_from_here(cluster_dir, bystander):
    # A teardown on another Airflow worker: the pid in the record is some other process here.
    afile = plant(cluster_dir / "scheduler.address", record_for(bystander, host_name="elsewhere.example.org"))
    before = host.stop_host(afile)
    assert before.state == "crashed" and bystander.poll() is None and not afile.exists()


def test_only_jobs_named_for_the_records_own_cluster_are_cancelled(cluster_dir, bystander, monkeypatch):
    from pclean_provider.compute import slurm

    cancelled: list[str] = []
    monkeypatch.setattr(slurm, "cancel_jobs_by_name", lambda name, **_: cancelled.append(name) or [])
    monkeypatch.setattr(slurm, "list_jobs", lambda name: [])
    gone = record_for(bystander, host_pid=2**22 + 7, host_started=0.0)  # the host itself is gone
    host.stop_host(plant(cluster_dir / "a.address", {**gone, "slurm_job_name": "nightly-reduction"}))
    host.stop_host(plant(cluster_dir / "b.address", {**gone, "slurm_job_name": "pclean-worker-c0ffee01"}))
    plant(cluster_dir / "c.address.spec.json", json.loads(ClusterSpec(
        cluster_type="slurm", slurm_job_name="site-night").model_dump_json()))
    host.stop_host(plant(cluster_dir / "c.address", {**gone, "slurm_job_name": "site-night"}))
    assert cancelled == ["pclean-worker-c0ffee01", "site-night"]


def test_a_record_folder_others_can_write_is_refused_before_any_host_starts(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UntrustedRecord, match="writable by other users"):
        host.start_host(ClusterSpec(cluster_type="local", nworkers=1), shared / "scheduler.address")
    assert sorted(p.name for p in shared.iterdir()) == []
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # /tmp's kind: others cannot replace what is ours
    assert host.host_status(sticky / "scheduler.address").state == "stopped"


def test_a_run_conf_cannot_put_the_run_where_others_can_write(as_root, tmp_path):
    root = tmp_path.resolve()
    t = PipelineTemplate.model_validate({"dag_id": "p", "kind": "cube", "title": "P"})
    (root / "work" / "open").mkdir(parents=True)
    os.chmod(root / "work" / "open", 0o777)
    (root / "work" / "theirs").mkdir()
    os.chown(root / "work" / "theirs", NOBODY, -1)
    for folder in ("work/open/night", "work/theirs"):
        with pytest.raises(RunConfRefused) as info:
            check_run_conf(t, {"work_dir": folder}, root)
        assert info.value.parameter == "work_dir" and "other users could plant" in str(info.value)
    assert check_run_conf(t, {"work_dir": "work/mine/night"}, root).work_dir == root / "work" / "mine" / "night"


def test_records_name_the_machine_of_their_host():
    info = host.HostInfo.model_validate(
        {"state": "starting", "host_pid": 1, "host_started": 0.0, "cluster_type": "local", "cluster_id": "x",
         "log_file": "l", "started_at": "t", "host_name": socket.gethostname()})
    assert host._on_this_machine(info)


def test_a_certificate_folder_another_user_could_fill_is_refused(as_root, cluster_dir, tmp_path, bystander):
    theirs = tmp_path / "their-tls"
    theirs.mkdir()
    os.chown(theirs, NOBODY, -1)  # their certificate would let their scheduler pass for ours
    afile = plant(cluster_dir / "scheduler.address", record_for(bystander, tls_directory=str(theirs)))
    with pytest.raises(UntrustedRecord, match="certificate folder"):
        host.tls_directory_for(afile)
