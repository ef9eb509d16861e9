"""The archive rows of ``make faults``: restart its PostgreSQL, fill its file system, kill -9 a store.

Tier ``postgres``: a PRIVATE PostgreSQL 15 (``initdb`` + ``pg_ctl`` from /usr/lib/postgresql/15/bin in a temp
folder, a free port, run as the ``postgres`` account), never the machine's own server. Each row works on the
archive layer directly (``cosmodm_ops.archive``: the code every register task calls) with small files under
tags of their own, and counts at the end:

* lost: expected product keys without a current row, or whose file fails ``Archive.verify``;
* duplicated: rows beyond one per key (extra revisions included);
* half-written: files at a final name whose bytes differ from their source (none may exist), and rows
  pointing to a missing or corrupt file (``verify``). A killed writer's hidden ``.*.part`` temporary is
  reported in the note (``verify`` lists it; it is never served).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.faults import FaultEnv, FaultResult, fault

__all__ = ["PrivatePostgres", "archive_fs_full", "kill9_during_archive_store", "restart_archive_postgres"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL of our own in ``root`` (data, socket, log), on a free loopback port, trust auth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "postgres.log"
        root.mkdir(parents=True, exist_ok=True)
        root.parent.chmod(0o755)  # mkdtemp's 0700 would keep the postgres account out
        acct = pwd.getpwnam("postgres")
        os.chown(root, acct.pw_uid, acct.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args], check=False,
                             capture_output=True, text=True, timeout=120, cwd=self.root)
        if res.returncode != 0:
            msg = f"{tool} {' '.join(args)} failed ({res.returncode}): {(res.stderr or res.stdout)[-400:]}"
            raise RuntimeError(msg)
        return res

    def _ctl(self, *args: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open connection is cut, the server comes back on the same port."""
        self._ctl("-m", "fast", "restart")

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _pg(env: FaultEnv) -> PrivatePostgres:
    return env.service("postgres", lambda e: PrivatePostgres(e.workdir / "pg"))


def _archive(env: FaultEnv, name: str, root: Path | None = None) -> Any:
    from cosmodm_ops.archive import Archive

    archive = Archive(_pg(env).create_db(f"faults_{name}"), root or env.workdir / name / "archive")
    archive.init()
    return archive


def _tags(night: str, expnum: int, ccd: int) -> Any:
    from cosmodm_ops.model import Tags

    return Tags(survey="faults", camera="decam", stage="single_epoch", version="v1", kind="image", night=night,
                expnum=expnum, ccd=ccd, band="g")


