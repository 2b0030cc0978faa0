"""The CASA runtime: offline import, site config, environment for children, log placement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.casa

# Any download attempt through urllib (casaconfig's auto-update) fails at once against these.
_OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}


def _child_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: nothing CASA-related inherited from the test session."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CASASITECONFIG", "OMP_NUM_THREADS", "PCLEAN_CASA_HOME", "PCLEAN_CASA_LOGFILE",
                        "PCLEAN_CASA_LOG_DIR", "PCLEAN_SITE_CASA_CONFIG", "PCLEAN_MEASURES_PATH")}
    env.update(_OFFLINE)
    env["PCLEAN_CASA_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _run(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _casa_logs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("casa-") and p.name.endswith(".log"))


def test_site_config_and_environment(casa_runtime):
    info = casa_runtime
    site = Path(info.site_config)
    assert site.is_absolute() and site.is_file()
    assert os.environ["CASASITECONFIG"] == str(site)
    assert os.path.isabs(os.environ["CASASITECONFIG"])
    assert os.environ["OMP_NUM_THREADS"] == "1"
    text = site.read_text()
    assert "measures_auto_update = False" in text
    assert "data_auto_update = False" in text
    assert repr(info.measures_path) in text
    assert Path(info.measures_path, "geodetic", "IERSeop2000").exists()
    assert Path(info.log_path).is_file()
    assert info.casatools_version.startswith("6.")


def test_second_call_is_cheap_and_identical(casa_runtime):
    from pclean_provider.casa.runtime import ensure_casa_runtime

    # Other tests may have switched the log since (sub-cube logs do); the same request must give
    # the same set-up back, log included.
    log = Path(casa_runtime.log_path)
    again = ensure_casa_runtime(log_dir=log.parent, log_name=log.name)
    assert again == casa_runtime
    assert again.model_dump_json() == casa_runtime.model_dump_json()


def test_site_config_is_rewritten_only_when_different(tmp_path, monkeypatch):
    from pclean_provider.casa import runtime

    monkeypatch.setenv("PCLEAN_CASA_HOME", str(tmp_path / "home"))
    first = runtime.write_site_config()
    stamp = first.stat().st_mtime_ns
    inode = first.stat().st_ino
    assert runtime.write_site_config() == first
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == (stamp, inode)
    first.write_text("measurespath = None\n")
    runtime.write_site_config()
    assert "measures_auto_update = False" in first.read_text()
    # Nothing half-written is left beside it.
    assert [p.name for p in first.parent.iterdir() if ".tmp-" in p.name] == []


def test_casa_env_does_not_import_casatools(tmp_path):
    proc = _run(
        """
        import json, sys
        from pclean_provider.casa.runtime import casa_env
        env = casa_env()
        print(json.dumps({"env": env, "loaded": "casatools" in sys.modules}))
        """,
        tmp_path / "cwd",
        _child_env(tmp_path / "home"),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] is False
    assert out["env"]["CASASITECONFIG"] == str(tmp_path / "home" / "casasiteconfig.py")
    assert out["env"]["OMP_NUM_THREADS"] == "1"
    assert Path(out["env"]["CASASITECONFIG"]).is_file()


def test_fresh_process_imports_offline_and_keeps_cwd_clean(tmp_path):
    cwd = tmp_path / "cwd"
    logs = tmp_path / "logs"
    proc = _run(
        f"""
        import json, os
        from pclean_provider.casa.runtime import ensure_casa_runtime
        info = ensure_casa_runtime(log_dir={str(logs)!r}, log_name="child.log")
        import casatools
        try:
            casatools.table().open("/no/such/table/before/casatasks")
        except Exception:
            pass
        import casatasks
        casatasks.casalog.post("child-marker")
        print(json.dumps({{"info": info.model_dump(), "omp": os.environ.get("OMP_NUM_THREADS"),
                           "site": os.environ.get("CASASITECONFIG"),
                           "threads": casatools.logger.ompGetNumThreads()}}))
        """,
        cwd,
        _child_env(tmp_path / "home"),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["site"] == str(tmp_path / "home" / "casasiteconfig.py")
    assert out["omp"] == "1"
    assert out["info"]["log_path"] == str(logs / "child.log")
    assert list(cwd.iterdir()) == []
    text = (logs / "child.log").read_text()
    assert "child-marker" in text
    # C++ tool messages reach the file too, also before casatasks is imported.
    assert "/no/such/table/before/casatasks" in text
    assert out["threads"] == 1


def test_child_inheriting_casa_env_imports_casatools_directly(tmp_path, monkeypatch):
    """A worker started with casa_env() imports casatools offline even before calling the runtime."""
    from pclean_provider.casa.runtime import casa_env

    home = tmp_path / "home"
    env = _child_env(home)
    monkeypatch.setenv("PCLEAN_CASA_HOME", str(home))
    env.update(casa_env())
    cwd = tmp_path / "cwd"
    proc = _run("import casatools; print(casatools.version_string())", cwd, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("6.")
    assert list(cwd.iterdir()) == []
    # Its log went to the runtime home, named after the process.
    assert len(_casa_logs(home / "logs")) == 1


def test_set_casa_log_switches_files_and_survives_late_casatasks_import(tmp_path):
    """A worker's log switch does not load casatasks (135 MB of RSS a continuum part never needs);
    imported later through the runtime, casatasks logs where the switch said, and so do the C++
    tools, through a third switch too."""
    a, b, c = tmp_path / "a" / "first.log", tmp_path / "b" / "second.log", tmp_path / "c" / "third.log"
    cwd = tmp_path / "cwd"
    proc = _run(
        f"""
        import sys
        from pclean_provider.casa.runtime import ensure_casa_runtime, import_casatasks, set_casa_log
        ensure_casa_runtime(log_dir={str(a.parent)!r}, log_name={a.name!r})
        import casatools
        set_casa_log({str(b)!r})
        assert "casatasks" not in sys.modules
        try:
            casatools.table().open("/no/such/table/before/casatasks")
        except Exception:
            pass
        casatasks = import_casatasks()
        casatasks.casalog.post("marker-second")
        try:
            casatools.table().open("/no/such/table/anywhere")
        except Exception:
            pass
        set_casa_log({str(c)!r})
        casatasks.casalog.post("marker-third")
        try:
            casatools.table().open("/no/such/table/third")
        except Exception:
            pass
        """,
        cwd,
        _child_env(tmp_path / "home"),
    )
    assert proc.returncode == 0, proc.stderr
    second = b.read_text()
    assert "/no/such/table/before/casatasks" in second
    assert "marker-second" in second
    assert "/no/such/table/anywhere" in second
    assert "marker-second" not in a.read_text()
    third = c.read_text()
    assert "marker-third" in third and "/no/such/table/third" in third
    assert "marker-third" not in second
    assert list(cwd.iterdir()) == []


def test_check_command(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pclean_provider.casa.runtime", "--check"],
        cwd=cwd, env=_child_env(tmp_path / "home"), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "casatools 6." in proc.stdout
    assert str(tmp_path / "home" / "casasiteconfig.py") in proc.stdout
    assert list(cwd.iterdir()) == []


def test_log_name_with_folder_is_rejected(casa_runtime):
    from pclean_provider.casa.runtime import ensure_casa_runtime

    with pytest.raises(ValueError, match="log_name"):
        ensure_casa_runtime(log_name="sub/dir.log")


def test_unwritable_home_names_the_fix(tmp_path, monkeypatch):
    from pclean_provider.casa import runtime

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PCLEAN_CASA_HOME", str(blocker / "home"))
    with pytest.raises(runtime.CasaRuntimeError, match="PCLEAN_CASA_HOME"):
        runtime.write_site_config()
