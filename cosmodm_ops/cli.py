"""``cosmodm``: what a batch job runs on the compute node, and tools for people.

Each command group lives beside the code it drives, in a module with a
``register(subparsers)`` function; this file only assembles them, so adding a
group never touches another group's code. Heavy imports stay inside the
command functions: ``cosmodm --help`` must be instant on a login node.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_OK", "EXIT_PARTIAL", "EXIT_TRANSIENT", "build_parser", "main"]

#: Exit codes shared by every command (a batch job's exit code is read by the Airflow layer).
EXIT_OK = 0
"""Done."""
EXIT_PARTIAL = 3
"""Done, but some units (CCDs) failed; see qa.json."""
EXIT_BAD_INPUT = 65
"""Bad input (EX_DATAERR): do not retry, quarantine."""
EXIT_TRANSIENT = 75
"""Transient failure (EX_TEMPFAIL): retrying may succeed."""
EXIT_BUG = 70
"""Internal error (EX_SOFTWARE): an exception no command translated; rerun with -vv for the traceback."""

#: Error classes that are bad input wherever they escape a command (module, class name); a command
#: translates its own first, this is the last boundary so that a user never sees a traceback for them.
_BAD_INPUT_ERRORS: tuple[tuple[str, str], ...] = (
    ("cosmodm_ops.config.loader", "ConfigError"),
    ("cosmodm_ops.model", "TagError"),
    ("cosmodm_ops.single_epoch.inputs", "BadInputError"),
    ("cosmodm_ops.fits", "FitsError"),
    ("cosmodm_ops.archive.errors", "ArchiveInputError"),
    ("cosmodm_ops.clusters.rescore", "RescoreInputError"),
)

#: Command groups: (module, group name). A module missing here is simply not offered.
_GROUPS: tuple[tuple[str, str], ...] = (
    ("cosmodm_ops.fits_cli", "fits"),
    ("cosmodm_ops.sim.cli", "sim"),
    ("cosmodm_ops.single_epoch.cli", "single-epoch"),
    ("cosmodm_ops.archive.cli", "archive"),
    ("cosmodm_ops.batch.cli", "batch"),
    ("cosmodm_ops.coadd.cli", "coadd"),
    ("cosmodm_ops.clusters.cli", "clusters"),
    ("cosmodm_ops.config.cli", "config"),
    ("cosmodm_ops.campaign.cli", "campaign"),
    ("cosmodm_ops.bench_cli", "bench"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every group that is installed)."""
    parser = argparse.ArgumentParser(prog="cosmodm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for module_name, _group in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cosmodm`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the last boundary: no traceback for a user (-vv shows it)
        return _untranslated(err, args)
    return int(code or 0)


def _untranslated(err: Exception, args: argparse.Namespace) -> int:
    """The one boundary for what no command translated: bad input -> 65, anything else -> 70 (a bug)."""
    bad = tuple(getattr(sys.modules[m], c) for m, c in _BAD_INPUT_ERRORS if m in sys.modules)
    if isinstance(err, bad):
        print(f"cosmodm {args.group}: bad input: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.verbose >= 2:
        raise err
    print(f"cosmodm {args.group}: internal error ({type(err).__name__}: {err}); this is a bug: rerun with -vv "
          "for the traceback and report it with the command line", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