def _sources(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` distinct files of ``size`` bytes (the products a job made)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"src{i:03d}.fits"
        block = hashlib.sha256(f"{seed}-{i}".encode()).digest()
        path.write_bytes((block * (size // len(block) + 1))[:size])
        out.append(path)
    return out


def _count(archive: Any, night: str, expected: int) -> tuple[int, int, dict[str, Any]]:
    """(lost, duplicated, details) of a night's products against ``expected`` keys."""
    current = archive.find(survey="faults", night=night)
    every = archive.find(survey="faults", night=night, include_superseded=True)
    report = archive.verify(quarantine=False)
    keys = {(p["expnum"], p["ccd"]) for p in current}
    bad = len(report.missing) + len(report.corrupt)
    lost = max(0, expected - len(keys)) + bad
    duplicated = (len(current) - len(keys)) + (len(every) - len(current))
    return lost, duplicated, {"rows": len(every), "verify_ok": report.ok, "verify_bad": bad,
                              "temporaries": len(report.temporaries)}


def _half_written(root: Path, sources: list[Path]) -> int:
    """Files at a final (non-hidden) name in the archive whose bytes are none of the sources'."""
    good = {hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
               and hashlib.sha256(p.read_bytes()).hexdigest() not in good)


@fault("restart_archive_postgres", tier="postgres")
def restart_archive_postgres(env: FaultEnv) -> FaultResult:
    """``pg_ctl restart -m fast`` of the archive's PostgreSQL while 40 products are being stored one by one."""
    from cosmodm_ops.archive import ArchiveUnavailable

    night, n = "2026-11-20", 40
    archive = _archive(env, "pgrestart")
    sources = _sources(env.workdir / "pgrestart" / "src", n, 256 * 1024, 1)
    done: list[float] = []
    errors: list[tuple[float, str]] = []

    def writer() -> None:  # a register task: ArchiveUnavailable is the transient class, retried
        for i, src in enumerate(sources):
            while True:
                try:
                    archive.store(src, _tags(night, 1000 + i // 4, 1 + i % 4))
                    done.append(time.time())
                    break
                except ArchiveUnavailable as err:
                    errors.append((time.time(), str(err)[:120]))
                    time.sleep(0.5)
            time.sleep(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while len(done) < 10 and thread.is_alive():
        time.sleep(0.02)
    t_inject = time.time()
    _pg(env).restart()
    t_back = time.time()
    thread.join(600)
    after = [t for t in done if t > t_inject]
    recovery = round(after[0] - t_inject, 1) if after else None
    lost, duplicated, info = _count(archive, night, n)
    info.update(unavailable_errors=len(errors), restart_s=round(t_back - t_inject, 1),
                first_error=errors[0][1] if errors else None, half_written=_half_written(archive.root, sources))
    action = (f"archive layer, private PostgreSQL (pg_ctl restart -m fast, {t_back - t_inject:.1f} s): "
              f"{len(errors)} store(s) raised ArchiveUnavailable (retryable), retried; pool pre-ping reconnected; "
              f"verify clean")
    survived = not thread.is_alive() and len(done) == n and info["verify_bad"] == 0 and info["half_written"] == 0
    return FaultResult("restart_archive_postgres", "10 of 40 stores done", action, survived, lost, duplicated,
                       recovery, json.dumps(info))


@fault("archive_fs_full", tier="postgres")
def archive_fs_full(env: FaultEnv) -> FaultResult:
    """The archive root on an 8 MiB tmpfs that other data fills: a store fails cleanly, then succeeds once freed."""
    from cosmodm_ops.archive import ArchiveUnavailable

    night = "2026-11-21"
    mnt = env.workdir / "fsfull" / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)], check=True,
                   capture_output=True, timeout=30)
    try:
        archive = _archive(env, "fsfull", mnt / "archive")
        sources = _sources(env.workdir / "fsfull" / "src", 2, 2 * 1024 * 1024, 2)
        filler = mnt / "other-data.bin"
        filler.write_bytes(b"\0" * (5 * 1024 * 1024))
        archive.store(sources[0], _tags(night, 2000, 1))
        message = ""
        try:
            archive.store(sources[1], _tags(night, 2000, 2))
        except ArchiveUnavailable as err:
            message = str(err)
        except OSError as err:  # what the platform did before the fix: a raw traceback-worthy error
            message = f"UNHANDLED {type(err).__name__}: {err}"
        t_full = time.time()
        rows_after_fail = len(archive.find(survey="faults", night=night))
        leftovers = [p.name for p in (mnt / "archive").rglob("*") if p.is_file()]
        filler.unlink()
        t_free = time.time()
        archive.store(sources[1], _tags(night, 2000, 2))
        recovery = round(time.time() - t_free, 2)
        lost, duplicated, info = _count(archive, night, 2)
        info.update(message=message, rows_after_fail=rows_after_fail, files_after_fail=len(leftovers),
                    half_written=_half_written(archive.root, sources), full_at=round(t_full, 1))
        clean = message.startswith("archive file system full") and rows_after_fail == 1 and len(leftovers) == 1
        action = ("archive layer on a full tmpfs: the store raised ArchiveUnavailable \"archive file system full ..."
                  " free space and retry\" (exit 75), its temporary removed, no row; after freeing, the retry stored it"
                  if clean else f"store on a full file system: {message[:160]}")
        survived = clean and info["verify_bad"] == 0 and info["half_written"] == 0
        return FaultResult("archive_fs_full", "1 of 2 products stored, 5 of 8 MiB taken by other data", action,
                           survived, lost, duplicated, recovery, json.dumps(info))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True, timeout=30)


def store_batch(url: str, root: str, src: str, night: str) -> None:
    """Store every file of ``src`` in ONE transaction, as a manifest registration does (the child of the kill row)."""
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.archive.storage import make_item, store_items

    archive = Archive(url, root)
    files = sorted(Path(src).glob("*.fits"))
    items = [make_item(_tags(night, 3000 + i // 4, 1 + i % 4), f, None) for i, f in enumerate(files)]
    with archive._db.transaction() as conn:
        store_items(conn, archive.root, items, None)


@fault("kill9_during_archive_store", tier="postgres")
def kill9_during_archive_store(env: FaultEnv) -> FaultResult:
    """kill -9 a process registering 16 products in one transaction after 4 of its files are placed."""
    night, n = "2026-11-22", 16
    archive = _archive(env, "kill9")
    src = env.workdir / "kill9" / "src"
    sources = _sources(src, n, 4 * 1024 * 1024, 3)
    args = [archive.db_url, str(archive.root), str(src), night]
    code = f"import sys; from bench.faults.archive_faults import store_batch; store_batch(*{args!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=_REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)

    def placed() -> int:
        return sum(1 for p in archive.root.rglob("*.fits*") if not p.name.startswith("."))

    while proc.poll() is None and placed() < 4:
        time.sleep(0.01)
    if proc.poll() is not None:
        return FaultResult("kill9_during_archive_store", "?", "the store ended before the moment came", False,
                           -1, -1, None, proc.stderr.read().decode()[-300:] if proc.stderr else "")
    t_kill = time.time()
    proc.kill()
    proc.wait(30)
    at_kill = placed()
    rows_after_kill = len(archive.find(survey="faults", night=night, include_superseded=True))
    half_after_kill = _half_written(archive.root, sources)
    store_batch(*args)  # the rerun (the task's retry)
    recovery = round(time.time() - t_kill, 1)
    lost, duplicated, info = _count(archive, night, n)
    info.update(files_at_kill=at_kill, rows_after_kill=rows_after_kill, half_written_after_kill=half_after_kill,
                half_written=_half_written(archive.root, sources))
    action = (f"archive layer: the killed transaction left 0 rows and {at_kill} complete unreferenced files "
              f"(no partial file at a final name; {info['temporaries']} hidden .part temporary, listed by verify); "
              f"the rerun reused them and stored all {n}; verify clean")
    survived = rows_after_kill == 0 and half_after_kill == 0 and info["verify_bad"] == 0 and lost == 0
    return FaultResult("kill9_during_archive_store", f"4 of {n} files placed, transaction open", action, survived,
                       lost, duplicated, recovery, json.dumps(info))
