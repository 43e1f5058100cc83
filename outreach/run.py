"""One ``outreach run``: lock, plan, dispatch, report. Also the entry point for embedding outreach.

    from outreach.run import run_once
    report = run_once("outreach.toml", now=None)

The CLI is a thin layer over these functions, so what a test or an embedding application gets is
exactly what cron gets.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from outreach.audience_check import check_audience
from outreach.config import Project, load_project
from outreach.dispatch import Dispatcher
from outreach.errors import ConfigError, Problem, UsageError
from outreach.ledger import Ledger, epoch
from outreach.planner import Planner, PlanRow
from outreach.plugins import Plugins, get_plugins
from outreach.report import RunReport


def parse_now(value: str | None, tz) -> datetime:
    """``--now`` as an aware UTC instant (a time without an offset is in the deployment's zone)."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--now: expected an ISO 8601 time such as 2026-11-24T09:00 or "
                         f"2026-11-24T09:00:00+04:00, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.astimezone(timezone.utc)


def check_campaign_names(project: Project, names: Sequence[str] | None) -> None:
    """Refuse ``--campaign`` names that are not campaigns of the project."""
    for name in names or ():
        if name not in project.campaigns:
            known = ", ".join(sorted(project.campaigns)) or "none"
            raise UsageError(f"--campaign: no campaign named {name!r} (campaigns: {known})")


def execute(project: Project, plugins: Plugins, ledger: Ledger, now: datetime, *,
            dry_run: bool = False, campaigns: Sequence[str] | None = None, send: bool = True,
            on_row: Callable[[PlanRow], None] | None = None,
            progress: Callable[[str, int, int | None], None] | None = None,
            command: str = "run", skip_invalid: bool = False) -> RunReport:
    """Plan (and unless ``dry_run``, record and dispatch) one run at ``now``.

    The audience is checked first, exactly as ``outreach validate`` checks it
    (:func:`~outreach.audience_check.check_audience`): what it refuses raises ConfigError before
    anything is planned, or with ``skip_invalid`` leaves out the campaigns concerned.
    A real run holds the planner lock for its whole length; a dry run takes no lock and writes
    nothing, so ``outreach plan`` can be used while cron runs.
    """
    check_campaign_names(project, campaigns)
    project, left_out = check_audience(project, project.source(), now).enforce(
        project, skip_invalid=skip_invalid)
    if campaigns and left_out:
        campaigns = [c for c in campaigns if c in project.campaigns]
        if not campaigns:
            raise ConfigError([Problem(str(project.file), "", line) for line in left_out])
    # Suppressions an older version stored as typed are rewritten in the form compared (a plan
    # too: what it shows must be what a run does).
    ledger.normalize_suppressions(project.phone_region)
    report_created = ledger.created
    report = RunReport(now=now.isoformat(timespec="seconds"), dry_run=dry_run,
                       skipped_campaigns=[str(p) for p in project.skipped] + left_out,
                       ledger_created=report_created)
    for name in project.campaigns:
        if not campaigns or name in campaigns:
            report.campaign(name)

    def stage(name: str):
        return (lambda n, total=None: progress(name, n, total)) if progress else None

    if dry_run:
        Planner(project, plugins, ledger, now, report, campaigns=campaigns, dry_run=True,
                on_row=on_row, progress=stage("planning")).run()
        return report
    with ledger.planner_lock() as planning:  # writes through the lock's own session
        run_id = ledger.start_run(command, epoch(now))
        report.run_id = run_id
        status = "failed"
        try:
            # Claims of a crashed process are taken back before planning, so that the messages
            # queued again are re-checked for consent with the others (outreach.recheck).
            report.recovered = ledger.recover()
            Planner(project, plugins, planning, now, report, campaigns=campaigns, run_id=run_id,
                    on_row=on_row, progress=stage("planning")).run()
            if send:
                Dispatcher(project, plugins, ledger, now, report, campaigns=campaigns,
                           owner=run_id, progress=stage("sending")).run()
            status = "ok" if report.ok else "problems"
        finally:
            ledger.finish_run(run_id, status, report.as_dict())
    return report


def run_once(config: str | Path = "outreach.toml", *, now: datetime | None = None,
             dry_run: bool = False, campaigns: Sequence[str] | None = None) -> RunReport:
    """Load a project and run it once, as ``outreach run`` does."""
    plugins = get_plugins()
    project = load_project(Path(config), plugins)
    ledger = Ledger(project.ledger_url)
    try:
        return execute(project, plugins, ledger, now or datetime.now(timezone.utc),
                       dry_run=dry_run, campaigns=campaigns)
    finally:
        ledger.close()
