"""The typed configuration schema: every field documented, validated on load.

The tree has one section per concern. Files in ``include/configs/`` are partial
trees that the loader merges in a fixed order (base, survey, camera, site, then
overrides), so a camera file normally sets ``camera:`` and a site file ``site:``,
but any layer may override any key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cosmodm_ops.model import validate_token

__all__ = [
    "AmpSpec",
    "ArchiveConfig",
    "BatchConfig",
    "CameraConfig",
    "CcdSpec",
    "CoaddConfig",
    "Config",
    "CrosstalkTerm",
    "QAConfig",
    "RamDiskConfig",
    "SingleEpochConfig",
    "SiteConfig",
    "StageBudget",
    "SurveyConfig",
    "TransferConfig",
]


class _Strict(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AmpSpec(_Strict):
    """One amplifier of a CCD (inline camera description; DECam reads its table from a file)."""

    name: str = Field(description="Amplifier name, e.g. 'A' or 'B'.")
    gain: float = Field(gt=0, description="Gain in e-/ADU.")
    readnoise: float = Field(ge=0, description="Read noise in electrons.")
    saturation: float = Field(gt=0, description="Saturation level in ADU (after bias).")


class CcdSpec(_Strict):
    """One science CCD: name (EXTNAME), number (CCDNUM) and focal-plane centre."""

    name: str = Field(description="EXTNAME of the CCD in the raw file, e.g. 'N4' or 'S1'.")
    ccdnum: int = Field(ge=1, description="CCDNUM: the camera's CCD number.")
    x_mm: float = Field(description="Focal-plane x of the CCD centre in mm (increasing with RA offset).")
    y_mm: float = Field(description="Focal-plane y of the CCD centre in mm (increasing with Dec offset).")
    amps: list[AmpSpec] = Field(default_factory=list, description="Per-amplifier electronics; empty: camera defaults.")


class CrosstalkTerm(_Strict):
    """One crosstalk coefficient: victim amplifier picks up ``coeff`` x source amplifier."""

    victim: str = Field(description="Victim amplifier as '<ccdnum><amp>', e.g. '1A'.")
    source: str = Field(description="Source amplifier as '<ccdnum><amp>'.")
    coeff: float = Field(description="Linear coefficient (dimensionless).")


class CameraConfig(_Strict):
    """A camera: raw layout, CCDs, amplifiers and crosstalk.

    Raw CCD layout (DECam's, generalised): per row ``prescan | overscan | data A |
    data B | overscan | prescan`` and ``postscan_rows`` extra rows; for CCDs whose
    name starts with one of ``flipped_prefixes`` the amplifiers are swapped and the
    postscan rows come first (DECam's S CCDs).
    """

    name: str = Field(description="Camera name; one of cosmodm_ops.model.CAMERA_NAMES.")
    description: str = Field(default="", description="Free text for people.")
    pixel_scale: float = Field(gt=0, description="Pixel scale in arcsec/pixel at the centre of the field.")
    pixel_size_mm: float = Field(gt=0, default=0.015, description="Physical pixel size in mm.")
    ccd_nx: int = Field(gt=0, description="Trimmed CCD width in pixels (both amplifiers).")
    ccd_ny: int = Field(gt=0, description="Trimmed CCD height in pixels.")
    amps_per_ccd: Literal[1, 2] = Field(default=2, description="Amplifiers per CCD, side by side in x.")
    prescan: int = Field(ge=0, default=6, description="Prescan columns per amplifier in the raw frame.")
    overscan: int = Field(ge=0, default=50, description="Overscan (BIASSEC) columns per amplifier.")
    postscan_rows: int = Field(ge=0, default=50, description="Postscan rows (POSTSEC) in the raw frame.")
    flipped_prefixes: list[str] = Field(default_factory=list, description="CCD name prefixes read out flipped.")
    bzero: int = Field(default=32768, description="BZERO of the raw int16 images.")
    bias_level_adu: float = Field(default=1500.0, description="Typical bias level in ADU (simulation).")
    default_gain: float = Field(gt=0, default=4.0, description="Gain in e-/ADU where no table gives one.")
    default_readnoise: float = Field(ge=0, default=6.5, description="Read noise (e-) where no table gives one.")
    default_saturation: float = Field(gt=0, default=45000.0, description="Saturation (ADU) where no table gives one.")
    ccds: list[CcdSpec] = Field(default_factory=list, description="Inline CCD list (small cameras).")
    ccd_table: str | None = Field(
        default=None,
        description="Focal-plane table file (obs_decam chipcenters.txt format); 'real:' prefix = COSMODM_REAL_DATA.",
    )
    segment_table: str | None = Field(
        default=None,
        description="Per-amplifier gain/saturation/read-noise table (obs_decam segmentfile.txt format).",
    )
    crosstalk: list[CrosstalkTerm] = Field(default_factory=list, description="Inline crosstalk coefficients.")
    crosstalk_file: str | None = Field(
        default=None, description="Crosstalk coefficient file (DECam_xtalk_20130606.txt format)."
    )

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str) -> str:
        return validate_token("camera.name", value)

    @model_validator(mode="after")
    def _has_ccds(self) -> CameraConfig:
        if not self.ccds and not self.ccd_table:
            msg = "a camera needs either 'ccds' (inline list) or 'ccd_table' (a file)"
            raise ValueError(msg)
        return self


class SurveyConfig(_Strict):
    """A survey: its name, camera, bands and footprint."""

    name: str = Field(description="Survey name (archive tag 'survey').")
    camera: str = Field(description="Default camera of the survey.")
    bands: list[str] = Field(min_length=1, description="Bands the survey observes, e.g. [g, r, i, z].")
    tiling: str = Field(default="des-1deg", description="Tiling name (include/configs/tilings/<name>.yaml).")
    sky_mag_per_arcsec2: dict[str, float] = Field(
        default_factory=dict, description="Dark-sky brightness per band in mag/arcsec^2 (simulation, QA)."
    )
    zeropoint_1s: dict[str, float] = Field(
        default_factory=dict, description="Photometric zeropoint for a 1 s exposure per band (mag for 1 e-/s)."
    )
    exptime: float = Field(gt=0, default=90.0, description="Nominal exposure time in seconds.")
    single_epoch_deadline_h: float | None = Field(
        default=36.0, gt=0,
        description=("Deadline Alert of nightly_ingest: the night's single-epoch products are due this many hours "
                     "after 00:00 UTC of the night's date (36 = 12:00 UTC the next day); a run still going then "
                     "records a deadline_miss row in the archive. None: no deadline."),
    )


class RamDiskConfig(_Strict):
    """Per-job staging area for intermediates (RICE-compressed FITS)."""

    path: str = Field(default="/dev/shm/cosmodm", description="Parent folder; each job gets <path>/<job>.")
    max_fraction: float = Field(
        gt=0, le=1, default=0.5, description="Refuse to stage when the filesystem would be fuller than this."
    )


class StageBudget(_Strict):
    """Resources of one pipeline stage's batch jobs at a site (``site.batch.stages.<stage>``).

    Unset fields fall back to the site's ``batch`` defaults. A job killed for memory is retried
    with ``memory_gb x retry_memory_factor ** (try - 1)``, capped at ``max_memory_gb``; once a try
    has run at the cap, an out-of-memory end fails the task without another retry.
    """

    cores: int | None = Field(default=None, ge=1, description="Cores per job (None: batch.cores).")
    memory_gb: float | None = Field(default=None, gt=0, description="Memory per job in GB (None: batch.memory_gb).")
    walltime_min: int | None = Field(default=None, ge=1, description="Walltime per job in minutes (None: batch.walltime_min).")
    retry_memory_factor: float = Field(
        default=1.5, ge=1.0, description="Memory grows by this factor per retry (1: retries keep the memory)."
    )
    max_memory_gb: float | None = Field(
        default=None, gt=0, description="Cap of the retry memory in GB (None: 4 x memory_gb)."
    )


class BatchConfig(_Strict):
    """How jobs are submitted at a site."""

    system: Literal["local", "slurm", "pbs", "loadleveler", "htcondor"] = Field(
        default="local", description="Batch system."
    )
    partition: str | None = Field(default=None, description="Partition (Slurm) or queue (PBS, LoadLeveler).")
    account: str | None = Field(default=None, description="Account to charge.")
    qos: str | None = Field(default=None, description="Quality of service.")
    nodes: int = Field(default=1, ge=1, description="Nodes per job.")
    cores: int = Field(default=2, ge=1, description="Cores per job.")
    memory_gb: float = Field(default=4.0, gt=0, description="Memory per job in GB.")
    walltime_min: int = Field(default=60, ge=1, description="Walltime per job in minutes.")
    max_concurrent: int = Field(default=4, ge=1, description="Slots of the Airflow pool cosmodm_<site> (cosmodm config pools; COSMODM_POOLS=1).")
    poll_interval_s: float = Field(default=10.0, gt=0, description="Seconds between state polls.")
    python: str = Field(default="cosmodm", description="Command that runs the CLI on the compute node.")
    stages: dict[str, StageBudget] = Field(
        default_factory=dict,
        description="Per-stage budgets by stage name (single_epoch, coadd, calibrate); see StageBudget.",
    )
    memory_limit: Literal["scheduler", "ulimit"] = Field(
        default="scheduler",
        description=("Who enforces the job's memory: 'scheduler' (Slurm cgroups, PBS, HTCondor) or 'ulimit' (the job "
                     "script sets ulimit -v to memory_gb: the local runner, or Slurm without cgroups)."),
    )


class TransferConfig(_Strict):
    """How raw data reaches the site."""

    method: Literal["local", "rsync", "globus"] = Field(default="local", description="Transfer method.")
    source_endpoint: str | None = Field(default=None, description="Globus collection id of the source.")
    dest_endpoint: str | None = Field(default=None, description="Globus collection id of the destination.")
    globus_conn_id: str = Field(default="globus_default", description="Airflow connection with client credentials.")
    deadline_min: int = Field(default=240, ge=1, description="Globus task deadline in minutes.")


class ArchiveConfig(_Strict):
    """Where products are filed. Database URLs with passwords belong in the environment, never here."""

    root: str = Field(default="var/archive", description="Archive root folder (COSMODM_ARCHIVE_ROOT overrides).")
    db_url: str = Field(
        default="sqlite:///var/archive/cosmodm.db",
        description="SQLAlchemy URL without secrets (COSMODM_DB overrides).",
    )


class SiteConfig(_Strict):
    """A compute site: how to reach it and where things live there."""

    name: str = Field(description="Site name.")
    ssh_conn_id: str | None = Field(
        default=None, description="Airflow SSH connection id (host, key, host key); None = run locally."
    )
    queue: str | None = Field(
        default=None,
        description=("Airflow (Celery) queue of the site's batch and transfer tasks, so they run on workers that can "
                     "reach the site (`airflow celery worker --queues <queue>`); None = Airflow's default queue."),
    )
    verify_host_key: bool = Field(default=True, description="Verify the SSH host key (turning off warns).")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="Batch system settings.")
    ramdisk: RamDiskConfig = Field(default_factory=RamDiskConfig, description="RAM-disk staging.")
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="Transfer settings.")
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig, description="Archive settings.")
    raw_source: str = Field(default="var/incoming", description="Where the night's raw exposures appear.")
    work_root: str = Field(default="var/work", description="Job output folders on the site's shared filesystem.")

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str) -> str:
        return validate_token("site.name", value)


class QAConfig(_Strict):
    """QA thresholds (gates). Each threshold documents its direction."""

    max_seeing_arcsec: float = Field(default=2.0, gt=0, description="Exposure fails if median FWHM is larger.")
    max_astrometric_rms_mas: float = Field(default=100.0, gt=0, description="Fails if astrometric RMS is larger.")
    min_stars_per_ccd: int = Field(default=10, ge=0, description="A CCD with fewer stars fails.")
    max_zeropoint_deficit_mag: float = Field(
        default=0.3, gt=0, description="Fails if the zeropoint is fainter than nominal by more (clouds)."
    )
    max_masked_fraction: float = Field(default=0.2, gt=0, le=1, description="Fails if more pixels are masked.")
    min_good_ccd_fraction: float = Field(default=0.5, gt=0, le=1, description="Fails if fewer CCDs pass.")
    repeatability_mmag: float = Field(default=30.0, gt=0, description="Coadd: max bright-star repeatability.")
    max_locus_scatter_mag: float = Field(default=0.05, gt=0, description="Coadd: max stellar-locus scatter.")
    max_psf_fwhm_spread: float = Field(
        default=0.02, gt=0,
        description="Coadd: fails if the homogenized PSF FWHM varies more over the tile ((max - min) / median).",
    )
    completeness_bin_mag: float = Field(
        default=0.25, gt=0, description="Coadd calibrate --truth: magnitude bin width of completeness and purity."
    )


class SingleEpochConfig(_Strict):
    """Single-epoch pipeline settings."""

    detect_thresh: float = Field(default=1.5, gt=0, description="SExtractor DETECT_THRESH (sigma).")
    detect_minarea: int = Field(default=5, ge=1, description="SExtractor DETECT_MINAREA (pixels).")
    sextractor_params: str = Field(
        default="single_epoch.param", description="Pass-2 parameter list in include/configs/astromatic/."
    )
    psf_size: int = Field(
        default=25, ge=5,
        description="PSFEx PSF_SIZE and pass-1 VIGNET size (pixels, odd). 25 as DES's PSFEx models (6 FWHM at "
                    "1\" seeing); pass 2's PSF fits cost ~ its square (35 before issue 18).",
    )
    pass1_detect_thresh: float | None = Field(
        default=None, gt=0,
        description="SExtractor DETECT_THRESH of pass 1, which feeds only PSFEx (S/N > 20 stars) and SCAMP; "
                    "null: detect_thresh. Off by default: at 5 a small real DECam cutout kept 4 PSF-star "
                    "candidates instead of 5 and failed (tests/integration/test_coadd_run_real_decam.py).",
    )
    only_ccds: list[int] | None = Field(
        default=None, description="Process only these CCDNUMs (benchmarks on part of an exposure); null: all.",
    )
    weight_qlevel: float = Field(
        default=1.0, gt=0,
        description="RICE quantization level of the weight product (noise sigma of the weight map / step). 1: "
                    "0.24% rms in each pixel's weight (0.12% in its sigma), 34% smaller than q=4 (issue 18).",
    )
    compress_products: bool = Field(
        default=True, description="RICE-compress image, weight and mask products (false: the naive benchmark run).",
    )
    calib_cache: bool = Field(
        default=True,
        description="Per-node calibration cache (raw path): each calibration file is staged once per node, "
                    "decompressed to plain arrays every later job memory-maps (single_epoch/calibcache.py). "
                    "false: every job copies the calibration files into its RAM-disk folder and decompresses them.",
    )
    calib_cache_path: str | None = Field(
        default=None,
        description="Folder of the calibration cache, node-local (a RAM disk); null: <site.ramdisk.path>/calib-cache "
                    "(not the job's own RAM-disk folder, which a batch job removes on exit).",
    )
    calib_cache_max_age_days: float = Field(
        default=2.0, gt=0, description="Cache entries of other calibration files unused for longer are removed.",
    )
    calib_cache_max_gb: float = Field(
        default=12.0, gt=0,
        description="Size cap of the calibration cache (GB; a DECam bias + bpm + one band's flat and star flat "
                    "is 6.4 GB): the least recently used entries of other files go first.",
    )
    psfvar_degrees: int = Field(default=2, ge=0, description="PSFEx PSFVAR_DEGREES.")
    scamp_distort_degrees: int = Field(default=3, ge=1, description="SCAMP DISTORT_DEGREES.")
    star_snr_min: float = Field(default=50.0, gt=0, description="S/N cut for QA stars.")
    spread_model_star_max: float = Field(default=0.003, description="|SPREAD_MODEL| below this: a star.")


class CoaddConfig(_Strict):
    """Coadd pipeline settings."""

    moffat_beta: float = Field(default=2.5, gt=1, description="Moffat beta of the homogenized PSF.")
    detection_bands: list[str] = Field(default_factory=lambda: ["r", "i"], description="Bands of the detection image.")
    detection_image: Literal["snr_mean", "chi_mean"] = Field(
        default="snr_mean", description="Detection image: mean S/N (no negative noise peaks) or CHI-MEAN."
    )
    catalog_params: str = Field(
        default="coadd_dual.param",
        description="Parameter list of the dual-image coadd catalogs in include/configs/astromatic/ (MAG_DETMODEL).",
    )
    star_snr_min: float = Field(default=20.0, gt=0, description="S/N cut for calibration stars.")
    match_radius_arcsec: float = Field(default=1.0, gt=0, description="Star matching radius.")
    min_stars_per_image: int = Field(
        default=5, ge=1, description="Relative calibration: images with fewer matched stars are left out."
    )
    photcal_floor_mag: float = Field(
        default=0.0, ge=0.0,
        description="Systematic error per star measurement (mag) added to MAGERR for the relative-calibration weights.",
    )
    psf_target_scale: float = Field(
        default=1.2, ge=1.0,
        description="Homogenized PSF FWHM = this x the median input FWHM (a broader target is matched reliably).",
    )
    magzero: float = Field(default=30.0, description="Zeropoint (mag) of the coadd pixel values.")


class Config(_Strict):
    """The whole configuration for one run: survey, camera, site, pipelines, QA."""

    pipeline_version: str = Field(default="v1", description="Pipeline version (archive tag 'version').")
    survey: SurveyConfig = Field(description="The survey.")
    camera: CameraConfig = Field(description="The camera.")
    site: SiteConfig = Field(description="The compute site.")
    qa: QAConfig = Field(default_factory=QAConfig, description="QA thresholds.")
    single_epoch: SingleEpochConfig = Field(default_factory=SingleEpochConfig, description="Single-epoch settings.")
    coadd: CoaddConfig = Field(default_factory=CoaddConfig, description="Coadd settings.")

    @field_validator("pipeline_version")
    @classmethod
    def _version_is_token(cls, value: str) -> str:
        return validate_token("pipeline_version", value)
