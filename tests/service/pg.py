"""A real PostgreSQL for the service tests: ``$UNLEARNREC_PG_URL`` if set, else a throwaway cluster.

The throwaway cluster is made with the machine's ``initdb`` (``PATH`` or ``/usr/lib/postgresql/*/bin``) in a
temporary folder, listens on a free loopback port with its socket in that folder, trusts local connections,
and is stopped and removed at the end of the session. PostgreSQL refuses to run as root, so under root it runs
as the ``postgres`` user if there is one, else as ``nobody``. :func:`start` raises :class:`Unavailable` with
what is missing when no server can be had; the fixtures turn that into a visible skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class Unavailable(RuntimeError):
    """No PostgreSQL can be started or reached (the reason says what is missing)."""


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for d in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    ):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


class PgServer:
    """A running PostgreSQL: ``url`` (its maintenance database), ``datadir`` when the tests own the cluster."""

    def __init__(self, url: str, datadir: Path | None = None, stop: list[str] | None = None, root: Path | None = None):
        self.url, self.datadir, self._stop, self._root = url, datadir, stop, root

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database (``t_<uuid>``) for one test; its URL, dropped afterwards."""
        import psycopg

        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(self.url, name)
        finally:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._stop:
            subprocess.run(self._stop, capture_output=True, timeout=60, check=False)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


def start() -> PgServer:
    """The server of ``$UNLEARNREC_PG_URL``, or a new throwaway cluster (:class:`Unavailable` if neither)."""
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed (pip install 'unlearnrec[postgres]'): {exc}") from None
    if os.environ.get("UNLEARNREC_PG_URL"):
        url = os.environ["UNLEARNREC_PG_URL"]
        try:
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise Unavailable(f"$UNLEARNREC_PG_URL does not answer: {exc}".splitlines()[0]) from None
        return PgServer(url)
    bindir = _bin_dir()
    if bindir is None:
        raise Unavailable(
            "no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; "
            "install postgresql or set UNLEARNREC_PG_URL"
        )
    user = None
    as_user = list  # the command as is
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = _unprivileged_user()
        runuser, su = shutil.which("runuser"), shutil.which("su")
        if user is None or (runuser is None and su is None):
            raise Unavailable(
                "running as root with no unprivileged user (postgres, nobody) or no runuser/su to "
                "run PostgreSQL as; set UNLEARNREC_PG_URL"
            )
        if runuser is not None:

            def as_user(cmd: list[str], _u=user.pw_name) -> list[str]:
                return [runuser, "-u", _u, "--", *cmd]
        else:  # su with a shell, since nobody's login shell is nologin

            def as_user(cmd: list[str], _u=user.pw_name) -> list[str]:
                return [su, "-s", "/bin/sh", _u, "-c", shlex.join(cmd)]

    root = Path(tempfile.mkdtemp(prefix="unlearnrec-pg-"))  # under /tmp, which another user can traverse
    datadir, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if user is not None:
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
    port = _free_port()
    initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]
    opts = (
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir)]
    try:
        run = subprocess.run(as_user(initdb), capture_output=True, text=True, timeout=120, check=False)
        if run.returncode:
            raise Unavailable(f"initdb failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}")
        start_cmd = [*pg_ctl, "-l", str(log), "-o", opts, "-w", "-t", "60", "start"]
        run = subprocess.run(as_user(start_cmd), capture_output=True, text=True, timeout=90, check=False)
        if run.returncode:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise Unavailable(f"pg_ctl start failed: {run.stderr.strip()} {tail}")
    except (Unavailable, OSError, subprocess.SubprocessError):
        shutil.rmtree(root, ignore_errors=True)
        raise
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    stop = as_user([*pg_ctl, "-m", "immediate", "-w", "stop"])
    server = PgServer(url, datadir, stop, root)
    deadline = time.time() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return server
        except psycopg.Error as exc:
            if time.time() > deadline:
                server.stop()
                raise Unavailable(f"the throwaway PostgreSQL did not accept connections: {exc}") from None
            time.sleep(0.2)
