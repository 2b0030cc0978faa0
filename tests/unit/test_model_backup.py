"""A session's model backup (the model before its minor cycle, for a rebuild after a lost worker)
is whole or absent, never a partial copy taken for the model."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest

from pclean_provider.casa import cube_session
from pclean_provider.casa.cube_session import MODEL_BACKUP, CubeSession


class _Deconvolver:
    """Stands in for casatools' deconvolver: its minor cycle changes the model on disk."""

    def __init__(self, model: str) -> None:
        self.model = model

    def executeminorcycle(self, iterbotrecord):
        with open(os.path.join(self.model, "table.f0"), "w") as fh:
            fh.write("after")
        return {}


def _session(tmp_path) -> CubeSession:
    session = CubeSession.__new__(CubeSession)  # no imager: only the backup logic is exercised
    session.spec = SimpleNamespace(grid_imagename=str(tmp_path / "img"), has_margin=False, usemask="user")
    model = tmp_path / "img.model"
    model.mkdir()
    for name, text in (("table.dat", "desc"), ("table.f0", "before")):
        (model / name).write_text(text)
    session.sd = _Deconvolver(str(model))
    return session


def _read(folder) -> dict[str, str]:
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))}


def test_restore_gives_the_model_from_before_the_interrupted_minor_cycle(tmp_path):
    session = _session(tmp_path)
    session.minor_cycle(cube_session._dump({}), keep_backup=True)
    assert _read(tmp_path / "img.model")["table.f0"] == "after"
    session.restore_model_backup()
    assert _read(tmp_path / "img.model") == {"table.dat": "desc", "table.f0": "before"}


def test_a_copy_cut_short_leaves_no_backup_and_the_model_untouched(tmp_path, monkeypatch):
    session = _session(tmp_path)
    stale = tmp_path / ("img" + MODEL_BACKUP)
    stale.mkdir()
    (stale / "table.f0").write_text("two cycles ago")
    real_copytree = shutil.copytree

    def killed_after_one_file(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "table.f0":
            raise SystemExit("worker killed")
        return shutil.copy2(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", lambda src, dst: real_copytree(src, dst, copy_function=killed_after_one_file))
    with pytest.raises(SystemExit):
        session.minor_cycle(cube_session._dump({}), keep_backup=True)
    monkeypatch.undo()
    # Neither the stale backup nor a partial one under the backup's name: the rebuilt session keeps
    # the model on disk, which the interrupted cycle never reached.
    assert not stale.exists()
    session.restore_model_backup()
    assert _read(tmp_path / "img.model") == {"table.dat": "desc", "table.f0": "before"}
