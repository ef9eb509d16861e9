"""Small helpers that the single-epoch and coadd sides (and the QA reports) share.

- :mod:`.provenance`: UTC timestamps, the git commit, the versions of every tool a product depends on;
- :mod:`.jsonio`: JSON-safe conversion of numpy values and atomic JSON writes;
- :mod:`.scratch`: scratch folders that fall back off a full RAM disk and remove themselves;
- :mod:`.htmlreport`: self-contained HTML QA pages (escaped cells, embedded PNG figures).

Nothing here imports Airflow, SQL or the science packages at module level.
"""

from __future__ import annotations

from cosmodm_ops.common.htmlreport import embed_png, html_page, html_table, write_html_report
from cosmodm_ops.common.jsonio import jsonable, write_json
from cosmodm_ops.common.provenance import git_commit, utc_now, versions
from cosmodm_ops.common.scratch import scratch_root, workdir

__all__ = [
    "embed_png",
    "git_commit",
    "html_page",
    "html_table",
    "jsonable",
    "scratch_root",
    "utc_now",
    "versions",
    "workdir",
    "write_html_report",
    "write_json",
]
