"""A registry's files by their path in it, in a folder or in a bucket alike (fsspec reaches both), for tests that
damage a registry, copy one, or look for what a crashed publisher left."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import fsspec

from intentflow.fileio import TEMP_PREFIX
from intentflow.registry import VERSION_FILE, VERSION_PREFIX
from intentflow.storage import Location, is_url

_VERSION_NAME = re.compile(rf"^{VERSION_PREFIX}\d{{4}}-\d{{2}}(?:-\d+)?$")


class RegistryFiles:
    def __init__(self, root: Location):
        self.root = root
        self.fs, self.path = fsspec.core.url_to_fs(str(root), use_listings_cache=False)
        self.in_bucket = is_url(root)

    def _full(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def names(self) -> list[str]:
        """Every file, as a path relative to the registry."""
        self.fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            return sorted(path[len(self.path) + 1:] for path in self.fs.find(self.path, detail=False))
        return []

    def read(self, relative: str) -> bytes:
        return self.fs.cat_file(self._full(relative))

    def write(self, relative: str, data: bytes) -> None:
        self.fs.pipe_file(self._full(relative), data)

    def exists(self, relative: str) -> bool:
        return relative in self.names()

    def delete(self, relative: str) -> None:
        """A file, or everything under a folder or prefix."""
        targets = [name for name in self.names() if name == relative or name.startswith(relative + "/")]
        self.fs.rm([self._full(name) for name in targets])

    def version_names(self) -> list[str]:
        """Names that have files under them: whole versions, and (in a bucket) what a crash left half written."""
        return sorted({name.split("/", 1)[0] for name in self.names()
                       if "/" in name and _VERSION_NAME.fullmatch(name.split("/", 1)[0])})

    def leftovers(self) -> list[str]:
        """What a crashed publisher left: temporary files and folders, or version prefixes without version.json."""
        if not self.in_bucket:
            return sorted(path.name for path in Path(self.path).iterdir() if path.name.startswith(TEMP_PREFIX))
        names = self.names()
        return [name for name in self.version_names() if f"{name}/{VERSION_FILE}" not in names]

    def copy_to(self, destination: Location) -> Location:
        """The whole registry copied to ``destination`` (a folder, or a prefix of the same bucket)."""
        for name in self.names():
            RegistryFiles(destination).write(name, self.read(name))
        return destination
