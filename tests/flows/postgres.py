"""A PostgreSQL server for the tests, on 127.0.0.1 and a free port, in a temporary folder: Debian's `postgresql`
package's initdb and pg_ctl (.ci/run installs it). As root, it runs as the package's `postgres` user (PostgreSQL
refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "intentflow"
DATABASE = "prefect"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    folder: Path
    bin: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        """The connection URL for Prefect (asyncpg, which Prefect installs)."""
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def run(self, *command: str) -> None:
        result = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}\n{self.log()}")

    def query(self, sql: str) -> str:
        """One query's rows, ``|``-separated, through psql."""
        result = subprocess.run([*self.as_user, str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                                 USER, "-d", DATABASE, "-At", "-c", sql], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(port: int) -> Postgres:
    found = binaries()
    if found is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb (fix: apt-get install -y postgresql, as .ci/run "
                                "does)")
    # Not under pytest's folders, which are private to root: the postgres user must reach it.
    folder = Path(tempfile.mkdtemp(prefix="intentflow-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = Postgres(folder, found, port, as_user)
    try:
        server.run(str(found / "initdb"), "-D", str(folder / "data"), "-U", USER, "--auth=trust", "-E", "UTF8",
                   "--no-sync")
        # Only 127.0.0.1, and the socket in the temporary folder (not /var/run/postgresql).
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
        server.run(str(found / "pg_ctl"), "-D", str(folder / "data"), "-o", options, "-l", str(folder / "server.log"),
                   "-w", "-t", "120", "start")
        server.run(str(found / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE)
    except BaseException:
        server.stop()
        raise
    return server
