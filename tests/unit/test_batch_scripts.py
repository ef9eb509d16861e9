"""Rendered submit scripts against golden files (byte for byte), and what the scripts really do.

``UPDATE_GOLDEN=1 pytest tests/unit/test_batch_scripts.py`` rewrites the golden files; review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from cosmodm_ops.batch import SCHEDULERS, JobSpec, get_scheduler
from cosmodm_ops.batch.script import directive_value, memory_mb, walltime_hms

GOLDEN = Path(__file__).parent / "golden" / "batch"

#: One spec with every field set, including values that need quoting.
SPEC = JobSpec(
    name="nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2",
    command=["cosmodm", "single-epoch", "run", "--exposure", "/data/raw/c4d_261125_220102_ori.fits.fz",
             "--out", "/scratch/cosmodm/work/00001234", "--note", "it's a \"test\"; $HOME `x`"],
    workdir="/scratch/cosmodm/work/jobs",
    nodes=2, cores=8, memory_gb=7.5, walltime_min=95,
    partition="cosmo", account="des", qos="normal",
    env={"OMP_NUM_THREADS": "8", "COSMODM_SITE": "example-hpc", "TRICKY": "a b'c\"$d\\e"},
    ramdisk="/dev/shm/cosmodm",
)
CONDOR_SPEC = dataclasses.replace(SPEC, nodes=1)


def _cases():
    for system in sorted(SCHEDULERS):
        if system == "htcondor":
            yield system, "htcondor.sub", lambda s: s.render_script(CONDOR_SPEC)
            yield system, "htcondor.sh", lambda s: s.render_job_script(CONDOR_SPEC)
        else:
            yield system, f"{system}.sh", lambda s: s.render_script(SPEC)


@pytest.mark.parametrize("system,golden,render", list(_cases()), ids=[c[1] for c in _cases()])
def test_script_matches_golden(system, golden, render):
    text = render(get_scheduler(system))
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{golden} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("system", sorted(set(SCHEDULERS) - {"htcondor"}))
def test_scripts_are_valid_bash_with_logs_under_cosmodm(system):
    text = get_scheduler(system).render_script(SPEC)
    assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0
    assert text.startswith("#!/bin/bash\n")
    if system != "local":  # local: the supervisor redirects
        assert f"{SPEC.workdir}/.cosmodm/{SPEC.name}.out" in text and f"{SPEC.workdir}/.cosmodm/{SPEC.name}.err" in text


def test_script_runs_command_verbatim_with_env_ramdisk_and_exit_code(tmp_path):
    """Run the rendered body for real: quoting survives, RAM disk made and removed, exit code kept."""
    probe = tmp_path / "probe.txt"
    spec = JobSpec(
        name="probe.t1",
        command=["bash", "-c", 'printf "%s|%s|%s|%s" "$1" "$TRICKY" "$COSMODM_RAMDISK" "$PWD" > "$2"; '
                 'test -d "$COSMODM_RAMDISK" && exit 65', "-", "it's a \"test\"; $HOME `x`", str(probe)],
        workdir=str(tmp_path), env={"TRICKY": "a b'c\"$d\\e"}, ramdisk=str(tmp_path / "ram"),
    )
    script = tmp_path / "job.sh"
    script.write_text(get_scheduler("slurm").render_script(spec))
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd="/")
    assert res.returncode == 65  # the command's own code, through the trap
    arg, tricky, ram, pwd = probe.read_text().split("|")
    assert arg == "it's a \"test\"; $HOME `x`" and tricky == "a b'c\"$d\\e"
    assert ram == str(tmp_path / "ram" / "probe.t1") and pwd == str(tmp_path)
    assert not Path(ram).exists() and (tmp_path / "ram").is_dir()
    assert "command exited with code 65" in res.stderr


def test_values_that_cannot_go_into_directives_are_refused():
    with pytest.raises(ValueError, match="cannot go into a batch directive"):
        get_scheduler("slurm").render_script(dataclasses.replace(SPEC, workdir="/my work"))
    with pytest.raises(ValueError, match="newline"):
        get_scheduler("local").render_script(dataclasses.replace(SPEC, env={"A": "x\n#SBATCH --mem=1"}))
    with pytest.raises(ValueError, match="parallel universe"):
        get_scheduler("htcondor").render_script(SPEC)
    with pytest.raises(ValueError, match="not allowed"):
        JobSpec(name="bad name; rm", command=["true"], workdir="/w")
    assert directive_value("partition", "cosmo-gpu") == "cosmo-gpu"


def test_units():
    assert walltime_hms(95) == "01:35:00" and walltime_hms(1500) == "25:00:00"
    assert memory_mb(7.5) == 7680 and memory_mb(0.001) == 2  # rounded up, never down


def test_resources_in_each_dialect():
    assert "#SBATCH --mem=7680M" in get_scheduler("slurm").render_script(SPEC)
    assert "#SBATCH --time=95" in get_scheduler("slurm").render_script(SPEC)
    pbs = get_scheduler("pbs").render_script(SPEC)
    assert "#PBS -l select=2:ncpus=8:mem=7680mb" in pbs and "#PBS -l walltime=01:35:00" in pbs
    torque = get_scheduler("pbs", flavor="torque").render_script(SPEC)
    assert "#PBS -l nodes=2:ppn=8,mem=7680mb" in torque
    ll = get_scheduler("loadleveler").render_script(SPEC)
    assert "# @ resources = ConsumableCpus(8) ConsumableMemory(7680 mb)" in ll and ll.index("# @ queue") > ll.index(
        "# @ wall_clock_limit = 01:35:00")
    sub = get_scheduler("htcondor").render_script(CONDOR_SPEC)
    assert "request_memory = 7680" in sub and "+CosmodmWalltime = 5700" in sub
