from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cosmodm_ops.config import ConfigError, available, config_dir, config_hash, load_config


@pytest.mark.parametrize("survey,site", [("des", "local"), ("demo", "local"), ("cfhtls", "example-hpc"),
                                         ("ps1", "loopback-slurm")])
def test_every_shipped_config_loads(survey, site):
    cfg = load_config(survey, site=site)
    assert cfg.survey.name == survey
    assert cfg.camera.name == cfg.survey.camera


def test_shipped_sets():
    assert {"decam", "decam-mini", "megacam", "gpc1"} <= set(available("cameras"))
    assert {"local", "example-hpc"} <= set(available("sites"))
    mini = load_config("demo").camera
    assert (len(mini.ccds), mini.ccd_nx, mini.ccd_ny, mini.amps_per_ccd) == (4, 512, 1024, 2)


def test_layers_merge_in_order_and_overrides_win():
    cfg = load_config("demo", site="example-hpc", overrides={"site": {"batch": {"cores": 7}}})
    assert cfg.site.batch.system == "slurm" and cfg.site.batch.cores == 7 and cfg.site.batch.partition == "cosmo"
    assert cfg.camera.name == "decam-mini"  # survey's camera
    assert load_config("demo", camera="decam").camera.name == "decam"


def test_hash_is_stable_and_sensitive():
    a, b = load_config("demo"), load_config("demo")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config("demo", overrides={"qa": {"max_seeing_arcsec": 1.5}}))


@pytest.fixture
def tmp_configs(tmp_path: Path) -> Path:
    dst = tmp_path / "configs"
    shutil.copytree(config_dir(), dst)
    return dst


def test_bad_value_names_file_key_value_and_expectation(tmp_configs: Path):
    site = tmp_configs / "sites" / "local.yaml"
    site.write_text(site.read_text().replace("cores: 2", "cores: lots"))
    with pytest.raises(ConfigError) as err:
        load_config("demo", directory=tmp_configs)
    text = str(err.value)
    assert str(site) in text and "site.batch.cores" in text and "'lots'" in text and "integer" in text


def test_typo_key_is_refused(tmp_configs: Path):
    cam = tmp_configs / "cameras" / "decam-mini.yaml"
    cam.write_text(cam.read_text().replace("pixel_scale:", "pixel_scal:"))
    with pytest.raises(ConfigError) as err:
        load_config("demo", directory=tmp_configs)
    assert str(cam) in str(err.value) and "camera.pixel_scal" in str(err.value)


def test_broken_yaml_names_line(tmp_configs: Path):
    survey = tmp_configs / "surveys" / "demo.yaml"
    survey.write_text("survey:\n  name: demo\n  bands: [g, r\n")
    with pytest.raises(ConfigError, match=r"demo.yaml: line \d+"):
        load_config("demo", directory=tmp_configs)


def test_missing_and_hostile_names(tmp_configs: Path):
    with pytest.raises(ConfigError, match="available sites"):
        load_config("demo", site="nowhere", directory=tmp_configs)
    with pytest.raises(ConfigError, match="not allowed"):
        load_config("../../etc/passwd", directory=tmp_configs)


def test_environment_overrides_merge_after_the_site(monkeypatch: pytest.MonkeyPatch):
    """``$COSMODM_CONFIG_OVERRIDES`` (JSON) is merged after the site file and before the caller's overrides."""
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES",
                       '{"site": {"batch": {"python": "/opt/venv/bin/cosmodm", "cores": 3}, '
                       '"ramdisk": {"path": "/scratch/ram"}}}')
    cfg = load_config("demo", site="loopback-slurm")
    assert (cfg.site.batch.python, cfg.site.ramdisk.path, cfg.site.batch.system) == (
        "/opt/venv/bin/cosmodm", "/scratch/ram", "slurm")
    assert load_config("demo", site="loopback-slurm", overrides={"site": {"batch": {"cores": 5}}}).site.batch.cores == 5
    assert cfg.site.batch.cores == 3


def test_environment_overrides_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '{"site": {"batch": {"cores": 0}}}')
    with pytest.raises(ConfigError, match=r"\$COSMODM_CONFIG_OVERRIDES: key 'site.batch.cores' = 0"):
        load_config("demo")
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '["not", "a", "mapping"]')
    with pytest.raises(ConfigError, match="expected a JSON mapping"):
        load_config("demo")
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", "{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("demo")


def test_config_pools_gives_one_pool_per_site_from_max_concurrent(capsys):
    import json

    from cosmodm_ops.cli import main

    assert main(["config", "pools"]) == 0
    pools = json.loads(capsys.readouterr().out)
    assert set(pools) == {"cosmodm_example-hpc", "cosmodm_local", "cosmodm_loopback-slurm"}
    assert (pools["cosmodm_example-hpc"]["slots"], pools["cosmodm_local"]["slots"]) == (50, 2)
    assert all(p["include_deferred"] for p in pools.values())
    assert main(["config", "pools", "--site", "nowhere"]) == 65
    assert "available sites: example-hpc, local, loopback-slurm" in capsys.readouterr().err
