"""cosmodm_ops.coadd: the science of the coadd pipeline (no Airflow, no SQL).

Modules (import them directly; this package imports nothing heavy):

- :mod:`~cosmodm_ops.coadd.tiling`: tilings from ``include/configs/tilings/``, tile names
  (``DES0204-0500``), tile TAN WCS, the tiles a CCD touches.
- :mod:`~cosmodm_ops.coadd.band` / :mod:`~cosmodm_ops.coadd.tile`: ``run_band`` and
  ``calibrate_tile``, each the list of its stages; one module per stage (``stars``,
  ``zeropoints``, ``psf``, ``homogenize``, ``stack``, ``detection``, ``catalogs``, ``abscal``,
  ``truth``), each with a pure ``run`` on arrays and tables and a thin wrapper doing the file
  I/O; ``qa``, ``plots``, ``report``, ``manifests`` record the outcome (DESIGN.md lists them).
- :mod:`~cosmodm_ops.coadd.photcal`: relative zeropoints of a tile's images (star matching,
  Schur-complement least squares, repeatability QA with image removal, Cramer-Rao bound)
  and the survey-wide solve.
- :mod:`~cosmodm_ops.coadd.locus`: absolute calibration by stellar-locus regression with a J anchor.
- :mod:`~cosmodm_ops.coadd.psfhomog`: PSFEx models, matching kernels to a common Moffat,
  cell-wise homogenization of image and weight.
- :mod:`~cosmodm_ops.coadd.swarp`: SWarp command rendering and runner, pseudo-colour PNGs.
- :mod:`~cosmodm_ops.coadd.synthetic`: seeded synthetic-data factories with truth.
- :mod:`~cosmodm_ops.coadd.benchmarks`: figures for ``bench/`` and ``cosmodm bench``.
"""
