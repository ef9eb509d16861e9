"""``make demo``: run the main job on the embedded defaults and print one JSON line.

For now: load the embedded configuration. The simulator and the nightly DAG extend it.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from cosmodm_ops.config import config_hash, load_config

    cfg = load_config("demo", site="local")
    print(json.dumps({"survey": cfg.survey.name, "camera": cfg.camera.name, "config_hash": config_hash(cfg)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
