"""Running a campaign's chunks: one job array per chunk, each element one item.

A chunk is written as ``<work_root>/campaigns/<id>/chunk-<n>.json`` (the element commands,
their output folders, the config overrides). Every element of the chunk's array runs the same
command, ``cosmodm campaign element --chunk-file FILE``, which picks its item by
``$COSMODM_ARRAY_INDEX`` (0-based; the job-array layer sets it). So the array is one
submission whatever the chunk size, and the compute node needs no database.

:class:`LocalArrayExecutor` emulates an array with local processes (``campaign submit --local``
and the tests); the Airflow layer uses ``ArrayJobOperator``. Both give one result per element:
``{"index", "job_id", "state", "exit_code", "elapsed_s", "max_rss_mb"}`` (the seam,
:class:`ChunkExecutor`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cosmodm_ops.campaign.request import CampaignInputError

__all__ = [
    "ARRAY_INDEX_ENV",
    "ChunkExecutor",
    "LocalArrayExecutor",
    "campaign_workdir",
    "element_main",
    "item_command",
    "write_chunk_file",
]

#: The 0-based element index the job-array layer exports to each element.
ARRAY_INDEX_ENV = "COSMODM_ARRAY_INDEX"


class ChunkExecutor(Protocol):
    """Runs one chunk's array and returns one result dict per element (the seam for Airflow/Slurm)."""

    def run(self, chunk_file: Path, size: int) -> list[dict[str, Any]]:
        """Run elements ``0..size-1`` of ``chunk_file``; never raises for a failed element."""
        ...


def campaign_workdir(cfg: Any, cid: int) -> Path:
    """``<work_root>/campaigns/<id>`` (``COSMODM_WORK_ROOT`` overrides the site's ``work_root``)."""
    from cosmodm_ops.workflows.nightly import _site_path

    return _site_path(os.environ.get("COSMODM_WORK_ROOT") or cfg.site.work_root) / "campaigns" / f"{int(cid):06d}"


def _safe(key: str) -> str:
    return key.replace(":", "_")


def item_command(camp: dict[str, Any], item: dict[str, Any], cfg: Any, work: Path) -> tuple[list[str], str]:
    """The command (argument list) and output folder of one item's job.

    single_epoch: the raw file and the calibrations and reference catalog of the item's earlier
    run (its manifest's inputs); coadd: ``cosmodm coadd run`` from the archive's current images;
    cluster_followup: ``cosmodm clusters target`` with the arguments in the item's spec.
    """
    cli = shlex.split(cfg.site.batch.python)
    out = work / _safe(item["item_key"]) / f"a{int(item['attempts']) + 1}"
    spec, prev = item["spec"], item["spec"].get("prev") or {}
    version, survey, site = camp["target_version"], camp["survey"], camp["site"]
    if item["stage"] == "single_epoch":
        inputs = prev.get("inputs") or {}
        raw = inputs.get("raw") or spec.get("raw")
        calib = next((str(Path(inputs[r]).parent) for r in ("bias", "flat", "bpm") if r in inputs), None)
        refcat = inputs.get("refcat")
        if not (raw and calib and refcat):
            msg = (f"item {item['item_key']}: its earlier run does not name raw, calibration and refcat inputs "
                   f"(manifest {prev.get('manifest')}); reprocess it with the nightly DAG first")
            raise CampaignInputError(msg)
        argv = cli + ["single-epoch", "run", "--exposure", raw, "--calib", calib, "--refcat", refcat,
                      "--out", str(out), "--site", site, "--survey", survey, "--version", version,
                      "--jobs", str(cfg.site.batch.cores)]
    elif item["stage"] == "cluster_followup":  # one candidate: its arguments were fixed when the campaign was made
        argv = cli + ["clusters", "target", *spec["args"], "--out", str(out)]
    elif item["stage"] == "coadd":
        argv = cli + ["coadd", "run", "--tile", item["tile"], "--band", item["band"], "--survey", survey,
                      "--version", version, "--out", str(out)]
    else:  # the band job folders of the tile's current coadds (resolved by prepare_chunk), else a folder of them
        coadds = spec.get("coadds") or [str(work / "coadd" / item["tile"])]
        argv = cli + ["coadd", "calibrate", "--tile", item["tile"], "--bands", ",".join(spec.get("bands") or []),
                      "--coadds", *coadds, "--survey", survey, "--version", version, "--out", str(out)]
    return argv, str(out)


