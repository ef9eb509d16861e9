"""register.check_manifest on its own (no database): what it returns, and every problem listed at once."""

from __future__ import annotations

import json

import pytest

from cosmodm_ops.archive import ArchiveInputError
from cosmodm_ops.archive.register import check_manifest
from tests.unit.archive_factory import se_manifest, sha, write_bytes

pytestmark = pytest.mark.unit


def test_a_good_manifest_gives_items_in_order_with_catalogs_and_qa(tmp_path):
    raw = write_bytes(tmp_path / "raw.fits", b"raw 5001")
    m = se_manifest(tmp_path, 5001, [("raw", raw)], ccds=(1,),
                    qa={"checks": [{"name": "fwhm", "value": 1.2, "threshold": 2.0, "verdict": "pass"}]})
    checked = check_manifest(m)
    data = json.loads(m.read_text())
    assert checked.path == m.resolve() and [it.manifest_path for it in checked.items] == \
        [p["path"] for p in data["products"]]
    assert [it.sha256 for it in checked.items] == [sha(m.parent / p["path"]) for p in data["products"]]
    (cat,) = [it for it in checked.items if it.tags.kind.value == "catalog"]
    assert cat.catalog is not None and cat.catalog.n == 1 and cat.inputs == ["out/p000_image.dat"]
    assert all(it.catalog is None for it in checked.items if it is not cat)
    assert checked.qa_checks == [{"ccd": None, "name": "fwhm", "value": 1.2, "threshold": 2.0, "verdict": "pass"}]


def test_every_problem_is_listed_in_one_error(tmp_path):
    m = se_manifest(tmp_path, 5002, [], ccds=(1,))
    data = json.loads(m.read_text())
    data["products"][0]["size"] += 1
    data["products"][1]["kind"] = "mask"
    data["products"][2]["inputs"] = ["nonexistent-role"]
    m.write_text(json.dumps(data))
    (m.parent / "qa.json").write_text(json.dumps({"checks": [{"value": 1}]}))
    with pytest.raises(ArchiveInputError) as err:
        check_manifest(m)
    text = str(err.value)
    assert text.startswith("manifest not registered (nothing was):")
    assert "products[0]" in text and "the manifest says" in text
    assert "products[1]" in text and "differs from tags kind" in text
    assert "input 'nonexistent-role' is neither an input role" in text
    assert "qa.json: qa.json: checks[0] needs at least a 'name'" in text
    # the image was refused, so the catalog made from it names a product this manifest no longer has
    assert "input 'out/p000_image.dat' is neither" in text
    assert len(text.splitlines()) == 6
