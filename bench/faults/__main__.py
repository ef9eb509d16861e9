"""``python -m bench.faults [NAME ...] [--list]`` (``make faults``)."""

from __future__ import annotations

import sys

from bench.faults import main

sys.exit(main())
