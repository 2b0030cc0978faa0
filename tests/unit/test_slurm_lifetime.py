"""SLURM time limits read as sbatch reads them, and the worker lifetime derived from them."""

from __future__ import annotations

import pytest

from pclean_provider.compute import slurm
from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.errors import PcleanInputError


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 1800), ("5:30", 330), ("01:00:00", 3600), ("24:00:00", 86400), ("2-0", 172800),
    ("1-12", 129600), ("1-02:30", 95400), ("0-00:01:00", 60),
])
def test_walltime_formats(text, seconds):
    assert slurm.walltime_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "00:00:00", "0", "-1", "1h"])
def test_bad_walltime_names_the_field(text):
    with pytest.raises(PcleanInputError, match="slurm_walltime"):
        slurm.walltime_seconds(text)


def test_lifetime_ends_before_the_walltime_with_the_stagger():
    day = ClusterSpec(cluster_type="slurm", slurm_walltime="24:00:00")
    lifetime, stagger = slurm.worker_lifetime(day)
    # The default margin is capped at 10 minutes and the stagger at 5: the latest retirement
    # (lifetime + stagger) is 10 minutes before the walltime.
    assert (lifetime, stagger) == (86400 - 600 - 300, 300)
    minute = ClusterSpec(cluster_type="slurm", slurm_walltime="00:01:00")
    assert slurm.worker_lifetime(minute) == (60 - 15 - 3, 3)
    own = ClusterSpec(cluster_type="slurm", slurm_walltime="01:00:00", slurm_lifetime_margin=120)
    assert slurm.worker_lifetime(own) == (3600 - 120 - 180, 180)
    assert slurm.lifetime_args(own) == ["--lifetime", "3300s", "--lifetime-stagger", "180s"]


def test_a_margin_that_leaves_no_work_is_refused():
    spec = ClusterSpec(cluster_type="slurm", slurm_walltime="00:05:00", slurm_lifetime_margin=295)
    with pytest.raises(PcleanInputError, match="slurm_lifetime_margin=295"):
        slurm.worker_lifetime(spec)


def test_the_worker_command_carries_the_lifetime(tmp_path):
    spec = ClusterSpec(cluster_type="slurm", slurm_walltime="02:00:00", slurm_log_directory=str(tmp_path))
    script = slurm.job_script(spec, "abc", env={})
    assert "--lifetime 6300s --lifetime-stagger 300s" in script
