"""The one way this project writes files: readers see the old version or the new one, never half.

Everything goes to a temporary name in the destination's own folder (the same filesystem, so the
rename is atomic), is flushed to disk, and is renamed over the final name. Folders (CASA images,
MeasurementSets) are swapped in by rename too, the old one removed only after the new one is in
place; a set of them made in one staging folder goes in as one set (`put_set_in_place`).
Standard library only, so every layer (CASA runtime, engine, pipeline, Airflow hooks) can use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def umask_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0666 less the process's umask.

    Read from /proc where it can be (setting the umask to learn it would race other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return 0o666 & ~current


# The one staging name: hidden (a reader listing the folder skips it), beside the target (same
# filesystem, so the final rename is atomic), marked ".tmp-" (leftover checks and cleanups look
# for it), with an optional owner (host-pid of a worker whose dead stagings a later run removes)
# and a random end (two writers of one target never share a name).
STAGING_MARK = ".tmp-"


def staging_prefix(path: str | os.PathLike, owner: str = "") -> str:
    """Every staging name for `path` (of `owner`, if given) starts with this: ``<folder>/.<name>.tmp-[<owner>-]``."""
    parent, name = os.path.split(os.fspath(path))
    return os.path.join(parent, f".{name}{STAGING_MARK}" + (f"{owner}-" if owner else ""))


def staging_name(path: str | os.PathLike, owner: str = "") -> str:
    """A fresh staging name beside `path`; nothing is created there."""
    return staging_prefix(path, owner) + uuid.uuid4().hex[:8]


def process_owner() -> str:
    """This process as a staging owner: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def owner_alive(name: str) -> bool:
    """Whether a staging name carries an owner (``.tmp-<host>-<pid>-``) that is a live process on this
    machine. A name without an owner, or with another machine's, is not known to be alive."""
    owner = name.split(STAGING_MARK, 1)[1] if STAGING_MARK in name else ""
    host = socket.gethostname()
    if not owner.startswith(host + "-"):
        return False
    pid_text = owner[len(host) + 1:].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def remove_dead_stagings(path: str | os.PathLike) -> list[str]:
    """Remove the stagings of `path` whose owner was a process of this machine that is gone (a killed
    worker or coordinator); a live writer's, and another machine's, are left alone. Returns what went."""
    prefix = os.path.basename(staging_prefix(path, owner=socket.gethostname()))
    parent = os.path.dirname(os.fspath(path)) or "."
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    gone = []
    for entry in entries:
        if entry.startswith(prefix) and not owner_alive(entry):
            remove_path(os.path.join(parent, entry))
            gone.append(entry)
    return gone


