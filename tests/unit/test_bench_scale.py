"""The bookkeeping of the scale benchmarks (bench/bench_scale.py, bench/bench_batch.py); the runs need services."""

from __future__ import annotations

import pytest

from bench import bench_batch, bench_scale

pytestmark = pytest.mark.unit


def test_parse_sizes_sorts_and_refuses_bad_values():
    assert bench_scale.parse_sizes("10000, 1000,1000") == [1000, 10000]
    for bad in ("", "0,10", "ten", "1000;10000"):
        with pytest.raises(SystemExit, match="comma-separated positive integers"):
            bench_scale.parse_sizes(bad)


def test_rows_delta_counts_only_tables_that_grew_per_item():
    before = {"task_instance": 5, "xcom": 10, "log": 3, "dag": 2}
    after = {"task_instance": 25, "xcom": 50, "log": 3, "dag": 2, "celery_taskmeta": 20}
    added, per_item = bench_scale.rows_delta(before, after, 1000)
    assert added == {"celery_taskmeta": 20, "task_instance": 20, "xcom": 40}
    assert per_item == {"celery_taskmeta": 0.02, "task_instance": 0.02, "xcom": 0.04}


def test_rss_growth_is_large_over_small_per_process():
    small = {"scheduler": 200.0, "triggerer": 300.0, "gone": 50.0, "zero": 0.0, "unread": None, "later": 9.0}
    large = {"scheduler": 210.0, "triggerer": 600.0, "zero": 5.0, "unread": 7.0, "later": None}
    assert bench_scale.rss_growth(small, large) == {"scheduler": 1.05, "triggerer": 2.0}


def test_dag_source_has_one_dag_per_size_and_compiles():
    src = bench_scale.dag_source([1000, 10000])
    compile(src, "bench_scale_dags.py", "exec")
    assert 'dag_id="bench_scale_1000"' in src and 'dag_id="bench_scale_10000"' in src
    assert "range(0, 10000, C)" in src


def test_set_conf_line_replaces_or_appends():
    conf = "ClusterName=x\nJobAcctGatherFrequency=task=1\nMaxJobCount=20000\n"
    out = bench_batch.set_conf_line(conf, "JobAcctGatherFrequency", "task=0")
    assert out == "ClusterName=x\nJobAcctGatherFrequency=task=0\nMaxJobCount=20000\n"
    assert bench_batch.set_conf_line("A=1\n", "B", "2") == "A=1\nB=2\n"


def test_parse_end_times_skips_noise():
    text = "101 1700000000.25\n102_3 1700000001.5\n102_4 \nbad line here\n103 notanumber\n"
    assert bench_batch.parse_end_times(text) == {"101": 1700000000.25, "102_3": 1700000001.5}


def test_summarize_counts_completed_rates_and_the_last_gap():
    res = {"noticed": {"a_0": 1100.0, "a_1": 1104.0}, "states": {"a_0": "completed", "a_1": "failed"},
           "commands": 20, "connects": 1, "rss_base_mb": 100.0, "rss_peak_mb": 102.0, "cpu_s": 2.0,
           "max_loop_stall_s": 0.01, "timed_out": 0}
    ends = {"a_0": 1098.0, "a_1": 1101.0}
    out = bench_batch.summarize(res, ["a_0", "a_1", "a_2"], ends, t_go=1000.0, sleep_s=100, poll=5.0)
    assert out["completed"] == 1
    assert out["commands_per_s"] == pytest.approx(20 / 104, abs=1e-3)
    assert out["commands_per_s_per_job"] == pytest.approx(20 / 104 / 3, abs=1e-5)
    assert out["latency_median_s"] == 2.5 and out["latency_max_s"] == 3.0
    assert out["last_end_to_last_noticed_s"] == 3.0
    assert out["last_end_to_last_noticed_over_ideal"] == 0.6
    assert out["makespan_over_ideal"] == 1.04
    assert out["triggerer_rss_per_job_kb"] == pytest.approx(2 * 1024 / 3, abs=0.1)


def test_vm_hwm_mb_reads_the_peak_line():
    status = "Name:\tairflow\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert bench_scale.vm_hwm_mb(status) == 200.0
    assert bench_scale.vm_hwm_mb("Name:\tzombie\n") is None
