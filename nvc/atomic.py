"""Outputs that appear only when complete: written under a temporary name, renamed on success."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from nvc.errors import NvcError


class AtomicPath:
    """A temporary sibling of `final` (file or folder) that `commit()` renames into place."""

    def __init__(self, final: str | os.PathLike, folder: bool = False):
        self.final = Path(final)
        parent = self.final.parent if str(self.final.parent) else Path(".")
        if not parent.is_dir():
            raise NvcError(f"cannot write {self.final}: folder {parent} does not exist")
        if self.final.is_dir() and not folder:
            raise NvcError(f"cannot write {self.final}: it is a folder")
        if folder and self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise NvcError(f"cannot write frames to {self.final}: it exists and is not an empty folder")
        try:
            if folder:
                self.temp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=parent))
            else:
                fd, name = tempfile.mkstemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=parent)
                os.close(fd)
                self.temp = Path(name)
        except OSError as e:
            raise NvcError(f"cannot write {self.final}: {e.strerror}") from None
        self.folder = folder

    def commit(self) -> None:
        if self.folder and self.final.is_dir():
            self.final.rmdir()  # checked empty above
        os.replace(self.temp, self.final)

    def discard(self) -> None:
        if self.folder:
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            self.temp.unlink(missing_ok=True)
