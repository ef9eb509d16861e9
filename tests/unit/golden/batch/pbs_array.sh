#!/bin/bash
#PBS -N reprocess_campaign.manual__1.run_chunk.m2
#PBS -J 0-4%2
#PBS -o /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.^array_index^.out
#PBS -e /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.^array_index^.err
#PBS -l select=1:ncpus=2:mem=3072mb
#PBS -l walltime=00:30:00
#PBS -q cosmo
# CosmoDM-Ops batch job array reprocess_campaign.manual__1.run_chunk.m2 of 5 elements (pbs pro): rendered by cosmodm_ops.batch; resubmit rather than edit
set -euo pipefail
export COSMODM_JOB_NAME=reprocess_campaign.manual__1.run_chunk.m2
COSMODM_ARRAY_INDEX=${PBS_ARRAY_INDEX:-}
case "$COSMODM_ARRAY_INDEX" in ""|*[!0-9]*) echo "cosmodm: no array index (got '$COSMODM_ARRAY_INDEX')" >&2; exit 65;; esac
export COSMODM_ARRAY_INDEX
export COSMODM_CAMPAIGN=7
cd -- /scratch/cosmodm/work/jobs
COSMODM_RAMDISK=/dev/shm/cosmodm/reprocess_campaign.manual__1.run_chunk.m2."$COSMODM_ARRAY_INDEX"
export COSMODM_RAMDISK
mkdir -p -- "$COSMODM_RAMDISK"
trap 'rm -rf -- "$COSMODM_RAMDISK"' EXIT
set +e
cosmodm campaign run-item --chunk 'c 2'
rc=$?
if [ "$rc" -ne 0 ]; then echo "cosmodm: command exited with code $rc" >&2; fi
exit "$rc"
