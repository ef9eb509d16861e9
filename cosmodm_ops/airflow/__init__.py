"""The Airflow layer: operators, triggers and task bodies. The only package that imports airflow.

Trigger class paths are stable (a restarted triggerer rebuilds from them):
``cosmodm_ops.airflow.triggers.BatchJobTrigger``, ``cosmodm_ops.airflow.triggers.TransferTrigger`` and
``cosmodm_ops.airflow.arrays.ArrayJobTrigger`` (job arrays: :class:`ArrayJobOperator`).
"""

from __future__ import annotations

from cosmodm_ops.airflow.arrays import ArrayJobOperator, ArrayJobTrigger, ArraySubmitOperator
from cosmodm_ops.airflow.operators import BatchJobOperator, TransferOperator
from cosmodm_ops.airflow.triggers import BatchJobTrigger, TransferTrigger

__all__ = ["ArrayJobOperator", "ArrayJobTrigger", "ArraySubmitOperator", "BatchJobOperator", "BatchJobTrigger", "TransferOperator",
           "TransferTrigger"]
