"""cosmodm_ops.single_epoch."""
