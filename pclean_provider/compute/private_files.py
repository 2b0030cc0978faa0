"""Records only this user could have written: a cluster host's files are read only when they are.

A cluster host's address, host and spec files say which scheduler to connect to (and so whose pickles
to unpickle), which process to signal, which SLURM jobs to cancel and how to start a cluster again. A
file another user could have written (or replaced) is therefore never believed: it must be a regular
file (not a symbolic link, which would make it someone else's file under our name), owned by the
effective user, and writable by nobody else. The folders the records live in must not let another user
put files there, unless the sticky bit keeps them from replacing ours (their own files they plant are
refused by owner). Files the host appends to or locks are opened without following a link, so a link
planted under their name cannot make the host write or truncate another file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pclean_provider.compute.errors import ClusterError

# Owner-only, as the host writes its records.
PRIVATE_MODE = 0o600


class UntrustedRecord(ClusterError):
    """A cluster record (or its folder) that another user could have written; the message says what to do."""


def _describe_owner(st: os.stat_result) -> str:
    return f"owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def _trusted_file_problem(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is not this user's ({_describe_owner(st)}; this process runs as uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by other users ({_describe_owner(st)})"
    return None


def read_private_text(path: str | os.PathLike[str]) -> str | None:
    """The text of a record this user wrote; None when there is none; UntrustedRecord when the file is
    a link, not this user's or writable by others."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UntrustedRecord(f"{path} is a symbolic link, not a record a cluster host wrote: another user "
                                  "may have planted it; remove it (and look at who could write that folder)") from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        problem = _trusted_file_problem(os.fstat(fh.fileno()))
        if problem:
            raise UntrustedRecord(
                f"{path} {problem}: a cluster record another user could have written is never believed (it "
                "could point this process at their scheduler, at processes to kill or at jobs to cancel); "
                "remove it, and keep cluster folders private to the user running pclean")
        return fh.read().decode("utf-8", errors="replace")


def folder_problem(path: str | os.PathLike[str]) -> str | None:
    """Why another user could put or replace files in the existing folder ``path`` (None: they cannot).
    Owned by this user or root, and writable by nobody else unless sticky."""
    st = os.stat(path)
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path} belongs to another user ({_describe_owner(st)})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{path} is writable by other users ({_describe_owner(st)}) without the sticky bit"
    return None


def ensure_private_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder (0700) if needed and refuse one in which another user could plant records."""
    folder = Path(path)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(folder, 0o700)
    problem = folder_problem(folder)
    if problem:
        raise UntrustedRecord(f"cluster records cannot be kept safely in {folder}: {problem}; another user could "
                              "plant a record there that points pclean at their scheduler or at processes to "
                              "kill. Use a folder only this user can write (chmod go-w), or another folder")
    return folder


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """A descriptor of this user's file at ``path`` (created 0600), never through a symbolic link."""
    try:
        fd = os.open(os.fspath(path), flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise UntrustedRecord(f"{path} is a symbolic link; a cluster host's files are never opened through "
                                  "one (it could make the host write someone else's file); remove it") from exc
        raise
    problem = _trusted_file_problem(os.fstat(fd))
    if problem:
        os.close(fd)
        raise UntrustedRecord(f"{path} {problem}; remove it, and keep cluster folders private")
    return fd
