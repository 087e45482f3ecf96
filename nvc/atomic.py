"""Where outputs go: checked before any work, and completed files appear only when whole.

A regular file (or a folder of PNGs) is written under a temporary sibling name and renamed into
place on success, with the permissions the umask implies (as any tool that creates files). Anything
else already under the output name, a character device such as /dev/null or a named pipe, is
written directly: renaming over it would replace the device or the pipe with a plain file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from nvc.errors import NvcError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two names reach one file: the same path, another path, a hard or a symbolic link."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_stream(path: str | os.PathLike) -> bool:
    """A character device (/dev/null, a terminal) or a named pipe: written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output(output: str | os.PathLike, inputs=(), overwrite: bool | None = True) -> None:
    """Refuse an output that is one of the inputs, or an existing file that may not be replaced.

    `overwrite`: True (-y) replaces an existing file; False (-n) and None (no choice given) refuse.
    Devices and pipes are written into, not replaced, and need no permission.
    """
    if str(output) == "-":
        return
    for source in inputs:
        if str(source) != "-" and same_file(output, source):
            raise NvcError(f"output {output} is the input {source}; choose another output name")
    parent = os.path.dirname(os.path.normpath(output)) or "."
    if not os.path.isdir(parent):
        raise NvcError(f"cannot write {output}: folder {parent} does not exist")
    try:
        mode = os.stat(output).st_mode
    except (OSError, ValueError):
        return  # does not exist (or cannot be seen): creating it says what is wrong
    if stat.S_ISBLK(mode):
        raise NvcError(f"output {output} is a block device; nvc writes files, folders, pipes and /dev/null")
    if stat.S_ISREG(mode) and overwrite is not True:
        why = "and -n was given" if overwrite is False else "(use -y to overwrite it)"
        raise NvcError(f"output {output} exists {why}")


def umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicPath:
    """Where to write `final`: `path` is a temporary sibling that `commit()` renames into place, or,
    for a device or a pipe (`direct`), `final` itself."""

    def __init__(self, final: str | os.PathLike, folder: bool = False):
        # A symbolic link stays a link: its target is what gets replaced.
        self.final = Path(os.path.realpath(final)) if os.path.islink(final) else Path(final)
        self.folder = folder
        self.direct = is_stream(self.final)
        if self.direct:
            if folder:
                raise NvcError(f"cannot write frames to {final}: it is a device or pipe, not a folder")
            self.path = self.final
            return
        parent = self.final.parent if str(self.final.parent) else Path(".")
        if not parent.is_dir():
            raise NvcError(f"cannot write {final}: folder {parent} does not exist")
        if self.final.is_dir() and not folder:
            raise NvcError(f"cannot write {final}: it is a folder")
        if folder and self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise NvcError(f"cannot write frames to {final}: it exists and is not an empty folder")
        self.path = self._create_temp(parent)

    def _create_temp(self, parent: Path) -> Path:
        prefix = f".{self.final.name}."
        try:
            if self.folder:
                temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
                os.chmod(temp, self._mode(stat.S_ISDIR, 0o777))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
                temp = Path(name)
                try:
                    os.fchmod(fd, self._mode(stat.S_ISREG, 0o666))
                finally:
                    os.close(fd)
        except OSError as e:
            raise NvcError(f"cannot write {self.final}: {e.strerror}") from None
        return temp

    def _mode(self, same_kind, full: int) -> int:
        """A replaced file or folder keeps its permissions (as `>` in a shell does); a new one gets
        those the umask implies, not mkstemp's 0600 or mkdtemp's 0700."""
        try:
            current = os.stat(self.final).st_mode
            if same_kind(current):
                return stat.S_IMODE(current)
        except OSError:
            pass
        return full & ~umask()

    def commit(self) -> None:
        if self.direct:
            return
        if self.folder and self.final.is_dir():
            self.final.rmdir()  # checked empty above
        os.replace(self.path, self.final)

    def discard(self) -> None:
        if self.direct:
            return
        if self.folder:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)
