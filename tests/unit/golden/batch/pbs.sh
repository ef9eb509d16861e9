#!/bin/bash
#PBS -N nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2
#PBS -o /scratch/cosmodm/work/jobs/.cosmodm/nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2.out
#PBS -e /scratch/cosmodm/work/jobs/.cosmodm/nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2.err
#PBS -l select=2:ncpus=8:mem=7680mb
#PBS -l place=scatter
#PBS -l walltime=01:35:00
#PBS -q cosmo
#PBS -A des
# qos=normal ignored: PBS has no QOS
# CosmoDM-Ops batch job nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2 (pbs pro): rendered by cosmodm_ops.batch; resubmit rather than edit
set -euo pipefail
export COSMODM_JOB_NAME=nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2
export COSMODM_SITE=example-hpc
export OMP_NUM_THREADS=8
export TRICKY='a b'"'"'c"$d\e'
cd -- /scratch/cosmodm/work/jobs
COSMODM_RAMDISK=/dev/shm/cosmodm/nightly_ingest.manual__2026-11-25T22_00_00.single_epoch.m3.t2
export COSMODM_RAMDISK
mkdir -p -- "$COSMODM_RAMDISK"
trap 'rm -rf -- "$COSMODM_RAMDISK"' EXIT
set +e
cosmodm single-epoch run --exposure /data/raw/c4d_261125_220102_ori.fits.fz --out /scratch/cosmodm/work/00001234 --note 'it'"'"'s a "test"; $HOME `x`'
rc=$?
if [ "$rc" -ne 0 ]; then echo "cosmodm: command exited with code $rc" >&2; fi
exit "$rc"
