"""A private PostgreSQL server for the history tests: initdb in a temporary folder, listening on a
free loopback port, stopped at the end. Debian's `postgresql` package provides the binaries
(scripts/test installs it); PostgreSQL refuses to run as root, so as root the server runs as
the package's `postgres` user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from edgefleet.fleet.broker import free_port


def find_postgres() -> Path | None:
    """The folder of initdb and pg_ctl, newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    def __init__(self, bin_dir: Path, folder: Path):
        self.bin, self.folder = bin_dir, folder
        self.port = free_port()
        self.data = folder / "data"

    def _run(self, *args: str) -> None:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {proc.stdout}{proc.stderr}")

    def start(self) -> PostgresServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            for parent in self.folder.parents:  # the postgres user must reach the folder
                if parent == Path("/") or parent.stat().st_mode & 0o001:
                    break
                parent.chmod(parent.stat().st_mode | 0o001)
        self._run(self.bin / "initdb", "-D", self.data, "-U", "edgefleet", "--auth=trust", "-E", "UTF8")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.folder / "server.log", "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")
        return self

    def new_database(self) -> str:
        """The URL of a database of its own, for one test."""
        import uuid

        name = f"h{uuid.uuid4().hex[:12]}"
        self._run(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "edgefleet", name)
        return f"postgresql://edgefleet@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        except RuntimeError:
            time.sleep(0.5)
