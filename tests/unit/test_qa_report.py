from __future__ import annotations

from pathlib import Path

from cosmodm_ops.qa.report import ExposureQA, write_night_report


def test_report_lists_verdicts_and_writes_plots(tmp_path: Path):
    exps = [
        ExposureQA(2, "r", True, [], {"fwhm_arcsec": 1.1, "sky_level": 900.0, "zeropoint": 31.2},
                   [{"ccd": 25, "astrometric_rms_mas": 12.0}, {"ccd": 26, "astrometric_rms_mas": 15.0}]),
        ExposureQA(1, "g", False, ["zeropoint_deficit=0.8 (threshold 0.3)"],
                   {"fwhm_arcsec": 1.3, "sky_level": 400.0, "zeropoint": 30.4}, []),
    ]
    index = write_night_report("2026-11-23", exps, tmp_path / "rep")
    page = index.read_text()
    assert "1</b> accepted" in page and "1</b> quarantined" in page
    assert page.index("<td>1</td>") < page.index("<td>2</td>")  # sorted by exposure
    assert "zeropoint_deficit=0.8" in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 2  # self-contained
    for png in ("exposures.png", "astrometry.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not (tmp_path / "rep" / "spread_model.png").exists()  # no catalogs given


def test_report_escapes_hostile_text(tmp_path: Path):
    exps = [ExposureQA(3, "<b>", False, ["<script>alert(1)</script>"], {}, [])]
    page = write_night_report("2026-11-23", exps, tmp_path).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
