"""cosmodm_ops.transfer."""
