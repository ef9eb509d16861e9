#!/bin/bash
# @ job_name = reprocess_campaign.manual__1.run_chunk.m2
# @ shell = /bin/bash
# @ initialdir = /scratch/cosmodm/work/jobs
# @ job_type = serial
# @ resources = ConsumableCpus(2) ConsumableMemory(3072 mb)
# @ wall_clock_limit = 00:30:00
# @ class = cosmo
# @ step_name = e0
# @ output = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.0.out
# @ error = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.0.err
# @ environment = COSMODM_ARRAY_INDEX=0
# @ queue
# @ step_name = e1
# @ output = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.1.out
# @ error = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.1.err
# @ environment = COSMODM_ARRAY_INDEX=1
# @ queue
# @ step_name = e2
# @ output = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.2.out
# @ error = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.2.err
# @ environment = COSMODM_ARRAY_INDEX=2
# @ dependency = (e0 >= 0)
# @ queue
# @ step_name = e3
# @ output = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.3.out
# @ error = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.3.err
# @ environment = COSMODM_ARRAY_INDEX=3
# @ dependency = (e1 >= 0)
# @ queue
# @ step_name = e4
# @ output = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.4.out
# @ error = /scratch/cosmodm/work/jobs/.cosmodm/reprocess_campaign.manual__1.run_chunk.m2.4.err
# @ environment = COSMODM_ARRAY_INDEX=4
# @ dependency = (e2 >= 0)
# @ queue
# CosmoDM-Ops batch job array reprocess_campaign.manual__1.run_chunk.m2 of 5 elements (loadleveler): rendered by cosmodm_ops.batch; resubmit rather than edit
set -euo pipefail
export COSMODM_JOB_NAME=reprocess_campaign.manual__1.run_chunk.m2
COSMODM_ARRAY_INDEX=${COSMODM_ARRAY_INDEX:-}
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
