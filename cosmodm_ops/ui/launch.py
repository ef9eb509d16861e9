"""``make ui``: the Airflow api-server with the survey pages on the demo's state; prints the URL and the login.

Uses ``var/demo`` (what ``make demo`` left: its archive and its Airflow home, so the nightly run's
page links to the night). Without a demo state it seeds a small archive under ``var/ui-seed``
(:func:`cosmodm_ops.ui.seed.seed_archive`) and says so. Runs until Ctrl-C.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _port(default: int) -> int:
    from cosmodm_ops.ui.server import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", default))
            return default
        except OSError:
            return free_port()


def main() -> int:
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.ui.server import REPO, start_api_server

    var = Path(os.environ.get("COSMODM_DEMO_DIR", REPO / "var" / "demo"))
    db_file = var / "archive" / "cosmodm.db"
    if db_file.exists():
        db, root, home, what = f"sqlite:///{db_file}", var / "archive", var / "airflow", f"the demo's state in {var}"
    else:
        seed = REPO / "var" / "ui-seed"
        db, root, home = f"sqlite:///{seed / 'archive' / 'cosmodm.db'}", seed / "archive", seed / "airflow"
        if not (seed / "archive" / "cosmodm.db").exists():
            from cosmodm_ops.ui.seed import seed_archive

            print(f"no demo state in {var} (run `make demo` for a real night); seeding a small archive in {seed}",
                  file=sys.stderr, flush=True)
            seed_archive(Archive(db, root), seed / "work")
        what = f"a seeded archive in {seed}"
    Archive(db, root).init()  # the survey pages' indexes (migration 0003) on an older archive
    port = _port(int(os.environ.get("COSMODM_UI_PORT", "8080")))
    server = start_api_server(home, db=db, root=str(root), port=port, timeout=300,
                              env_extra={"AIRFLOW__API__WORKERS": os.environ.get("COSMODM_UI_WORKERS", "2")})
    print(f"Airflow UI with the survey pages on {what}:\n"
          f"  {server.url}/  (Survey in the navigation; the pages alone: {server.url}/cosmodm/)\n"
          f"  login: admin / {server.passwords['admin']}   (read-only: viewer / {server.passwords['viewer']})\n"
          "Ctrl-C stops it.", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
