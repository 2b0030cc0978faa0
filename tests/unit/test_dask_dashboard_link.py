"""The "Dask dashboard" link is shown only while the cluster that stored it lives: a real Dask
scheduler's dashboard answers while it runs, a later scheduler on the same address is not the
task's, and a stopped one hides the link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pclean_provider.links.dask import dashboard_alive


def test_the_link_lives_and_dies_with_its_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        url = cluster.dashboard_link
        stored = datetime.now(UTC)  # the task stores the URL once its cluster is up
        assert dashboard_alive(url, stored, cache_s=0)
        assert dashboard_alive(url, cache_s=0)  # in the task's own process the time is not known
        # Stored long before this scheduler started: the task's cluster was another one that has
        # since gone, and this one took its port.
        assert not dashboard_alive(url, stored - timedelta(hours=1), cache_s=0)
    assert not dashboard_alive(url, stored, cache_s=0)


def test_no_dashboard_no_link(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not dashboard_alive(f"http://127.0.0.1:{port}/status", cache_s=0)
    assert not dashboard_alive("file:///etc/passwd", cache_s=0)
    assert not dashboard_alive("not a url", cache_s=0)
