"""The bad-input corpus: inputs a user or a batch job can hand the platform, each with what must happen.

Every case is made in a temporary folder from one small simulated decam-mini night (``cosmodm sim night``),
never stored in git. :data:`CASES` is the one table: the case's name, how its input is made, the command run
(as a ``cosmodm`` argv template), the expected exit code and the fragments the message must contain. The test
(``tests/badinput/test_corpus.py``) runs each command as a subprocess, as a batch job would, and checks the
rest (no traceback, the input kept, nothing half-written in the archive root or database).

Usage::

    python -m tests.badinput.make_corpus --out /tmp/corpus     # make the corpus and print the commands
    python -m tests.badinput.make_corpus --markdown            # the README table
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

__all__ = ["CASES", "Base", "Case", "case_argv", "make_base", "make_case", "markdown", "run_cosmodm"]

NIGHT, SEED, BAND = "2026-11-23", 5, "g"
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_TRANSIENT = 0, 3, 2, 65, 75
_CLOUDY_PLACEHOLDER = "{cloudy}"


@dataclass(frozen=True)
class Base:
    """What every case starts from: one simulated night, an archive and one good processed exposure."""

    folder: Path
    raw: Path  # the good raw exposure (.fits.fz)
    calib: Path
    refcat: Path
    db: str  # SQLAlchemy URL of the corpus archive
    root: Path  # archive root
    good_out: Path  # single-epoch output of the good exposure (manifest.json, qa.json), registered once

    def values(self) -> dict[str, str]:
        return {"raw": str(self.raw), "calib": str(self.calib), "refcat": str(self.refcat), "db": self.db,
                "root": str(self.root), "good": str(self.good_out)}


@dataclass(frozen=True)
class Case:
    """One row of the corpus.

    ``command`` is a ``cosmodm`` argv template (split on spaces, then each word formatted), so paths with
    spaces stay one argument. Placeholders: the :class:`Base` values, ``{input}`` (what ``make`` returned)
    and ``{out}`` (a fresh output folder of the case).
    """

    name: str
    how: str
    command: str
    code: int
    fragments: tuple[str, ...]
    make: Callable[[Base, Path], Path | str]
    kind: str = "error"  # "error": refused before any work; "science": processed, with a QA verdict
    env: dict[str, str] = field(default_factory=dict)
    # science outcomes: (ccd number or None for the exposure, the reason fragment in qa.json)
    qa: tuple[int | None, str] | None = None
    # the case works on its own copy of the archive (``archive.db`` in its folder) and must quarantine there
    quarantines: bool = False


def run_cosmodm(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
    """``cosmodm ARGV`` as a subprocess (the console script of this interpreter's environment)."""
    exe = Path(sys.executable).with_name("cosmodm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cosmodm_ops.cli"]
    full_env = {**os.environ, **(env or {})}
    # a session of its own, so that a timeout stops the command's worker processes too
    with subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[corpus: killed after {timeout} s]"
    return subprocess.CompletedProcess(cmd + argv, proc.returncode, out, err)


def _checked(argv: list[str]) -> None:
    res = run_cosmodm(argv)
    if res.returncode != 0:
        msg = f"corpus base: cosmodm {' '.join(argv)} exited {res.returncode}:\n{res.stderr[-2000:]}"
        raise RuntimeError(msg)


def make_base(folder: Path) -> Base:
    """Simulate the night, init the archive, process and register the good exposure (about 25 s)."""
    night = folder / "night"
    _checked(["sim", "night", "--camera", "decam-mini", "--night", NIGHT, "--exposures", "1", "--bands", BAND,
              "--seed", str(SEED), "--density-scale", "0.5", "--no-progress", "--out", str(night)])
    raw = next((night / "raw").glob("*.fits.fz"))
    db, root = f"sqlite:///{folder / 'archive.db'}", folder / "archive"
    _checked(["archive", "init", "--db", db, "--root", str(root)])
    good = folder / "good_out"
    refcat = night / "refcat" / "astrometric.fits"
    _checked(["single-epoch", "run", "--exposure", str(raw), "--calib", str(night / "calib"), "--refcat",
              str(refcat), "--out", str(good), "--jobs", "2"])
    _checked(["archive", "register", str(good / "manifest.json"), "--db", db, "--root", str(root)])
    return Base(folder, raw, night / "calib", refcat, db, root, good)


# ----- makers: each writes the case's input into its folder and returns it -----

def _plain_raw(base: Base, folder: Path, name: str = "raw.fits") -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """The good raw exposure as (header, data) per HDU (data of the primary is None)."""
    out = []
    with fitsio.FITS(str(base.raw)) as f:
        for hdu in f:
            hdr = hdu.read_header()
            data = hdu.read() if hdu.has_data() else None
            out.append((hdr, data))
    return out


def _write_raw(hdus: list[tuple[Any, np.ndarray | None]], path: Path) -> Path:
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        for i, (hdr, data) in enumerate(hdus):
            keep = [r for r in hdr.records() if not r["name"].startswith(("Z", "BITPIX", "NAXIS", "PCOUNT",
                                                                        "GCOUNT", "XTENSION", "SIMPLE", "EXTEND",
                                                                        "BZERO", "BSCALE", "TFIELDS", "TTYPE",
                                                                        "TFORM", "CHECKSUM", "DATASUM"))]
            if i == 0:
                f.write(None, header=keep)
            else:
                f.write(data, header=keep, extname=hdr.get("EXTNAME"))
    return path


def _raw_without(*keys: str) -> Callable[[Base, Path], Path]:
    def make(base: Base, folder: Path) -> Path:
        path = folder / f"no_{keys[0].lower().replace('-', '_')}.fits.fz"
        shutil.copy(base.raw, path)
        with fitsio.FITS(str(path), "rw") as f:
            for hdu in f:  # the CCD HDUs repeat some keys (EXPNUM, BAND): gone from every HDU
                present = hdu.read_header()
                for key in keys:
                    if key in present:
                        hdu.delete_key(key)
        return path
    return make


def _raw_with(key: str, value: Any) -> Callable[[Base, Path], Path]:
    def make(base: Base, folder: Path) -> Path:
        path = folder / "instrume.fits.fz"
        shutil.copy(base.raw, path)
        with fitsio.FITS(str(path), "rw") as f:
            f[0].delete_key("CAMERA")
            f[0].write_key(key, value)
        return path
    return make


def _truncated(base: Base, folder: Path) -> Path:
    path = folder / "truncated.fits.fz"
    data = base.raw.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _zero_byte(base: Base, folder: Path) -> Path:
    path = folder / "empty.fits"
    path.write_bytes(b"")
    return path


def _gzip_renamed(base: Base, folder: Path) -> Path:
    path = folder / "gzipped.fits"
    path.write_bytes(gzip.compress(base.raw.read_bytes(), compresslevel=1))
    return path


def _ccd_pixels(extname: str, fill: Callable[[np.ndarray], np.ndarray]) -> Callable[[Base, Path], Path]:
    """The raw exposure (plain FITS) with one CCD's pixels replaced (overscan included)."""
    def make(base: Base, folder: Path) -> Path:
        hdus = _plain_raw(base, folder)
        hdus = [(h, fill(d) if h.get("EXTNAME") == extname else d) for h, d in hdus]
        return _write_raw(hdus, folder / f"raw_{extname}.fits")
    return make


def _all_nan(data: np.ndarray) -> np.ndarray:
    return np.full(data.shape, np.nan, dtype=np.float32)


def _cloudy(base: Base, folder: Path) -> Path:
    """Clouds so thick no star shows: every amplifier's data section replaced by its median sky plus noise
    (the overscan columns, and so the bias, stay as they were)."""
    hdus = _plain_raw(base, folder)
    rng = np.random.default_rng(SEED)
    out = []
    for hdr, data in hdus:
        if data is not None:
            data = data.astype(np.float64)
            sky = float(np.median(data))
            noise = rng.normal(0.0, np.sqrt(max(sky - 1500.0, 1.0) / 4.0), size=data.shape)
            # keep the overscan/prescan columns (rows of the bias level) by replacing only pixels above it
            above = data > sky - 0.5 * (sky - 1500.0)
            data = np.where(above, sky + noise, data)
            data = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
        out.append((hdr, data))
    return _write_raw(out, folder / "cloudy.fits")


def _calib_wrong_size(base: Base, folder: Path) -> Path:
    calib = folder / "calib"
    shutil.copytree(base.calib, calib)
    with fitsio.FITS(str(base.calib / "bias.fits")) as src, fitsio.FITS(str(calib / "bias.fits"), "rw",
                                                                         clobber=True) as dst:
        for i, hdu in enumerate(src):
            hdr = hdu.read_header()
            if i == 0 or not hdu.has_data():
                dst.write(None, header=hdr)
            else:
                dst.write(hdu.read()[:100, :100], extname=hdr.get("EXTNAME"))
    return calib


def _refcat_far(base: Base, folder: Path) -> Path:
    path = folder / "refcat_far.fits"
    with fitsio.FITS(str(base.refcat)) as f:
        data = f[1].read()
    for col in data.dtype.names:
        if col.lower() == "ra":
            data[col] = (data[col] + 180.0) % 360.0
    fitsio.write(str(path), data, clobber=True)
    return path


def _config_dir(edit: Callable[[str], str]) -> Callable[[Base, Path], Path]:
    def make(base: Base, folder: Path) -> Path:
        from cosmodm_ops.config.loader import config_dir

        dst = folder / "configs"
        shutil.copytree(config_dir(), dst)
        site = dst / "sites" / "local.yaml"
        site.write_text(edit(site.read_text(encoding="utf-8")), encoding="utf-8")
        return site
    return make


def _good_copy(folder: Path, base: Base, name: str = "out") -> Path:
    dst = folder / name
    shutil.copytree(base.good_out, dst)
    return dst


def _checksum_mismatch(base: Base, folder: Path) -> Path:
    out = _good_copy(folder, base)
    victim = min(out.glob("*_cat.fits"))
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    return out / "manifest.json"


def _manifest_tag(key: str, value: Any) -> Callable[[Base, Path], Path]:
    def make(base: Base, folder: Path) -> Path:
        out = _good_copy(folder, base)
        man = json.loads((out / "manifest.json").read_text())
        man["tags"][key] = value
        for prod in man["products"]:
            prod["tags"][key] = value
        (out / "manifest.json").write_text(json.dumps(man, indent=1))
        return out / "manifest.json"
    return make


def _broken_manifest(base: Base, folder: Path) -> Path:
    out = _good_copy(folder, base)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 3])
    return out / "manifest.json"


