"""cosmodm_ops.astromatic."""
