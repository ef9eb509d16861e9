#!/bin/bash
# CosmoDM-Ops batch job array reprocess_campaign.manual__1.run_chunk.m2 of 5 elements (htcondor): rendered by cosmodm_ops.batch; resubmit rather than edit
set -euo pipefail
export COSMODM_JOB_NAME=reprocess_campaign.manual__1.run_chunk.m2
COSMODM_ARRAY_INDEX=${1:-}
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
