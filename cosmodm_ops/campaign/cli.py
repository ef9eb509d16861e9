"""``cosmodm campaign ...``: reprocessing campaigns from a terminal.

::

    cosmodm campaign plan --survey demo --stage single_epoch --nights 2026-11-23 --target-version v1 \\
        --override single_epoch.detect_thresh=3.0            # the impact preview; creates nothing
    cosmodm campaign submit ... [--local | (Airflow REST API: $COSMODM_AIRFLOW_URL + credentials)] [--queue]
    cosmodm campaign list ; cosmodm campaign show ID [--watch]
    cosmodm campaign cancel ID ; cosmodm campaign resume ID [--local] ; cosmodm campaign retry-failed ID [--local]
    cosmodm campaign decide ID ITEM_KEY accept|quarantine|rerun --who NAME [--override KEY=VALUE]

``--json`` on every command. Exit codes: 0 done; 65 bad input (nothing was created);
75 the archive database or the Airflow API is unreachable (retry).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_TRANSIENT = 0, 65, 75


def _selection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="", help="campaign name (default: <stage>-<version>)")
    p.add_argument("--description", default="")
    p.add_argument("--survey", required=True, help="include/configs/surveys/<survey>.yaml")
    p.add_argument("--stage", required=True, help="single_epoch | coadd | calibrate | single_epoch+downstream")
    p.add_argument("--target-version", required=True, help="pipeline version tag of the new products")
    p.add_argument("--site", default="local", help="include/configs/sites/<site>.yaml")
    p.add_argument("--nights", default="", help="comma-separated YYYY-MM-DD")
    p.add_argument("--night-from", default=None)
    p.add_argument("--night-to", default=None)
    p.add_argument("--expnums", default="", help="comma-separated exposure numbers")
    p.add_argument("--bands", default="")
    p.add_argument("--tiles", default="")
    p.add_argument("--box", default=None, help="RA_MIN,RA_MAX,DEC_MIN,DEC_MAX (degrees) on the tiling")
    p.add_argument("--tiling", default=None, help="tiling of --tiles/--box (default: the survey's)")
    p.add_argument("--qa", default="any", help="any | pass | fail | quarantined")
    p.add_argument("--stale", action="store_true", help="everything downstream of a superseded product")
    p.add_argument("--stale-from", default=None, help="downstream of this superseded product (id, path, sha256)")
    p.add_argument("--from-version", default=None, help="items whose current products are of this version")
    p.add_argument("--from-config-hash", default=None, help="items made with this config hash")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (VALUE is JSON or a string), repeatable")
    p.add_argument("--overrides", default=None, help="config overrides as one JSON mapping")
    p.add_argument("--priority", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=100)
    p.add_argument("--max-parallel", type=int, default=0, help="array elements at once (0: the site's)")
    p.add_argument("--max-retries", type=int, default=1)
    p.add_argument("--qa-borderline", type=float, default=0.05)
    p.add_argument("--max-failure-rate", type=float, default=0.25)
    p.add_argument("--json", action="store_true")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--overrides JSON`` then each ``--override KEY=VALUE`` (VALUE is JSON, else a string)."""
    from cosmodm_ops.campaign import CampaignInputError

    overrides: dict[str, Any] = {}
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except json.JSONDecodeError as err:
            msg = f"--overrides: not valid JSON ({err.msg} at character {err.pos})"
            raise CampaignInputError(msg) from err
    for text in args.override:
        key, sep, value = text.partition("=")
        if not sep or not key:
            msg = f"--override {text!r}: expected KEY=VALUE, e.g. single_epoch.detect_thresh=3.0"
            raise CampaignInputError(msg)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _params(args: argparse.Namespace) -> dict[str, Any]:
    overrides = _overrides(args)
    names = ("name", "description", "survey", "stage", "target_version", "site", "nights", "night_from",
             "night_to", "expnums", "bands", "tiles", "box", "tiling", "qa", "stale", "stale_from", "from_version",
             "from_config_hash", "priority", "chunk_size", "max_parallel", "max_retries", "qa_borderline",
             "max_failure_rate")
    params = {n: getattr(args, n) for n in names}
    params["overrides"] = overrides
    params["queue"] = bool(getattr(args, "queue", False))
    return params


def _print(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, sort_keys=True, default=str))
    else:
        print(text)