def _odd_names(base: Base, folder: Path) -> str:
    """The good products in a folder named with spaces and unicode, reached through ``..``."""
    _good_copy(folder, base, "prodüits de la nuit 1")
    (folder / "sub dir").mkdir()
    return str(folder / "sub dir" / ".." / "prodüits de la nuit 1" / "manifest.json")


def _odd_raw_name(base: Base, folder: Path) -> str:
    """A raw exposure whose name has spaces, unicode and quotes; its header lacks EXPTIME."""
    sub = folder / "exposé 1; rm -rf"
    sub.mkdir()
    path = sub / "raw 'ünïcode' $(x).fits.fz"
    shutil.copy(base.raw, path)
    with fitsio.FITS(str(path), "rw") as f:
        f[0].delete_key("EXPTIME")
    return str(folder / "exposé 1; rm -rf" / ".." / "exposé 1; rm -rf" / path.name)


def _archived_file_corrupt(base: Base, folder: Path) -> Path:
    """A copy of the corpus archive (database and root) in which one archived catalog lost a byte's worth."""
    shutil.copy(base.db.removeprefix("sqlite:///"), folder / "archive.db")
    shutil.copytree(base.root, folder / "archive")
    victim = min((folder / "archive").rglob("*_catalog.fits"))
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    return victim


