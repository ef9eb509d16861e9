"""qa.read_qa_checks and qa.as_number on their own: the accepted qa.json shapes and what is refused."""

from __future__ import annotations

import math

import pytest

from cosmodm_ops.archive import ArchiveInputError
from cosmodm_ops.archive.qa import as_number, read_qa_checks

pytestmark = pytest.mark.unit


def test_exposure_and_per_ccd_checks_in_both_shapes():
    doc = {"checks": [{"name": "fwhm", "value": 1.1, "threshold": "2", "verdict": "pass"}],
           "ccds": {"3": {"checks": [{"name": "nstars", "value": 50}]}}, "other": "ignored"}
    assert read_qa_checks(doc) == [
        {"ccd": None, "name": "fwhm", "value": 1.1, "threshold": 2.0, "verdict": "pass"},
        {"ccd": 3, "name": "nstars", "value": 50.0, "threshold": None, "verdict": "unknown"},
    ]
    as_list = {"ccds": [{"ccd": 4, "checks": [{"name": "depth", "value": "n/a", "verdict": "warn"}]}]}
    assert read_qa_checks(as_list) == [{"ccd": 4, "name": "depth", "value": None, "threshold": None,
                                        "verdict": "warn"}]


@pytest.mark.parametrize(("doc", "match"), [
    ([1, 2], "JSON object"),
    ({"checks": {"name": "x"}}, "must be a list"),
    ({"checks": [{"value": 1}]}, r"checks\[0\] needs at least a 'name'"),
    ({"ccds": {"c1": {"checks": []}}}, "not an integer CCD number"),
])
def test_bad_documents_name_what_is_wrong(doc, match):
    with pytest.raises(ArchiveInputError, match=match):
        read_qa_checks(doc)


def test_as_number_keeps_finite_numbers_only():
    assert [as_number(v) for v in (True, 2, "3.5", None, "x", math.nan, math.inf)] == [1.0, 2.0, 3.5, None, None,
                                                                                       None, None]
