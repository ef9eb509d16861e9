"""The archive database schema (SQLAlchemy Core), the same on PostgreSQL and SQLite.

The schema is created and upgraded by the Alembic migrations in ``migrations/``
(``Archive.init()`` runs them); this module is the description the code queries with.
Keep the two in step: a change here needs a new migration.

Tables
------
products      one row per stored file revision, keyed by ``(key, revision)`` (key = canonical tags)
exposures     raw exposures (survey, camera, expnum unique)
ccd_images    single-epoch CCD images (one per exposure, CCD, version, revision)
tiles         coadd tiles (survey, name unique)
lineage       edges product <- input (with role); the input is an archived product when its
              sha256 matched one, else only its path and sha256 are kept
runs          processing runs: DAG, run, task, try, batch job id, site, host, times, state,
              exit code, software versions, config hash, bytes read and written
qa_results    QA checks: name, value, threshold, verdict (per exposure or CCD)
quarantine    quarantine records with reasons (a product, an exposure, a CCD or a tile)
night_runs    which DAG runs registered single-epoch QA of a night (survey, night, dag_id, run_id): one row
              per night and Airflow run, kept by registration in the same transaction (the nights page reads
              it instead of joining every exposure's job row to ``runs``)
tile_words    each tile's current coadd products as one string of words (kind letter + band), kept by
              registration in the same transaction (the tiles page's sky map reads it instead of aggregating
              every coadd product of the survey)
objects       catalog objects, indexed by exposure (expnum, ccd), tile (tile, band), product and sky
              position (nested HEALPix index ``hpx``; ``ra``/``dec`` kept for the exact distance cut, not
              indexed: a B-tree on (ra, dec) cannot answer a cone and costs 15% of the load rate)
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "HEALPIX_NSIDE",
    "HEALPIX_ORDER",
    "ccd_images",
    "exposures",
    "lineage",
    "metadata",
    "night_runs",
    "objects",
    "products",
    "qa_results",
    "quarantine",
    "runs",
    "tile_words",
    "tiles",
]

#: HEALPix resolution of ``objects.hpx`` (nested ordering): nside 2**13, pixels of about 26 arcsec.
HEALPIX_ORDER = 13
HEALPIX_NSIDE = 2**HEALPIX_ORDER

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# BigInteger primary keys render as BIGSERIAL on PostgreSQL; SQLite needs INTEGER for rowid aliases.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "runs", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_key", String(64), nullable=False, unique=True, doc="sha256 of the manifest (idempotency)"),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("task_id", String(250)),
    Column("try_number", Integer),
    Column("batch_job_id", String(100)),
    Column("job_name", String(250)),
    Column("site", String(100)),
    Column("host", String(250)),
    Column("start", String(40), doc="ISO 8601 UTC"),
    Column("end", String(40), doc="ISO 8601 UTC"),
    Column("state", String(20)),
    Column("exit_code", Integer),
    Column("versions", Text, doc="JSON object of software versions"),
    Column("config_hash", String(128)),
    Column("bytes_read", BigInteger),
    Column("bytes_written", BigInteger),
    Column("manifest_path", Text),
    Column("created_at", String(40), nullable=False),
)

products = Table(
    "products", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("key", String(400), nullable=False, doc="canonical tags (layout.tag_key)"),
    Column("revision", Integer, nullable=False),
    Column("survey", String(64), nullable=False),
    Column("camera", String(64), nullable=False),
    Column("stage", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("night", String(10)),
    Column("expnum", Integer),
    Column("ccd", Integer),
    Column("band", String(64)),
    Column("tile", String(64)),
    Column("path", Text, nullable=False, unique=True, doc="relative to the archive root"),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, doc="current | superseded"),
    Column("superseded_by", BigInteger),
    Column("run_id", BigInteger, ForeignKey("runs.id")),
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("key", "revision"),
    Index(None, "sha256"),
    Index(None, "night", "expnum", "ccd"),
    Index(None, "tile", "band"),
    Index(None, "key", "state"),
)

exposures = Table(
    "exposures", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("survey", String(64), nullable=False),
    Column("camera", String(64), nullable=False),
    Column("night", String(10), nullable=False),
    Column("expnum", Integer, nullable=False),
    Column("band", String(64)),
    Column("exptime", Float),
    Column("ra", Float),
    Column("dec", Float),
    Column("raw_product_id", BigInteger, ForeignKey("products.id")),
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("survey", "camera", "expnum"),
    Index(None, "night"),
)

ccd_images = Table(
    "ccd_images", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("exposure_id", BigInteger, ForeignKey("exposures.id"), nullable=False),
    Column("ccd", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("product_id", BigInteger, ForeignKey("products.id"), nullable=False),
    UniqueConstraint("product_id"),
    Index(None, "exposure_id", "ccd", "version"),
)

tiles = Table(
    "tiles", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("survey", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("ra", Float),
    Column("dec", Float),
    UniqueConstraint("survey", "name"),
)

lineage = Table(
    "lineage", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("product_id", BigInteger, ForeignKey("products.id"), nullable=False),
    Column("input_product_id", BigInteger, ForeignKey("products.id")),
    Column("input_sha256", String(64), nullable=False),
    Column("input_path", Text),
    Column("role", String(64), nullable=False),
    Column("run_id", BigInteger, ForeignKey("runs.id")),
    UniqueConstraint("product_id", "input_sha256", "role"),
    Index(None, "input_product_id"),
    Index(None, "input_sha256"),
)

qa_results = Table(
    "qa_results", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigInteger, ForeignKey("runs.id")),
    Column("product_id", BigInteger, ForeignKey("products.id")),
    Column("survey", String(64)),
    Column("expnum", Integer),
    Column("ccd", Integer),
    Column("tile", String(64)),
    Column("band", String(64)),
    Column("scope", String(100), nullable=False, doc="'exposure', 'ccd<N>', 'tile' or 'product<N>'"),
    Column("check_name", String(100), nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("verdict", String(20), nullable=False),
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("run_id", "scope", "check_name"),
    Index(None, "expnum", "ccd"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("product_id", BigInteger, ForeignKey("products.id")),
    Column("survey", String(64)),
    Column("night", String(10)),
    Column("expnum", Integer),
    Column("ccd", Integer),
    Column("tile", String(64)),
    Column("band", String(64)),
    Column("version", String(64)),
    Column("reasons", Text, nullable=False, doc="JSON list of strings"),
    Column("released", Integer, nullable=False, default=0),
    Column("created_at", String(40), nullable=False),
    Index(None, "expnum", "ccd"),
    Index(None, "product_id"),
)

objects = Table(
    "objects", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # no foreign key: objects are loaded in the product's own transaction, and a per-row key
    # check halves the COPY rate (bench/bench_archive.py)
    Column("product_id", BigInteger, nullable=False),
    Column("exposure_id", BigInteger),
    Column("expnum", Integer),
    Column("ccd", Integer),
    Column("tile", String(64)),
    Column("band", String(64)),
    Column("number", Integer),
    Column("ra", Float, nullable=False),
    Column("dec", Float, nullable=False),
    Column("hpx", BigInteger, nullable=False, doc=f"HEALPix nested index at nside {HEALPIX_NSIDE}"),
    Column("mag_auto", Float),
    Column("magerr_auto", Float),
    Column("mag_psf", Float),
    Column("magerr_psf", Float),
    Column("spread_model", Float),
    Column("class_star", Float),
    Column("flags", Integer),
    Index(None, "hpx"),
    Index(None, "product_id"),
)
night_runs = Table(
    "night_runs", metadata,
    Column("survey", String(64), primary_key=True),
    Column("night", String(10), primary_key=True),
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
)
tile_words = Table(
    "tile_words", metadata,
    Column("survey", String(64), primary_key=True),
    Column("tile", String(64), primary_key=True),
    Column("words", Text, nullable=False, doc="the tile's current coadd products as words 'Cr Kr Hr Cg' "
           "(kind letter + band; archive/tile_words.py)"),
)
# partial indexes: a single-epoch object has no tile, a coadd object no exposure; each load pays for one
Index("ix_objects_expnum_ccd", objects.c.expnum, objects.c.ccd,
      postgresql_where=objects.c.expnum.isnot(None), sqlite_where=objects.c.expnum.isnot(None))
Index("ix_objects_tile_band", objects.c.tile, objects.c.band,
      postgresql_where=objects.c.tile.isnot(None), sqlite_where=objects.c.tile.isnot(None))
# the survey pages' read paths (migration 0003_ui_indexes)
Index("ix_exposures_survey_night", exposures.c.survey, exposures.c.night)
Index("ix_products_stage_tile_band", products.c.stage, products.c.tile, products.c.band, products.c.kind)
Index("ix_products_state", products.c.state)
Index("ix_products_run_id", products.c.run_id)
Index("ix_runs_dag_id_run_id", runs.c.dag_id, runs.c.run_id)
Index("ix_qa_results_tile_band", qa_results.c.tile, qa_results.c.band)
Index("ix_qa_results_product_id", qa_results.c.product_id)
Index("ix_quarantine_tile_band", quarantine.c.tile, quarantine.c.band)
# the nights page's per-night counts and runs, from the index alone (migration 0005_ui)
Index("ix_products_stage_kind_night", products.c.stage, products.c.kind, products.c.survey, products.c.night,
      products.c.state, products.c.expnum, products.c.run_id)
# the tiles page's status per tile and band from the index alone; cone searches of exposures and tiles by a
# dec band; a tile's QA rows (partial: most rows have no tile) (migration 0006_ui)
Index("ix_products_stage_survey_tile", products.c.stage, products.c.survey, products.c.state, products.c.tile,
      products.c.band, products.c.kind)
Index("ix_exposures_dec_ra", exposures.c.dec, exposures.c.ra)
Index("ix_tiles_dec_ra", tiles.c.dec, tiles.c.ra)
Index("ix_qa_results_tile_set", qa_results.c.tile, qa_results.c.band,
      postgresql_where=qa_results.c.tile.isnot(None), sqlite_where=qa_results.c.tile.isnot(None))