def _nothing(base: Base, folder: Path) -> Path:
    return folder / "does-not-exist.fits.fz"


def _good_manifest(base: Base, folder: Path) -> Path:
    return base.good_out / "manifest.json"


def _raw_copy(base: Base, folder: Path) -> Path:
    path = folder / base.raw.name
    shutil.copy(base.raw, path)
    return path


_SE = "single-epoch run --exposure {input} --calib {calib} --refcat {refcat} --out {out} --jobs 2"
_REG = "archive register {input} --db {db} --root {root}"
_SIM = "sim night --camera decam-mini --night 2026-11-23 --no-progress --out {out}"
_KEY_HINT = "fix the file"

CASES: tuple[Case, ...] = (
    Case("truncated_fits", "the good raw .fits.fz cut to half its bytes", _SE, EXIT_BAD_INPUT,
         ("truncated.fits.fz", "HDU", "truncated", "expected", "transfer the file again"), _truncated),
    Case("zero_byte_fits", "an empty file named .fits", _SE, EXIT_BAD_INPUT,
         ("empty.fits", "empty file (0 bytes)", "expected a FITS file", "transfer it again"), _zero_byte),
    Case("gzip_renamed_fits", "the raw exposure gzipped and named .fits", _SE, EXIT_BAD_INPUT,
         ("gzipped.fits", "gzip", "gunzip"), _gzip_renamed),
    Case("missing_filter", "FILTER (and the simulator's BAND) deleted from every HDU", _SE, EXIT_BAD_INPUT,
         ("no_filter.fits.fz", "HDU 0", "'FILTER'", _KEY_HINT), _raw_without("FILTER", "BAND")),
    Case("missing_expnum", "EXPNUM deleted from every HDU", _SE, EXIT_BAD_INPUT,
         ("no_expnum.fits.fz", "HDU 0", "'EXPNUM'", _KEY_HINT), _raw_without("EXPNUM")),
    Case("missing_date_obs", "DATE-OBS and MJD-OBS deleted from every HDU", _SE, EXIT_BAD_INPUT,
         ("no_date_obs.fits.fz", "HDU 0", "'DATE-OBS'", "'MJD-OBS'", _KEY_HINT), _raw_without("DATE-OBS", "MJD-OBS")),
    Case("missing_exptime", "EXPTIME deleted from every HDU", _SE, EXIT_BAD_INPUT,
         ("no_exptime.fits.fz", "HDU 0", "'EXPTIME'", _KEY_HINT), _raw_without("EXPTIME")),
    Case("unknown_instrume", "CAMERA deleted, INSTRUME = 'HyperCam'", _SE, EXIT_BAD_INPUT,
         ("instrume.fits.fz", "HDU 0", "'HyperCam'", "decam", "--camera"), _raw_with("INSTRUME", "HyperCam")),
    Case("nonexistent_path", "a raw path that does not exist", _SE, EXIT_BAD_INPUT,
         ("does-not-exist.fits.fz", "not found"), _nothing),
    Case("odd_file_name", "raw in 'exposé 1; rm -rf/raw 'ünïcode' $(x).fits.fz', via '..', EXPTIME deleted", _SE,
         EXIT_BAD_INPUT, ("raw 'ünïcode' $(x).fits.fz", "exposé 1; rm -rf", "'EXPTIME'"), _odd_raw_name),
    Case("wrong_size_calibration", "calib/bias.fits with every CCD cropped to 100 x 100",
         "single-epoch run --exposure {raw} --calib {input} --refcat {refcat} --out {out} --jobs 2",
         EXIT_BAD_INPUT, ("bias.fits", "HDU 1", "(100, 100)", "expected", "(1024, 512)", "--calib"),
         _calib_wrong_size),
    Case("all_zero_ccd", "raw CCD S2 (ccd 26) all zeros, overscan included", _SE, EXIT_PARTIAL,
         ("HDU 2 (S2)", "every raw pixel equals 0 ADU", "dead CCD"), _ccd_pixels("S2", np.zeros_like),
         kind="science", qa=(26, "dead CCD")),
    Case("all_nan_ccd", "raw CCD N1 (ccd 32) written as float32 NaN", _SE, EXIT_PARTIAL,
         ("HDU 3 (N1)", "100% of the raw pixels are NaN"), _ccd_pixels("N1", _all_nan), kind="science",
         qa=(32, "NaN")),
    Case("saturated_ccd", "raw CCD N2 (ccd 33) at 65535 ADU everywhere", _SE, EXIT_PARTIAL,
         ("HDU 4 (N2)", "at the ADC maximum 65535", "saturated CCD"), _ccd_pixels("N2", lambda d: np.full_like(d, 65535)),
         kind="science", qa=(33, "saturated")),
    Case("cloudy_no_stars", "every data pixel replaced by sky + noise: thick cloud, no star", _SE, EXIT_PARTIAL,
         ("too few stars",), _cloudy, kind="science", qa=(None, "too few stars")),
    Case("refcat_no_overlap", "the astrometric reference catalog moved by 180 deg in RA",
         "single-epoch run --exposure {raw} --calib {calib} --refcat {input} --out {out} --jobs 2",
         EXIT_BAD_INPUT, ("refcat_far.fits", "HDU 1", "overlaps", "expected one within", "--refcat"), _refcat_far),
    Case("negative_jobs", "--jobs -3", "single-epoch run --exposure {input} --calib {calib} --refcat {refcat} "
         "--out {out} --jobs -3", EXIT_BAD_INPUT, ("--jobs", "-3", "expected"), _raw_copy),
    Case("absurd_exposures", "sim night --exposures 100000000", _SIM + " --exposures 100000000",
         EXIT_BAD_INPUT, ("--exposures", "100000000", "expected"), _nothing),
    Case("negative_exposures", "sim night --exposures -5", _SIM + " --exposures -5", EXIT_BAD_INPUT,
         ("--exposures", "-5", "expected at least 1"), _nothing),
    Case("bad_night", "sim night --night 2026-13-45", "sim night --camera decam-mini --night 2026-13-45 "
         "--exposures 1 --no-progress --out {out}", EXIT_BAD_INPUT, ("2026-13-45", "YYYY-MM-DD"), _nothing),
    Case("broken_yaml", "sites/local.yaml with an unclosed bracket", "config show --survey demo --site local",
         EXIT_BAD_INPUT, ("local.yaml", "line", "not valid YAML"),
         _config_dir(lambda t: t.replace("cores: 2", "cores: [2")), env={"COSMODM_CONFIG_DIR": "{input_dir}"}),
    Case("yaml_unknown_key", "sites/local.yaml with 'corez: 2' for 'cores: 2'", "config show --survey demo",
         EXIT_BAD_INPUT, ("local.yaml", "corez"), _config_dir(lambda t: t.replace("cores: 2", "corez: 2")),
         env={"COSMODM_CONFIG_DIR": "{input_dir}"}),
    Case("yaml_wrong_type", "sites/local.yaml with 'cores: many'", "config show --survey demo",
         EXIT_BAD_INPUT, ("local.yaml", "cores", "'many'", "integer"),
         _config_dir(lambda t: t.replace("cores: 2", "cores: many")), env={"COSMODM_CONFIG_DIR": "{input_dir}"}),
    Case("checksum_mismatch", "a copy of the good products with one catalog's bytes flipped", _REG, EXIT_BAD_INPUT,
         ("_cat.fits", "sha256", "the manifest says", "nothing was", "re-run"), _checksum_mismatch),
    Case("tag_escapes_root", "manifest survey tag '../../escape'", _REG, EXIT_BAD_INPUT,
         ("survey", "'../../escape'", "without '..'"), _manifest_tag("survey", "../../escape")),
    Case("sql_name_tag", "manifest band tag \"g'; DROP TABLE products; --\"", _REG, EXIT_BAD_INPUT,
         ("'band'", "DROP TABLE", "is not allowed"), _manifest_tag("band", "g'; DROP TABLE products; --")),
    Case("sql_name_lookup", "archive lineage of \"1 OR 1=1; DROP TABLE products\"",
         "archive lineage {input} --db {db} --root {root}", EXIT_BAD_INPUT, ("1 OR 1=1", "no product", "archive find"),
         lambda base, folder: "1 OR 1=1; DROP TABLE products"),
    Case("broken_manifest", "manifest.json cut to a third", _REG, EXIT_BAD_INPUT,
         ("manifest.json", "JSON"), _broken_manifest),
    Case("missing_manifest", "a manifest path that does not exist", _REG, EXIT_BAD_INPUT,
         ("no-such-job/manifest.json", "not found"), lambda base, folder: folder / "no-such-job" / "manifest.json"),
    Case("ingested_twice", "the good exposure's manifest registered a second time", _REG, EXIT_OK,
         ("registered",), _good_manifest),
    Case("odd_manifest_path", "the good products under 'sub dir/../prodüits de la nuit 1/'", _REG, EXIT_OK,
         ("prodüits de la nuit 1", "registered"), _odd_names),
    Case("archived_file_corrupt", "one archived catalog's bytes flipped (a copy of the archive)",
         "archive verify --db sqlite:///{case_dir}/archive.db --root {case_dir}/archive", EXIT_BAD_INPUT,
         ("CORRUPT", "_catalog.fits"), _archived_file_corrupt, quarantines=True),
    Case("database_unreachable", "archive register against PostgreSQL on a closed port",
         "archive register {good}/manifest.json --db postgresql+psycopg://nobody@127.0.0.1:9/none --root {root}",
         EXIT_TRANSIENT, ("retry",), _nothing),
)


