"""The bad-input corpus (tests/badinput/make_corpus.py), each case run as a batch job runs it: ``cosmodm ...``.

For every case: the exit code; the message names the file / HDU / key, what was expected and what to do (the
case's fragments); no Python traceback; the input is still there, unchanged; nothing half-written in the
archive root (no new or partial file, no temporary) nor in its database (no new row in any table), nor in the
job's output or RAM-disk folders. Science outcomes (a dead, NaN or saturated CCD, a clouded-out exposure) finish
with the QA verdict and its reason in qa.json instead.

Needs the Astromatic binaries (the good exposure and the science cases are processed for real); one corpus per
session, about 2-3 minutes on an idle machine.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.badinput.make_corpus import CASES, EXIT_PARTIAL, Base, Case, make_base, make_case, run_cosmodm
from tests.support import need_binary

pytestmark = pytest.mark.astromatic


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    for tool in ("source-extractor", "psfex", "scamp"):
        need_binary(tool)
    return make_base(tmp_path_factory.mktemp("badinput_base"))


def _db_counts(base: Base) -> dict[str, int]:
    with sqlite3.connect(base.db.removeprefix("sqlite:///")) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # table names from sqlite_master


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _qa_reasons(qa: dict, ccd: int | None) -> tuple[str, str]:
    """(state or verdict, every failure reason as one text) of a CCD, or of the exposure when ``ccd`` is None."""
    if ccd is None:
        exp = qa["exposure"]
        failed = [json.dumps(c) for c in qa.get("checks", exp.get("checks", [])) if not c.get("passed", True)]
        failed += [json.dumps(c) for c in qa["ccds"] if c.get("state") != "ok"]
        return exp["verdict"], "\n".join(failed)
    entry = next(c for c in qa["ccds"] if c["ccd"] == ccd)
    return entry["state"], json.dumps(entry)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(case: Case, base: Base, tmp_path: Path) -> None:
    argv, env, made = make_case(case, base, tmp_path / case.name)
    work = tmp_path / "ramdisk"
    work.mkdir()
    if argv[:2] == ["single-epoch", "run"]:
        argv += ["--workdir", str(work)]
    input_before = _tree(made)
    root_before, db_before = _tree(base.root), _db_counts(base)

    res = run_cosmodm(argv, env)
    said = res.stderr + res.stdout

    assert res.returncode == case.code, f"exit {res.returncode}, expected {case.code}:\n{said[-3000:]}"
    assert "Traceback" not in said, said[-3000:]
    # the input is kept, byte for byte (never deleted or "repaired" in place)
    assert _tree(made) == input_before
    # the archive: not one new or changed file, no temporary; not one new row (registering twice included)
    assert _tree(base.root) == root_before
    assert _db_counts(base) == db_before
    # nothing left in the RAM-disk work area
    assert not any(work.iterdir()), sorted(work.rglob("*"))
    out = tmp_path / case.name / "out_run"
    if case.quarantines:  # on the case's own archive copy: the file is kept and quarantined with the reason
        with sqlite3.connect(tmp_path / case.name / "archive.db") as conn:
            reasons = [r[0] for r in conn.execute("SELECT reasons FROM quarantine")]
        assert len(reasons) == 1 and made.name in reasons[0] and "corrupt" in reasons[0], reasons
    if case.kind == "error":
        for fragment in case.fragments:
            assert fragment in said, f"{fragment!r} not in:\n{said[-3000:]}"
        # refused before any work: the output folder holds nothing, half-written or not
        assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
        return
    # science outcomes: finished, with the verdict and its reason in qa.json beside a complete manifest
    qa = json.loads((out / "qa.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".part")]
    assert all((out / p["path"]).is_file() for p in manifest["products"])
    ccd, reason = case.qa
    state, text = _qa_reasons(qa, ccd)
    if case.code == EXIT_PARTIAL and ccd is not None:
        assert state == "failed", text
    else:
        assert state == "fail", text
    assert reason.lower() in text.lower(), text
    for fragment in case.fragments:
        assert fragment in said + text, f"{fragment!r} not in the messages nor qa.json"
