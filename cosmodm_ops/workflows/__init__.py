"""Workflows: what the DAGs do, as plain functions (no Airflow import)."""
