"""Writes that never leave the project directory.

Every directory below the project root is opened with `O_DIRECTORY | O_NOFOLLOW` relative to
its parent's descriptor (openat-style), and the file itself with `O_NOFOLLOW | O_NONBLOCK`
and checked with fstat, so a symbolic link, FIFO, device or directory planted at any step of
a path the tool writes is a clean `StateError` naming that step relative to the project,
never a write outside it, a hang on a FIFO, or an ELOOP traceback. The project root itself
may be a link (the user chose it); nothing under it may be. A file opened to write, or replaced,
must also have one link only: a hard link is a regular file too, and appending to it (or
cutting its torn tail) would change the file it shares its data with, wherever that lives.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from .errors import StateError, ValidationError

NAME_MAX = 255
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT


def split_relpath(root: Path, relpath: str | os.PathLike[str]) -> tuple[str, ...]:
    """The components of a path inside the project; an escaping or empty one is refused.

    An absolute `relpath` is accepted when it lies lexically under `root`.
    """
    path = PurePosixPath(os.fspath(relpath))
    if path.is_absolute():
        try:
            path = path.relative_to(PurePosixPath(os.fspath(root)))
        except ValueError:
            raise ValidationError(f"{relpath} is not inside the project {root}") from None
    parts = path.parts
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValidationError(f"{relpath!s}: not a plain path inside the project")
    return parts


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def _refuse(parts: tuple[str, ...], st_mode: int | None) -> StateError:
    where = _shown(parts)
    if st_mode is not None and stat.S_ISLNK(st_mode):
        what = "is a symbolic link"
    elif st_mode is not None and stat.S_ISDIR(st_mode):
        what = "is a directory"
    elif st_mode is not None and stat.S_ISFIFO(st_mode):
        what = "is a FIFO"
    elif st_mode is not None and (stat.S_ISCHR(st_mode) or stat.S_ISBLK(st_mode)):
        what = "is a device"
    elif st_mode is not None and stat.S_ISSOCK(st_mode):
        what = "is a socket"
    else:
        what = "is not a regular file"
    return StateError(
        f"{where} (in the project) {what}: mlops reads and writes only regular files and "
        "real directories inside the project, never through links; remove it and retry"
    )


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC


def _refuse_hard_link(parts: tuple[str, ...], nlink: int) -> StateError:
    return StateError(
        f"{_shown(parts)} (in the project) has {nlink} hard links: writing it would change "
        "the other paths that share its data too (a hard-link backup such as cp -al shares "
        "every file); give it its own copy (cp FILE FILE.copy && mv FILE.copy FILE) and retry"
    )


def check_single_link(fd: int, path: Path, root: Path | None = None) -> os.stat_result:
    """The fstat of a log held open for appends, refused when it gained a second hard link
    since it was opened (a kept descriptor: a `cp -al` backup taken while a service runs)."""
    st = os.fstat(fd)
    if st.st_nlink > 1:
        shown = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
        raise _refuse_hard_link((str(shown),), st.st_nlink)
    return st


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return None


def _lstat_mode(dir_fd: int, name: str) -> int | None:
    st = _lstat(dir_fd, name)
    return None if st is None else st.st_mode


def _open_root(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(f"cannot open the directory {root}: {exc.strerror}") from None


def _open_subdir(dir_fd: int, name: str, shown: tuple[str, ...], create: bool) -> int:
    """Open (creating if asked) the directory `name` under `dir_fd`, never through a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(3):
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, DEFAULT_DIR_MODE, dir_fd=dir_fd)
            except FileExistsError:
                pass  # a concurrent writer made it: open it on the next pass
            except OSError as exc:
                raise StateError(f"cannot create {_shown(shown)}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise _refuse(shown, _lstat_mode(dir_fd, name)) from None
            raise StateError(f"cannot open {_shown(shown)}: {exc.strerror}") from None
    raise StateError(f"cannot open {_shown(shown)}: it keeps changing")


def open_dir(root: Path, reldir: str | os.PathLike[str] | None, create: bool = True) -> int:
    """A descriptor of a directory inside the project, every step checked from the root down.

    `reldir` None (or empty) is the root itself. Missing directories are created when
    `create`; otherwise FileNotFoundError propagates. The caller closes the descriptor.
    """
    fd = _open_root(root)
    if reldir is None or os.fspath(reldir) in ("", "."):
        return fd
    parts = split_relpath(root, reldir)
    try:
        for i, name in enumerate(parts):
            sub = _open_subdir(fd, name, parts[: i + 1], create)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def dir_in(root: Path, reldir: str | os.PathLike[str] | None, create: bool = True) -> Iterator[int]:
    """`open_dir` as a context manager that closes the descriptor."""
    fd = open_dir(root, reldir, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_at(dir_fd: int, name: str, flags: int, mode: int, shown: tuple[str, ...]) -> int:
    """Open the regular file `name` under `dir_fd` without following a link or blocking.

    A link, FIFO, device, socket or directory there is a `StateError` naming `shown`; so is,
    when `flags` open it to write, a file with more than one hard link.
    """
    before = _lstat_mode(dir_fd, name)
    if before is not None and not stat.S_ISREG(before):
        raise _refuse(shown, before)  # never even open a device: opening may act on it
    try:
        # O_TRUNC only once the file passed the checks: truncating acts on a hard link too.
        fd = os.open(
            name,
            (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            mode,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR, errno.EMLINK):
            raise _refuse(shown, _lstat_mode(dir_fd, name)) from None
        if isinstance(exc, FileNotFoundError):
            raise
        raise StateError(f"cannot open {_shown(shown)}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(shown, st.st_mode)
        if flags & WRITE_FLAGS and st.st_nlink > 1:
            raise _refuse_hard_link(shown, st.st_nlink)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_in(
    root: Path,
    relpath: str | os.PathLike[str],
    flags: int,
    mode: int = DEFAULT_FILE_MODE,
    create_dirs: bool = True,
) -> int:
    """Open a regular file inside the project, never through a link; return its descriptor.

    Directories are walked from `root` with O_NOFOLLOW (created when missing and
    `create_dirs`); the file is opened with `flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`,
    checked to be a regular file, then set back to blocking. Anything else planted on the
    path is a `StateError` naming it relative to the project. A missing file without
    O_CREAT raises FileNotFoundError, as os.open does.
    """
    parts = split_relpath(root, relpath)
    parent = PurePosixPath(*parts[:-1]) if len(parts) > 1 else None
    with dir_in(root, parent, create=create_dirs) as dir_fd:
        return open_at(dir_fd, parts[-1], flags, mode, parts)


def check_path(root: Path, relpath: str | os.PathLike[str]) -> bool:
    """Whether a regular file exists at `relpath`; a link or non-regular entry at any step
    is a `StateError` naming it, and so is a file with more than one hard link (the library
    opens it to write). Creates nothing.

    For files a library opens itself (filelock's `.mlops.lock`): check first, so a planted
    link is this clean error rather than the library's ELOOP.
    """
    parts = split_relpath(root, relpath)
    parent = PurePosixPath(*parts[:-1]) if len(parts) > 1 else None
    try:
        with dir_in(root, parent, create=False) as dir_fd:
            st = _lstat(dir_fd, parts[-1])
    except FileNotFoundError:
        return False
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(parts, st.st_mode)
    if st.st_nlink > 1:
        raise _refuse_hard_link(parts, st.st_nlink)
    return True


def open_read(root: Path, relpath: str | os.PathLike[str]) -> int:
    """Open a regular file inside the project for reading, never through a link.

    Nothing is created: a missing file or directory raises FileNotFoundError. A FIFO planted
    where a log should be is refused instead of blocking the reader forever.
    """
    return open_in(root, relpath, os.O_RDONLY, create_dirs=False)


def open_file_for_read(path: Path) -> int:
    """Open the regular file `path` for reading: no link at its last step, no FIFO or device.

    Its directory is trusted (readers get no project root); a missing file or directory
    raises FileNotFoundError. A FIFO planted where a log should be would block a plain open
    forever; here it is a StateError.
    """
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_at(dir_fd, path.name, os.O_RDONLY, 0, (str(path),))
    finally:
        os.close(dir_fd)


def read_file(path: Path) -> bytes:
    """The bytes of the regular file `path`, read as `open_file_for_read` opens it."""
    with os.fdopen(open_file_for_read(path), "rb") as f:
        return f.read()


def open_append(path: Path, root: Path | None = None) -> int:
    """Open a log for locked appends (O_RDWR | O_APPEND | O_CREAT), never through a link.

    With `root` (the project directory) every directory from it down is checked (and made
    when missing); without, the log's directory is made as before (mkdir -p, which follows
    links) and trusted, and only the file itself is checked: pass `root`.
    """
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_in(path.parent, path.name, APPEND_FLAGS, DEFAULT_FILE_MODE)
    return open_in(root, path, APPEND_FLAGS, DEFAULT_FILE_MODE)


def temp_name(name: str, pid: int | None = None) -> str:
    """The temp file a writer with `pid` uses beside `name` (kept within NAME_MAX bytes)."""
    pid = os.getpid() if pid is None else pid
    tmp = f".{name}.{pid}.tmp"
    if len(os.fsencode(tmp)) > NAME_MAX:
        tmp = f".{_digest(name)}~.{pid}.tmp"
    return tmp


def _digest(name: str) -> str:
    import hashlib  # here: importing it costs every command's start-up 3 ms

    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def _temp_pid(name: str, candidate: str) -> int | None:
    """The writer pid of `candidate` if it is a temp file of `name`, else None."""
    for prefix in (f".{name}.", f".{_digest(name)}~."):
        if candidate.startswith(prefix) and candidate.endswith(".tmp"):
            pid = candidate[len(prefix) : -4]
            if pid.isdigit() and pid.isascii():
                return int(pid)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(dir_fd: int, name: str) -> int:
    """Remove temp files of `name` whose writers died; return how many were removed.

    unlink(2) never follows a link, so a link planted under a temp name is removed itself;
    directories are left alone.
    """
    removed = 0
    for candidate in os.listdir(dir_fd):
        pid = _temp_pid(name, candidate)
        if pid is None or pid_alive(pid):
            continue
        st_mode = _lstat_mode(dir_fd, candidate)
        if st_mode is None or stat.S_ISDIR(st_mode):
            continue
        try:
            os.unlink(candidate, dir_fd=dir_fd)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_replace(
    root: Path,
    relpath: str | os.PathLike[str],
    data: bytes | Iterable[bytes],
    mode: int | None = None,
    durable: bool = True,
) -> None:
    """Replace a file inside the project with `data` (bytes, or chunks written as they come:
    an error while producing them leaves the old file), atomically and never through a link.

    Temp file in the same directory (through its descriptor), fsync, rename, fsync of the
    directory: a crash leaves the old or the new file. The new file keeps the old one's
    permission bits (`chmod 600` stays 600); a new file gets `mode` or 0644 less the umask.
    A link, a non-regular file or a file with more than one hard link at the target is
    refused, not replaced (a replace would silently part it from its other paths). `durable=False`
    skips both fsyncs and the stale-temp sweep (a directory listing), for derived caches
    (summaries) that are recomputed when lost.
    """
    parts = split_relpath(root, relpath)
    name = parts[-1]
    with dir_in(root, PurePosixPath(*parts[:-1]) if len(parts) > 1 else None) as dir_fd:
        st = _lstat(dir_fd, name)
        existing = None if st is None else st.st_mode
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise _refuse(parts, st.st_mode)
        if st is not None and st.st_nlink > 1:
            raise _refuse_hard_link(parts, st.st_nlink)
        keep = stat.S_IMODE(existing) if existing is not None else mode
        if durable:  # caches skip it: listing logs/ab with 100,000 tests per save costs too much
            remove_stale_temps(dir_fd, name)
        tmp = temp_name(name)
        try:
            os.unlink(tmp, dir_fd=dir_fd)  # our own pid's leftover, or a planted link
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateError(f"cannot write {_shown(parts)}: {exc.strerror}") from None
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                DEFAULT_FILE_MODE if keep is None else keep & 0o777,
                dir_fd=dir_fd,
            )
            try:
                if keep is not None:
                    os.fchmod(fd, keep)
                for part in (data,) if isinstance(data, bytes) else data:
                    write_all(fd, part)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if isinstance(exc, OSError):
                raise StateError(
                    f"could not write {_shown(parts)}: {exc.strerror or exc}"
                ) from None
            raise
        if durable:
            os.fsync(dir_fd)