def make_case(case: Case, base: Base, folder: Path) -> tuple[list[str], dict[str, str], Path]:
    """Make the case's input under ``folder``; return (argv after ``cosmodm``, extra env, the input path)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = case.make(base, folder)
    return case_argv(case, base, folder, made)


def case_argv(case: Case, base: Base, folder: Path, made: Path | str) -> tuple[list[str], dict[str, str], Path]:
    values = {**base.values(), "input": str(made), "out": str(folder / "out_run"),
              "input_dir": str(Path(made).parent.parent), "case_dir": str(folder)}
    argv = [word.format(**values) for word in case.command.split()]
    env = {k: v.format(**values) for k, v in case.env.items()}
    return argv, env, Path(made)


def markdown() -> str:
    """The README table of the corpus (generated here so it cannot drift from the tests)."""
    codes = {0: "0 done", 3: "3 failed CCDs", 65: "65 bad input", 75: "75 transient"}
    lines = ["| case | input | command (`cosmodm ...`) | exit | message contains |", "|---|---|---|---|---|"]
    for c in CASES:
        frags = ", ".join(f"`{f}`" for f in c.fragments)
        cmd = c.command.replace("|", "\\|")
        lines.append(f"| {c.name} | {c.how.replace('|', '/')} | `{cmd}` | {codes.get(c.code, c.code)} | {frags} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markdown", action="store_true", help="print the README table and stop")
    p.add_argument("--out", type=Path, help="make the corpus here and print each case's command")
    args = p.parse_args(argv)
    if args.markdown or not args.out:
        print(markdown())
        return 0
    base = make_base(args.out / "base")
    for case in CASES:
        words, env, _ = make_case(case, base, args.out / case.name)
        print(case.name, env or "", "cosmodm", " ".join(repr(w) for w in words))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