def _guard(func: Any) -> Any:
    """Bad input -> 65 with the message; unreachable database/API -> 75; never a traceback."""
    def run(args: argparse.Namespace) -> int:
        from cosmodm_ops.archive import ArchiveError, ArchiveUnavailable
        from cosmodm_ops.campaign import CampaignInputError, IllegalTransition
        from cosmodm_ops.campaign.rest import AirflowAPIError
        from cosmodm_ops.config import ConfigError

        try:
            return int(func(args) or 0)
        except (CampaignInputError, IllegalTransition, ConfigError) as err:
            print(f"cosmodm campaign: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except (ArchiveUnavailable, AirflowAPIError) as err:
            print(f"cosmodm campaign: {err}", file=sys.stderr)
            return EXIT_TRANSIENT
        except ArchiveError as err:
            print(f"cosmodm campaign: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return run


def cmd_plan(args: argparse.Namespace) -> int:
    from cosmodm_ops.workflows.campaign import plan_campaign

    params = _params(args)
    params["dry_run"] = True  # a preview: an empty selection is reported, not refused
    _req, items, preview, _h = plan_campaign(params)
    if not items:
        print("cosmodm campaign: 0 items match the selection", file=sys.stderr)
        _print(args, preview.to_dict(), preview.to_markdown())
        return EXIT_BAD_INPUT
    _print(args, preview.to_dict(), preview.to_markdown())
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from cosmodm_ops.workflows.campaign import create_campaign, plan_campaign, run_local

    params = _params(args)
    if not args.local:
        from cosmodm_ops.campaign.rest import AirflowREST

        plan_campaign(params)  # bad input is refused here, before anything is triggered
        api = AirflowREST.from_env()
        run = api.trigger("reprocess_campaign", params)
        _print(args, {"dag_id": "reprocess_campaign", "dag_run_id": run.get("dag_run_id"), "state": run.get("state")},
               f"triggered reprocess_campaign run {run.get('dag_run_id')} at {api.url}")
        return EXIT_OK
    row = create_campaign(params, source=None, created_by=args.who)
    print(f"campaign {row['id']} created ({row['state']}); running its chunks locally", file=sys.stderr)
    summary = run_local(int(row["id"]), max_parallel=max(1, args.max_parallel or 2), survey=args.survey,
                        site=args.site)
    _print(args, summary)
    return EXIT_OK if summary["failed"] == 0 else 3


def cmd_list(args: argparse.Namespace) -> int:
    from cosmodm_ops.workflows.campaign import store_for

    rows = store_for(args.survey, args.site).list(args.state)
    lines = [f"{r['id']:>5}  {r['state']:<18} {r['stage']:<24} {r['target_version']:<8} {r['name']}  "
             + " ".join(f"{k}={v}" for k, v in sorted(r["items"].items())) for r in rows]
    _print(args, rows, "\n".join(lines) or "no campaigns")
    return EXIT_OK


def _show_text(info: dict[str, Any]) -> str:
    eta = f"; ETA {info['eta_s']} s" if info["eta_s"] is not None else ""
    head = f"campaign {info['campaign']} {info['name']!r}: {info['state']} ({info['stage']} -> "
    lines = [head + f"{info['target_version']})"]
    lines.append("  by state: " + ", ".join(f"{k} {v}" for k, v in sorted(info["by_state"].items())))
    lines.append(f"  core-hours used {info['core_hours_used']:.4g} of {info['core_hours_estimated']:.4g} "
                 f"estimated{eta}")
    lines.append(f"  superseded {info['superseded']}, stale downstream {info['stale_downstream']}")
    for f in info["failures"][:10]:
        lines.append(f"  FAILED {f['key']} (attempts {f['attempts']}, exit {f['exit_code']}):")
        lines += ["      " + ln for ln in str(f["diagnostics"] or "").splitlines()[-8:]]
    if info["borderline"]:
        lines.append("  borderline QA awaiting a decision: " + ", ".join(info["borderline"]))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    from cosmodm_ops.workflows.campaign import show

    info = show(args.id, survey=args.survey, site=args.site)
    if args.watch:
        _watch(args, info)
        info = show(args.id, survey=args.survey, site=args.site)
    _print(args, info, _show_text(info))
    return EXIT_OK


def _watch(args: argparse.Namespace, info: dict[str, Any]) -> None:
    import time

    from tqdm import tqdm

    from cosmodm_ops.workflows.campaign import show

    total = info["items"]
    with tqdm(total=total, desc=f"campaign {args.id}", unit="item", file=sys.stderr) as bar:
        while True:
            ended = info["done"] + info["failed"] + info["skipped"] + info["cancelled"]
            bar.n = ended
            bar.set_postfix(state=info["state"], failed=info["failed"])
            bar.refresh()
            if info["state"] in ("done", "cancelled", "rejected", "dry_run", "paused"):
                return
            time.sleep(args.interval)
            info = show(args.id, survey=args.survey, site=args.site)


def _state_cmd(name: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        from cosmodm_ops.workflows import campaign as wf

        summary = getattr(wf, name)(args.id, survey=args.survey, site=args.site)
        if getattr(args, "local", False) and name in ("resume", "retry_failed"):
            summary = wf.run_local(args.id, survey=args.survey, site=args.site)
        _print(args, summary)
        return EXIT_OK
    return cmd


def cmd_element(args: argparse.Namespace) -> int:
    from cosmodm_ops.campaign.execute import element_main

    return element_main(args.chunk_file, args.index)


def cmd_decide(args: argparse.Namespace) -> int:
    from cosmodm_ops.campaign import adjudicate
    from cosmodm_ops.workflows.campaign import store_for

    row = adjudicate(store_for(args.survey, args.site), args.id, args.key, args.decision, args.who,
                     _overrides(args) or None)
    _print(args, {k: row.get(k) for k in ("item_key", "state", "decision", "decided_by", "decided_at")})
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``campaign`` command group to the ``cosmodm`` parser."""
    group = sub.add_parser("campaign", help="reprocessing campaigns: plan, submit, follow, resume",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plan = gsub.add_parser("plan", help="print the impact preview of a selection (creates nothing)")
    _selection_flags(plan)
    plan.set_defaults(func=_guard(cmd_plan))
    submit = gsub.add_parser("submit", help="create and run a campaign (Airflow REST API, or --local)")
    _selection_flags(submit)
    submit.add_argument("--local", action="store_true", help="run the chunks here, without Airflow")
    submit.add_argument("--queue", action="store_true", help="queue behind an overlapping running campaign")
    submit.add_argument("--who", default=None, help="operator name recorded on the campaign")
    submit.set_defaults(func=_guard(cmd_submit))

    def common(p: argparse.ArgumentParser, with_id: bool = True) -> argparse.ArgumentParser:
        if with_id:
            p.add_argument("id", type=int)
        p.add_argument("--survey", default="demo", help="survey whose site config names the archive")
        p.add_argument("--site", default="local")
        p.add_argument("--json", action="store_true")
        return p

    lst = common(gsub.add_parser("list", help="every campaign with item counts"), with_id=False)
    lst.add_argument("--state", default=None)
    lst.set_defaults(func=_guard(cmd_list))
    sh = common(gsub.add_parser("show", help="progress, ETA, core-hours, failures"))
    sh.add_argument("--watch", action="store_true", help="a progress bar until the campaign ends")
    sh.add_argument("--interval", type=float, default=2.0)
    sh.set_defaults(func=_guard(cmd_show))
    for name, func in (("cancel", "cancel"), ("resume", "resume"), ("retry-failed", "retry_failed")):
        p = common(gsub.add_parser(name, help=f"{name} a campaign"))
        if name != "cancel":
            p.add_argument("--local", action="store_true", help="then run what is planned, here")
        p.set_defaults(func=_guard(_state_cmd(func)))
    el = gsub.add_parser("element", help="(batch job) run one element of a chunk: $COSMODM_ARRAY_INDEX")
    el.add_argument("--chunk-file", required=True)
    el.add_argument("--index", type=int, default=None, help="default: $COSMODM_ARRAY_INDEX")
    el.set_defaults(func=cmd_element)
    dec = common(gsub.add_parser("decide", help="adjudicate a borderline-QA item"))
    dec.add_argument("key")
    dec.add_argument("decision", choices=("accept", "quarantine", "rerun"))
    dec.add_argument("--who", required=True)
    dec.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="rerun only: config override for this item's next run (JSON or a string), repeatable")
    dec.add_argument("--overrides", default=None, help="rerun only: config overrides as one JSON mapping")
    dec.set_defaults(func=_guard(cmd_decide))
