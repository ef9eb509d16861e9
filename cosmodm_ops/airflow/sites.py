"""Site plumbing for the Airflow layer: site config, command runners and schedulers per site.

Only names travel through Airflow (site name, connection id); keys and host keys stay in
the Airflow connection and are resolved where the command runs.
"""

from __future__ import annotations

import logging
from typing import Any

from cosmodm_ops.config import SiteConfig, load_config

__all__ = ["async_runner", "scheduler_for", "site_config", "sync_runner"]

log = logging.getLogger(__name__)


def site_config(site: str, survey: str = "demo") -> SiteConfig:
    """The site section of the merged configuration (read when a task runs)."""
    return load_config(survey, site=site).site


def scheduler_for(system: str):
    """The scheduler of a batch system name (``local``, ``slurm``, ``pbs``, ...)."""
    from cosmodm_ops.batch import get_scheduler

    return get_scheduler(system)


def sync_runner(ssh_conn_id: str | None, verify_host_key: bool = True) -> Any:
    """A blocking command runner: local subprocesses, or SSH through the Airflow connection."""
    if not ssh_conn_id:
        from cosmodm_ops.batch.runners import LocalRunner

        return LocalRunner()
    from cosmodm_ops.batch.ssh import SSHRunner

    return SSHRunner.from_airflow_connection(ssh_conn_id, verify_host_key=verify_host_key)


async def async_runner(ssh_conn_id: str | None, verify_host_key: bool = True) -> Any:
    """An asyncio command runner for triggers; SSH runners share one connection per site."""
    if not ssh_conn_id:
        from cosmodm_ops.batch.runners import AsyncLocalRunner

        return AsyncLocalRunner()
    from airflow.sdk import BaseHook

    from cosmodm_ops.batch.ssh import AsyncSSHRunner

    conn = await BaseHook.aget_connection(ssh_conn_id)
    extra = conn.extra_dejson
    return AsyncSSHRunner.shared(
        host=conn.host, port=conn.port or 22, username=conn.login, key_file=extra.get("key_file"),
        host_key=extra.get("host_key"), verify_host_key=verify_host_key,
    )
