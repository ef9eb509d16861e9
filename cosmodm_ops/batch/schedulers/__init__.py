"""One module per batch system; :func:`cosmodm_ops.batch.get_scheduler` picks one by name."""
