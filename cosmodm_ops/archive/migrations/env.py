"""Alembic environment of the archive database, run programmatically by ``Archive.init()``.

The caller passes an open SQLAlchemy connection in ``config.attributes["connection"]``;
no alembic.ini and no logging configuration are needed.
"""

from __future__ import annotations

from alembic import context

from cosmodm_ops.archive.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs `alembic` by hand
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
