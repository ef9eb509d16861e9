"""Completeness and purity against truth, on constructed catalogues with exact expected numbers."""

from __future__ import annotations

import numpy as np
import pytest

from cosmodm_ops.qa.completeness import (
    completeness_purity,
    crossing_magnitude,
    match_one_to_one,
    plot_completeness,
    read_truth,
)

pytestmark = pytest.mark.unit

RA0, DEC0 = 150.0, 2.0
ARCSEC = 1.0 / 3600.0
EDGES = np.arange(18.0, 23.01, 0.5)
#: detected truth objects per 0.5-mag bin (10 truth objects in each): 80 of 100
DETECTED = [10, 10, 10, 10, 10, 9, 8, 7, 4, 2]


def _truth() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """100 objects on a 10" grid; object i in bin i // 10 (mag at the bin centre); even rows stars."""
    i = np.arange(100)
    ra = RA0 + (i % 10) * 10 * ARCSEC / np.cos(np.radians(DEC0))
    dec = DEC0 + (i // 10) * 10 * ARCSEC
    mag = 18.25 + 0.5 * (i // 10)
    return ra, dec, mag, (i % 2 == 0)


def _detections() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first DETECTED[k] objects of bin k, 0.3" off and 0.01 mag faint; 5 spurious at 22.75 between grid points."""
    ra, dec, mag, star = _truth()
    sel = np.concatenate([np.arange(10 * k, 10 * k + d) for k, d in enumerate(DETECTED)])
    d_ra, d_dec, d_mag = ra[sel], dec[sel] + 0.3 * ARCSEC, mag[sel] + 0.01
    spread = np.where(star[sel], 0.0005, 0.01)
    s_ra = RA0 + (np.arange(5) + 0.5) * 10 * ARCSEC / np.cos(np.radians(DEC0))
    s_dec = np.full(5, DEC0 + 5 * ARCSEC)
    return (np.concatenate([d_ra, s_ra]), np.concatenate([d_dec, s_dec]), np.concatenate([d_mag, np.full(5, 22.75)]),
            np.concatenate([spread, np.full(5, 0.02)]))


def test_completeness_and_purity_by_bin_are_exact():
    ra, dec, mag, _ = _truth()
    d_ra, d_dec, d_mag, _ = _detections()
    before = d_mag.copy()
    res = completeness_purity(d_ra, d_dec, d_mag, ra, dec, mag, edges=EDGES, radius_arcsec=1.0)
    np.testing.assert_array_equal(d_mag, before)  # inputs are not modified
    np.testing.assert_array_equal(res.n_true, np.full(10, 10))
    np.testing.assert_array_equal(res.n_true_matched, DETECTED)
    np.testing.assert_allclose(res.completeness, np.array(DETECTED) / 10.0)
    assert res.n_matched == 80 and res.n_true_matched.sum() / res.n_true.sum() == pytest.approx(0.8)
    # purity by measured magnitude: every bin pure except the faintest, with the 5 spurious detections
    np.testing.assert_array_equal(res.n_detected, [*DETECTED[:-1], 2 + 5])
    np.testing.assert_allclose(res.purity, [1.0] * 9 + [2 / 7])
    assert res.n_detected_matched.sum() / res.n_detected.sum() == pytest.approx(80 / 85)
    # 90%: between 20.75 (0.9, not below) and 21.25 (0.8); 50%: between 21.75 (0.7) and 22.25 (0.4)
    assert res.mag90 == pytest.approx(20.75)
    assert res.mag50 == pytest.approx(21.75 + 0.5 * (0.7 - 0.5) / (0.7 - 0.4))
    assert res.median_sep_arcsec == pytest.approx(0.3, abs=1e-6)
    assert res.classification is None
    d = res.to_dict()
    assert d["completeness"][5] == pytest.approx(0.9) and d["n_true"] == [10] * 10


def test_star_galaxy_classification_from_spread_model():
    ra, dec, mag, star = _truth()
    d_ra, d_dec, d_mag, spread = _detections()
    spread[[0, 1]] = [0.01, 0.0005]  # in bin 0: a true star called a galaxy, a true galaxy called a star
    res = completeness_purity(d_ra, d_dec, d_mag, ra, dec, mag, edges=EDGES, true_is_star=star,
                              spread_model=spread, star_max=0.003)
    c = res.classification
    # bin 0: 5 stars and 5 galaxies matched, one of each misclassified
    assert c["star_completeness"][0] == pytest.approx(4 / 5) and c["galaxy_completeness"][0] == pytest.approx(4 / 5)
    assert c["star_purity"][0] == pytest.approx(4 / 5) and c["galaxy_purity"][0] == pytest.approx(4 / 5)
    np.testing.assert_allclose(c["star_completeness"][1:5], 1.0)
    # bin 9: truth objects 90, 91 detected (a star and a galaxy); the spurious ones do not enter the classification
    assert c["star_purity"][9] == 1.0 and c["galaxy_purity"][9] == 1.0


def test_a_detection_beyond_the_radius_is_not_matched_and_matching_is_one_to_one():
    ra = np.array([RA0, RA0 + 20 * ARCSEC])
    dec = np.array([DEC0, DEC0])
    # truth 0: two detections, 0.4" and 0.7" away -> the nearer one; truth 1: one detection 1.1" away -> none
    d_ra = np.array([RA0, RA0, RA0 + 20 * ARCSEC])
    d_dec = np.array([DEC0 + 0.7 * ARCSEC, DEC0 - 0.4 * ARCSEC, DEC0 + 1.1 * ARCSEC])
    i_det, i_true, sep = match_one_to_one(d_ra, d_dec, ra, dec, 1.0)
    assert i_det.tolist() == [1] and i_true.tolist() == [0] and sep[0] == pytest.approx(0.4, abs=1e-6)
    res = completeness_purity(d_ra, d_dec, np.array([20.1, 20.2, 20.3]), ra, dec, np.array([20.2, 20.2]),
                              edges=np.array([20.0, 20.5]), radius_arcsec=1.0)
    assert res.completeness.tolist() == [0.5] and res.purity[0] == pytest.approx(1 / 3)
    wider = completeness_purity(d_ra, d_dec, np.array([20.1, 20.2, 20.3]), ra, dec, np.array([20.2, 20.2]),
                                edges=np.array([20.0, 20.5]), radius_arcsec=1.2)
    assert wider.completeness.tolist() == [1.0]


def test_relative_magnitudes_are_aligned_to_the_truth_when_asked():
    ra, dec, mag, _ = _truth()
    d_ra, d_dec, d_mag, _ = _detections()
    res = completeness_purity(d_ra, d_dec, d_mag - 5.0, ra, dec, mag, edges=EDGES, align_mags=True)
    assert res.mag_offset == pytest.approx(5.0 - 0.01)
    np.testing.assert_allclose(res.purity, [1.0] * 9 + [2 / 7])
    unaligned = completeness_purity(d_ra, d_dec, d_mag - 5.0, ra, dec, mag, edges=EDGES)
    assert unaligned.n_detected.sum() == 0 and unaligned.mag_offset == 0.0  # all brighter than the bins
    np.testing.assert_allclose(unaligned.completeness, res.completeness)  # completeness uses true mags only


def test_unmeasured_magnitudes_and_bad_arguments():
    ra, dec, mag, _ = _truth()
    d_ra, d_dec, d_mag, _ = _detections()
    d_mag[:3] = 99.0
    res = completeness_purity(d_ra, d_dec, d_mag, ra, dec, mag, edges=EDGES)
    assert res.n_unmeasured == 3 and res.n_detected[0] == 7 and res.completeness[0] == 1.0
    with pytest.raises(ValueError, match="increasing"):
        completeness_purity(d_ra, d_dec, d_mag, ra, dec, mag, edges=np.array([20.0, 19.0]))
    with pytest.raises(ValueError, match="det_mag has 2 rows"):
        completeness_purity(d_ra, d_dec, d_mag[:2], ra, dec, mag, edges=EDGES)


def test_crossing_magnitude_edge_cases():
    c = np.array([20.0, 21.0, 22.0, 23.0])
    assert crossing_magnitude(c, np.array([1.0, np.nan, 0.6, 0.2]), 0.5) == pytest.approx(22.25)
    assert crossing_magnitude(c, np.array([1.0, 1.0, 0.9, 0.8]), 0.5) is None  # never falls below
    assert crossing_magnitude(c, np.array([0.4, 0.3, 0.2, 0.1]), 0.5) is None  # never above
    # a sparse bright bin dipping below the level is not the limit: the last downward crossing is
    six = np.arange(18.0, 24.0)
    assert crossing_magnitude(six, np.array([1.0, 0.85, 1.0, 0.95, 0.6, 0.3]), 0.9) == pytest.approx(21.0 + 0.05 / 0.35)


def test_read_truth_takes_the_simulator_table_and_names_what_is_missing(tmp_path):
    from cosmodm_ops.sim.objects import Catalog
    from cosmodm_ops.sim.writer import write_truth_objects

    n = 4
    cat = Catalog(np.linspace(10, 10.1, n), np.full(n, -5.0), {"g": np.array([20.0, 21, 22, 99]),
                                                                  "r": np.full(n, 19.5), "J": np.full(n, 18.0)},
                  np.array([True, False, True, False]), np.zeros(n), np.ones(n), np.zeros(n))
    path = write_truth_objects(tmp_path / "objects.fits", cat)
    t = read_truth(path)
    assert len(t) == n and set(t.mags) == {"g", "r", "j"} and t.is_star.tolist() == [True, False, True, False]
    assert np.isnan(t.mags["g"][3]) and t.subset(t.is_star).ra.tolist() == [10.0, t.ra[2]]
    import fitsio

    bad = tmp_path / "bad.fits"
    fitsio.write(str(bad), np.zeros(2, dtype=[("ra", "f8"), ("mag_r", "f4")]))
    with pytest.raises(ValueError, match=r"bad.fits HDU 1: no column\(s\) \['dec'\]"):
        read_truth(bad)
    with pytest.raises(ValueError, match="cannot read the truth catalogue"):
        read_truth(tmp_path / "absent.fits")


def test_plot(tmp_path):
    ra, dec, mag, _ = _truth()
    d_ra, d_dec, d_mag, _ = _detections()
    res = completeness_purity(d_ra, d_dec, d_mag, ra, dec, mag, edges=EDGES)
    png = plot_completeness({"r": res, "i": res}, tmp_path / "c.png", "T r, i")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
