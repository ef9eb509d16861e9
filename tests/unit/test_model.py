from __future__ import annotations

import pytest

from cosmodm_ops.model import ProductKind, Stage, TagError, Tags, validate_token


def _tags(**kw):
    base = {"survey": "des", "camera": "decam", "stage": "single_epoch", "version": "v1", "kind": "image",
                "night": "2026-11-24", "expnum": 123456, "ccd": 5, "band": "r"}
    base.update(kw)
    return Tags(**base)


def test_tags_round_trip_and_types():
    t = _tags(expnum="000123456")
    assert t.expnum == 123456 and t.stage is Stage.SINGLE_EPOCH and t.kind is ProductKind.IMAGE
    assert Tags.from_dict(t.to_dict()) == t
    assert t.to_dict()["kind"] == "image"


@pytest.mark.parametrize(
    "field,value",
    [("survey", "../etc"), ("band", "r/g"), ("tile", ".."), ("version", "v1\nrm"), ("band", "-rf"),
     ("survey", ""), ("tile", "a" * 65), ("night", "2026-13-01"), ("night", "20261124"),
     ("expnum", -1), ("ccd", "x"), ("camera", "hsc"), ("kind", "movie"), ("stage", "final"),
     ("version", "a..b"), ("band", "r\x00")],
)
def test_tags_refuse_path_escapes_and_bad_values(field, value):
    with pytest.raises(TagError) as err:
        _tags(**{field: value})
    assert field in str(err.value) or "tag" in str(err.value)


def test_unknown_tag_in_dict_is_named():
    d = _tags().to_dict() | {"colour": "red"}
    with pytest.raises(TagError, match="colour"):
        Tags.from_dict(d)


def test_validate_token_accepts_realistic_names():
    for name in ("DES0204-0500", "v1.2.3", "Y6A1_COADD", "c4d_170316_062107", "gpc1", "SPT-CLJ0509-5342"):
        assert validate_token("x", name) == name