def put_in_place(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename file or folder `src` to `dst`, replacing what is there (a folder only after the swap)."""
    if os.path.isdir(src) and not os.path.islink(src):
        replace_dir(src, dst)
    else:
        os.replace(src, dst)


def put_set_in_place(moves: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
                     aside: str | os.PathLike) -> None:
    """Rename every staged ``(src, dst)`` into place as one set (a run's CASA images, an MS with its
    component list and truth), each `src` on its `dst`'s filesystem.

    What stands at a destination is first moved into `aside` (a new folder inside the staging
    folder, removed with it), then the new ones are renamed in; if a rename fails, the earlier
    entries not replaced yet go back, so a failed set loses none of them.
    """
    os.makedirs(aside)
    moved: list[tuple[str, str]] = []
    for i, (_, dst) in enumerate(moves):
        if os.path.lexists(dst):
            kept = os.path.join(aside, f"{i}-{os.path.basename(dst)}")
            os.replace(dst, kept)
            moved.append((kept, os.fspath(dst)))
    try:
        for src, dst in moves:
            os.replace(src, dst)
    except BaseException:
        for kept, dst in moved:
            if not os.path.lexists(dst):
                os.replace(kept, dst)
        raise


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, link or folder tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def staged(path: str | os.PathLike, *, owner: str = "", keep_on_error: bool = False) -> Iterator[str]:
    """A staging name beside `path` for the block to write a file or a folder at (a CASA image, an MS).

    The block creates what it writes there (CASA's ``outfile=``, ``copytree``); if the block
    succeeds it becomes `path` (a folder by `replace_dir`: the old one is removed only once the new
    one is in place). On an error it is removed and `path` is left as it was, unless
    `keep_on_error`: for a writer whose staging output holds the only copy of its inputs
    (imageconcat's movevirtual moves the parts in), so deleting it would lose data.
    """
    parent = os.path.dirname(os.fspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = staging_name(path, owner)
    try:
        yield tmp
        put_in_place(tmp, path)
    except BaseException:
        if not keep_on_error:
            remove_path(tmp)
        raise


@contextlib.contextmanager
def replacing(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; it becomes ``path`` if the block succeeds.

    For writers that want a file name rather than bytes (astropy, CASA); on an error the temporary
    file is removed and ``path`` is left as it was. ``mode`` None: the site's umask decides, as for
    any file the process creates (who may read products is the site's policy, not ours).
    """
    with staged(path) as tmp:
        # Created empty, private and exclusively (as mkstemp does), so the name is this writer's.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # The file is private so far; SLURM jobs, other users and archive readers may need to read
        # it, as far as the umask (or the caller's mode) allows.
        os.chmod(tmp, umask_file_mode() if mode is None else mode)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    return write_text(path, json.dumps(data, **dumps_kwargs) + "\n")


_RENAME_EXCHANGE = 2  # linux/fs.h: swap two existing names in one step


def _libc_renameat2():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


_renameat2 = _libc_renameat2()
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap the names `a` and `b` atomically; False where the system or filesystem cannot (NFS)."""
    if _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put folder `src` at `dst`, replacing what was there; the old one is removed only afterwards.

    Where the filesystem can swap two names in one step, the old folder ends up at `src`'s name
    (a staging name its writer's cleanup knows) and is removed from there: no moment without
    `dst`, and nothing named ``.old-*`` to leave behind. Elsewhere the old folder is renamed
    aside first and put back if the new one cannot take its place.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst):
        if _exchange(src, dst):
            _remove_tree(src)
            return
        old = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
        try:
            os.rename(src, dst)
        except BaseException:
            os.rename(old, dst)
            raise
        _remove_tree(old)
        return
    os.rename(src, dst)


def _remove_tree(path: str) -> None:
    # The new version is in place whatever happens here; a tree that cannot be removed entirely is
    # reported rather than silently left half-deleted.
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        warnings.warn(f"could not remove the replaced folder {path}: {exc}", RuntimeWarning, stacklevel=3)


class SupersededWriteError(RuntimeError):
    """A newer writer claimed the folder after this one started: this writer's output is discarded."""


class DirClaim:
    """A writer's claim on a folder it will replace: only the newest claimant may swap its output in.

    Two tries of one piece of work (a cleared Airflow task whose first try still runs in CASA, a
    Dask retry beside a lost-but-alive worker) must not both publish, and the last to finish is not
    necessarily the newest. Each writer claims the folder when it starts by writing a fresh token
    into ``<folder>.claim``; before swapping its staging output in, it checks, under an exclusive
    lock on that file, that the token is still its own, and otherwise discards its output. The
    check and the swap happen under the same lock, so a newer claim cannot slip between them. The
    claim file is removed with the swap: a finished folder has nothing beside it.

    The file is locked with flock and only ever rewritten in place (never renamed over), and a
    holder checks after locking that the name still leads to the inode it locked: so a writer that
    removes it and one that opens it at the same time cannot each hold a different lock.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        self.path = self.folder + ".claim"
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        with self._locked(create=True) as fd:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self.token.encode(), 0)
            os.fsync(fd)

    @contextlib.contextmanager
    def _locked(self, create: bool) -> Iterator[int | None]:
        """The claim file's descriptor, exclusively locked; None if it does not exist (and not create)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
            except FileNotFoundError:
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    yield fd
                    return
            finally:
                os.close(fd)  # closing drops the lock
            # Removed (or replaced) while we waited for the lock: look again.

    def _mine(self, fd: int | None) -> bool:
        return fd is not None and os.pread(fd, 256, 0).decode(errors="replace") == self.token

    def owns(self) -> bool:
        with self._locked(create=False) as fd:
            return self._mine(fd)

    def replace(self, staging: str | os.PathLike) -> None:
        """Swap `staging` in at the folder if this claim is still the newest; else remove it and raise."""
        staging = os.fspath(staging)
        with self._locked(create=False) as fd:
            if self._mine(fd):
                replace_dir(staging, self.folder)
                os.unlink(self.path)
                return
        _remove_tree(staging)
        raise SupersededWriteError(
            f"{self.folder}: a newer try of this work claimed the folder after this one started, so this "
            "try's output was discarded and the newer one's is kept")

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Put output in place inside this block, only while this claim is the newest.

        For a writer whose output is several renames (a set of images) rather than one folder: the
        block runs under the claim's lock, so no newer claim can be made while it publishes, and the
        claim file goes with a successful block. Raises SupersededWriteError, before the block, when a
        newer writer claimed the name after this one started (the caller discards its output).
        """
        with self._locked(create=False) as fd:
            if not self._mine(fd):
                raise SupersededWriteError(
                    f"{self.folder}: a newer try of this work claimed it after this one started, so this "
                    "try's output was discarded and the newer one's is kept")
            yield
            os.unlink(self.path)

    def release(self) -> None:
        """Give up the claim (the writer failed); a newer claim is left alone."""
        with self._locked(create=False) as fd:
            if self._mine(fd):
                os.unlink(self.path)


# How casacore (and so CASA) words a full disk in the exceptions it raises into Python.
_NO_SPACE_TEXTS = ("No space left on device", "Not enough space on disk", "Disk quota exceeded")


def is_out_of_space(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says the filesystem is full or the quota used up."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in _NO_SPACE_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (the directory entry itself must reach the disk)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
