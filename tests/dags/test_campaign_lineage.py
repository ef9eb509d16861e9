"""The campaign id in OpenLineage events: the openlineage provider's own custom-run-facet path, and the
lineage a campaign's record task reports (inputs and outputs of each registered item)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")
pytestmark = pytest.mark.airflow


def test_campaign_id_reaches_the_openlineage_run_facets(monkeypatch):
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.utils.utils import get_user_provided_run_facets
    from openlineage.client.serde import Serde

    from cosmodm_ops.airflow.lineage import CAMPAIGN_FACET, note_campaign

    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS", "cosmodm_ops.airflow.lineage.campaign_run_facets")
    clear = getattr(conf.custom_run_facets, "cache_clear", lambda: None)  # not cached under pytest
    clear()
    try:
        ti = SimpleNamespace(dag_id="reprocess_campaign", run_id="manual__2026-12-06T10:00:00", task_id="record")
        assert get_user_provided_run_facets(ti, "success") == {}  # no campaign noted for this run yet
        note_campaign(ti.run_id, 7)
        facets = get_user_provided_run_facets(ti, "success")
        assert set(facets) == {CAMPAIGN_FACET}
        doc = json.loads(Serde.to_json(facets[CAMPAIGN_FACET]))
        assert (doc["campaign"], doc["dag_id"]) == (7, "reprocess_campaign")
        other = SimpleNamespace(dag_id="nightly_ingest", run_id="scheduled__2026-12-06", task_id="register")
        assert get_user_provided_run_facets(other, "success") == {}
    finally:
        clear()


def test_record_task_reports_each_registered_item(tmp_path, monkeypatch):
    from cosmodm_ops.airflow import campaign_tasks
    from cosmodm_ops.workflows import campaign as wf
    from tests.unit.campaign_factory import build_survey, survey_env

    survey_env(tmp_path, monkeypatch)
    archive = build_survey(tmp_path)["archive"]
    row = wf.create_campaign({"survey": "demo", "stage": "single_epoch", "target_version": "v2", "site": "local",
                              "nights": "2026-11-24"})
    wf.run_local(row["id"])
    seen: list[tuple[list[int], str]] = []
    monkeypatch.setattr("cosmodm_ops.airflow.lineage.report_manifest_lineage",
                        lambda arch, ids, path: seen.append((list(ids), str(path))) or (1, len(ids)))
    campaign_tasks._chunk_lineage({"campaign": row["id"], "chunk": 0, "survey": "demo", "site": "local"})
    new = {int(r["id"]) for r in archive.find(night="2026-11-24", version="v2")}
    assert len(seen) == 2 and {i for ids, _ in seen for i in ids} == new
    assert all(p.endswith("/manifest.json") for _, p in seen)
