"""Stage budgets (cores, memory, walltime, memory retries) and the memory-kill verdict: pure functions."""

from __future__ import annotations

import pytest

from cosmodm_ops.batch.budget import EXIT_OUT_OF_MEMORY, memory_verdict, resources_for_try
from cosmodm_ops.config import load_config
from cosmodm_ops.config.schema import BatchConfig

STAGES = {"single_epoch": {"cores": 8, "memory_gb": 10, "walltime_min": 30, "retry_memory_factor": 2,
                           "max_memory_gb": 30}}


def _batch(**kw) -> BatchConfig:
    return BatchConfig.model_validate({"cores": 2, "memory_gb": 4, "walltime_min": 60, **kw})


def test_stage_budget_overrides_site_defaults_and_memory_grows_to_the_cap():
    b = _batch(stages=STAGES)
    tries = [resources_for_try(b, "single_epoch", n) for n in (1, 2, 3, 4)]
    assert [t.memory_gb for t in tries] == [10.0, 20.0, 30.0, 30.0]
    assert [t.next_memory_gb for t in tries] == [20.0, 30.0, 30.0, 30.0]
    assert [t.walltime_min for t in tries] == [30, 45, 67, 101]
    assert {t.cores for t in tries} == {8} and tries[0].max_memory_gb == 30.0


def test_unknown_stage_and_explicit_values():
    b = _batch(stages=STAGES)
    other = resources_for_try(b, "coadd", 2)
    assert (other.cores, other.memory_gb, other.walltime_min, other.max_memory_gb) == (2, 6.0, 90, 16.0)
    explicit = resources_for_try(b, "single_epoch", 1, cores=1, memory_gb=3.0, walltime_min=5)
    assert (explicit.cores, explicit.memory_gb, explicit.walltime_min) == (1, 3.0, 5)


def test_a_short_walltime_still_grows_on_retry():
    # int(1 x 1.5) = 1: without the floor a job over a 1-minute walltime timed out again on every retry
    b = _batch()
    assert [resources_for_try(b, None, n, walltime_min=1).walltime_min for n in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert [resources_for_try(b, None, n, walltime_min=2).walltime_min for n in (1, 2, 3)] == [2, 3, 4]
    assert [resources_for_try(b, None, n, walltime_min=5, walltime_scale=1.0).walltime_min for n in (1, 3)] == [5, 5]


def test_factor_one_means_no_memory_retry():
    b = _batch(stages={"coadd": {"memory_gb": 8, "retry_memory_factor": 1}})
    r = resources_for_try(b, "coadd", 1)
    assert r.memory_gb == r.next_memory_gb == 8.0


def test_budget_from_the_site_yaml_layers(monkeypatch):
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '{"site": {"queue": "q1", "batch": {"stages": '
                       '{"single_epoch": {"memory_gb": 1.5, "max_memory_gb": 2.5}}, "memory_limit": "ulimit"}}}')
    cfg = load_config("demo", site="local")
    assert cfg.site.queue == "q1" and cfg.site.batch.memory_limit == "ulimit"
    r = resources_for_try(cfg.site.batch, "single_epoch", 3)
    assert (r.memory_gb, r.max_memory_gb) == (2.5, 2.5)


def test_bad_budget_names_the_key(monkeypatch):
    from cosmodm_ops.config import ConfigError

    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '{"site": {"batch": {"stages": {"single_epoch": {"memory": 3}}}}}')
    with pytest.raises(ConfigError, match=r"site\.batch\.stages\.single_epoch\.memory"):
        load_config("demo", site="local")


@pytest.mark.parametrize("state,code,rss,expected", [
    ("out_of_memory", None, 1900.0, "OUT_OF_MEMORY"),
    ("failed", EXIT_OUT_OF_MEMORY, 400.0, "ulimit -v 2048"),
    ("failed", 137, 1900.0, "FAILED 0:9"),            # Slurm without cgroups: SIGKILL near the limit
    ("failed", 137, 300.0, None),                     # SIGKILL far below it: someone killed it
    ("failed", 1, 2047.0, None),
    ("completed", 0, 2047.0, None),
    ("timeout", None, 2047.0, None),
])
def test_memory_verdict(state, code, rss, expected):
    verdict = memory_verdict(state, code, rss, 2.0)
    assert (verdict is None) if expected is None else (expected in verdict), verdict


def test_site_queue_reads_the_site_file_and_overrides(monkeypatch, tmp_path):
    from cosmodm_ops.config import site_queue

    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "a.yaml").write_text("site:\n  name: a\n  queue: site_a\n")
    (tmp_path / "sites" / "b.yaml").write_text("site:\n  name: b\n")
    monkeypatch.delenv("COSMODM_CONFIG_OVERRIDES", raising=False)
    assert site_queue("a", tmp_path) == "site_a" and site_queue("b", tmp_path) is None
    assert site_queue("missing", tmp_path) is None and site_queue("../etc", tmp_path) is None
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '{"site": {"queue": "other"}}')
    assert site_queue("b", tmp_path) == "other"
