"""Helpers shared by the cluster-host tests."""

from __future__ import annotations

import os

import psutil


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (a cluster host starts its own session; its workers join it)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return out
