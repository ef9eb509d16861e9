"""cosmodm_ops.airflow."""