def write_chunk_file(camp: dict[str, Any], items: Sequence[dict[str, Any]], cfg: Any, chunk: int) -> Path:
    """Write ``chunk-<n>.json`` (atomically) for the items to run; their order is the array order."""
    work = campaign_workdir(cfg, camp["id"])
    work.mkdir(parents=True, exist_ok=True)
    elements = []
    for index, item in enumerate(items):
        argv, out = item_command(camp, item, cfg, work)
        element = {"index": index, "key": item["item_key"], "argv": argv, "out": out}
        if item["spec"].get("override"):  # an operator's "rerun with an override" (adjudication)
            element["overrides"] = item["spec"]["override"]
        elements.append(element)
    doc = {"campaign": camp["id"], "chunk": chunk, "overrides": camp["params"].get("overrides") or {},
           "elements": elements}
    path = work / f"chunk-{chunk:05d}.json"
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def _merged_overrides(*layers: dict[str, Any]) -> str:
    """``$COSMODM_CONFIG_OVERRIDES`` with each layer merged on top, in order (later wins)."""
    from cosmodm_ops.config.loader import OVERRIDES_ENV

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    merged = json.loads(os.environ.get(OVERRIDES_ENV) or "{}")
    for layer in layers:
        merged = merge(merged, layer or {})
    return json.dumps(merged)


def element_main(chunk_file: str, index: int | None = None) -> int:
    """Run one element of a chunk (``cosmodm campaign element``): its item's command, logged.

    stdout and stderr go to ``<out>/element.log`` (the tail becomes the item's diagnostics on failure);
    the exit code is the command's. Config overrides: the site's environment, then the campaign's,
    then the element's own (a rerun decided with an override).
    """
    from cosmodm_ops.config.loader import OVERRIDES_ENV

    doc = json.loads(Path(chunk_file).read_text())
    i = int(os.environ[ARRAY_INDEX_ENV]) if index is None else int(index)
    element = doc["elements"][i]
    out = Path(element["out"])
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env[OVERRIDES_ENV] = _merged_overrides(doc.get("overrides") or {}, element.get("overrides") or {})
    with open(out / "element.log", "wb") as log:
        rc = subprocess.run(element["argv"], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.stderr.write(log_tail(out))
    return rc


def log_tail(out: str | Path, lines: int = 15) -> str:
    """The last lines of an element's log (diagnostics)."""
    try:
        text = (Path(out) / "element.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:]) + "\n"


class LocalArrayExecutor:
    """A job array emulated with local processes (at most ``max_parallel`` at once).

    Each element is ``cosmodm campaign element --chunk-file F`` with ``COSMODM_ARRAY_INDEX`` set;
    CPU seconds per element come from ``os.wait4`` (the element's whole process tree).
    """

    def __init__(self, max_parallel: int = 1, cli: Sequence[str] | None = None) -> None:
        self.max_parallel = max(1, int(max_parallel))
        # the element entry point without the whole ``cosmodm`` parser (its groups import the archive)
        self.cli = list(cli) if cli else [sys.executable, "-m", "cosmodm_ops.campaign.execute"]

    def run(self, chunk_file: Path, size: int) -> list[dict[str, Any]]:
        pending = list(range(size))
        running: dict[int, tuple[int, float]] = {}
        results: list[dict[str, Any]] = []
        while pending or running:
            while pending and len(running) < self.max_parallel:
                i = pending.pop(0)
                env = dict(os.environ, **{ARRAY_INDEX_ENV: str(i)})
                proc = subprocess.Popen([*self.cli, "--chunk-file", str(chunk_file)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                running[proc.pid] = (i, time.monotonic())
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            i, t0 = running.pop(pid)
            rc = os.waitstatus_to_exitcode(status)
            results.append({"index": i, "job_id": f"local-{pid}", "state": "completed" if rc == 0 else "failed",
                            "exit_code": rc, "elapsed_s": round(time.monotonic() - t0, 3),
                            "max_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
                            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)})
        return sorted(results, key=lambda r: r["index"])


if __name__ == "__main__":  # ``python -m cosmodm_ops.campaign.execute --chunk-file F`` (= cosmodm campaign element)
    import argparse

    _p = argparse.ArgumentParser(prog="cosmodm campaign element")
    _p.add_argument("--chunk-file", required=True)
    _p.add_argument("--index", type=int, default=None)
    _a = _p.parse_args()
    sys.exit(element_main(_a.chunk_file, _a.index))
