"""Raw-CCD detrend speed: ours vs ccdproc vs a memory copy (``cosmodm bench detrend``).

Prints a table and one JSON line ``{"ours_ms", "ccdproc_ms", "memcopy_ms", ...}``; see
:mod:`cosmodm_ops.single_epoch.bench` for what each figure times.
"""

from __future__ import annotations

import json

from cosmodm_ops.single_epoch.bench import detrend, format_table


def main() -> dict:
    results = detrend()
    print(format_table(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
