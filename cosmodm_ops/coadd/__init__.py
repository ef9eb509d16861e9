"""cosmodm_ops.coadd."""
