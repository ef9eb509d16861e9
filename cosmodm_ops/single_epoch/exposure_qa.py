"""The QA stage of an exposure run: the per-CCD entries, the exposure summary and its checks (qa.json).

:func:`qa_document` is pure (values in, the qa.json document out); :func:`write_qa_json` writes it
atomically. The verdicts come from :mod:`cosmodm_ops.qa.checks`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cosmodm_ops.common import jsonable as _jsonable
from cosmodm_ops.common import write_json
from cosmodm_ops.config import Config
from cosmodm_ops.qa.checks import ccd_checks, exposure_checks, exposure_info, exposure_summary
from cosmodm_ops.single_epoch.inputs import ExposureInfo

__all__ = ["qa_document", "write_qa_json"]


def _ccd_entries(ccds: list[int], values: Mapping[int, dict[str, Any]], carried: Mapping[int, dict[str, Any]],
                 failed: Mapping[int, dict[str, Any]], astrom_reason: str | None, cfg: Config
                 ) -> list[dict[str, Any]]:
    """qa.json's ``ccds``: carried-over entries as they were, measured CCDs with their checks, failed CCDs."""
    out: list[dict[str, Any]] = []
    for ccd in ccds:
        if ccd in carried:
            out.append(carried[ccd])
        elif ccd in values:
            vals = dict(values[ccd])
            if astrom_reason is not None and vals.get("astrom_rms_mas") is not None:
                vals.setdefault("astrom_note", astrom_reason)
            out.append({"ccd": ccd, "state": "ok", "values": _jsonable(vals), "checks": ccd_checks(vals, cfg.qa)})
        else:
            out.append(failed[ccd])
    return out


def qa_document(ccds: list[int], values: Mapping[int, dict[str, Any]], carried: Mapping[int, dict[str, Any]],
                failed: Mapping[int, dict[str, Any]], astrom_reason: str | None, info: ExposureInfo, cfg: Config
                ) -> dict[str, Any]:
    """The qa.json document of an exposure.

    Parameters
    ----------
    ccds : list of int
        Every CCDNUM of the run (processed, failed or carried over), in order.
    values : mapping
        CCDNUM -> QA values of the CCDs measured in this run.
    carried : mapping
        CCDNUM -> qa.json entry of a CCD carried over from an earlier run.
    failed : mapping
        CCDNUM -> qa.json entry of a failed CCD.
    astrom_reason : str or None
        Why the input WCS was kept (None: SCAMP solved the exposure).
    """
    qa_ccds = _ccd_entries(ccds, values, carried, failed, astrom_reason, cfg)
    ok_values = [e.get("values", {}) for e in qa_ccds if e.get("state") == "ok"]
    nominal = cfg.survey.zeropoint_1s.get(info.band)
    summary = exposure_summary(ok_values, nominal_zp_1s=nominal, n_ccds_total=len(ccds))
    zp_reason = None
    if summary["zeropoint_1s"] is None:
        zp_reason = next((v.get("zeropoint_1s_reason") for v in ok_values if v.get("zeropoint_1s_reason")),
                         "no CCD measured a zeropoint")
    summary.update(expnum=info.expnum, band=info.band, night=info.night, camera=info.camera,
                   exptime=info.exptime, mjd_obs=info.mjd_obs,
                   astrometry="input WCS kept" if astrom_reason else "SCAMP", astrometry_reason=astrom_reason)
    checks = exposure_checks(summary, cfg.qa, zp_reason=zp_reason, astrom_reason=astrom_reason)
    summary["verdict"] = "fail" if any(c["verdict"] == "fail" for c in checks) else "pass"
    return {"exposure": _jsonable(summary), "ccds": qa_ccds, "checks": checks + exposure_info(summary)}


def write_qa_json(outdir: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write ``outdir/qa.json`` atomically (a temporary file, then a rename); returns its path."""
    return write_json(Path(outdir) / "qa.json", doc)
