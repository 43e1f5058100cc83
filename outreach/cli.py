"""The ``outreach`` command line.

Every exit goes through :class:`outreach.errors.ExitCode` (the README documents the numbers): 0
fine; 1 some messages failed or have an unknown outcome; 2 invalid configuration or usage; 3
another run holds the ledger, nothing was done; 4 an unexpected failure (the ledger unreachable
or unreadable, a bug), described in one line.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Sequence

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outreach import __version__
from outreach.config import Project, find_config, load_project, sample_variables
from outreach.errors import ConfigError, ExitCode, OutreachError, UsageError
from outreach.ledger import Ledger, epoch, from_epoch, wall_clock
from outreach.planner import PlanRow
from outreach.plugins import Plugins, get_plugins
from outreach.policy.quiet_hours import QUIET_WAIT
from outreach.render import RenderError, render_stored
from outreach.report import COUNTERS, RunReport
from outreach.run import check_campaign_names, execute, parse_now
from outreach import scaffold
from outreach.scaffold import EXAMPLES, PLUGIN_KINDS

# Under cron or in a pipe there is no terminal width to respect: keep tables whole for the log
# (unless COLUMNS says how wide to be).
_FIXED = "COLUMNS" in os.environ
out = Console(highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() or _FIXED else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True,
              width=None if sys.stderr.isatty() or _FIXED else 160)


class _State:
    """What every command needs, made on first use."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self._plugins: Plugins | None = None

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            self._plugins = get_plugins()
        return self._plugins

    def project(self, only_valid: bool = False, secrets: bool = True) -> Project:
        """The deployment; ``secrets=False`` for a command that contacts no provider, so it works
        where the providers' secrets are not set (a laptop, a support shell)."""
        return load_project(self.config, self.plugins, only_valid=only_valid, secrets=secrets)


def _shown(when: datetime | str | int | None, tz: tzinfo) -> str:
    """A time for people: in the deployment's zone, to the second, with the zone's abbreviation
    (``2026-11-24 09:00:00 PST``). JSON keeps ISO 8601 for machines."""
    if when is None or when == "":
        return ""
    if isinstance(when, (int, float)):
        when = from_epoch(int(when))
    elif isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


#: The narrowest a column of names or reasons is made before a table gives way to lines.
_WORDS = 12


def _table(title: str, columns: Sequence[str], numbers: Sequence[str] = ()) -> Table:
    """A table whose numbers and headers are never cut: the columns in ``numbers`` do not wrap,
    others (names, reasons, times) wrap between words, and inside a word only past ``_WORDS``."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        if col in numbers:
            table.add_column(col, justify="right", no_wrap=True)
        else:
            table.add_column(col, overflow="fold")
    return table


def _print_table(table: Table) -> None:
    """Print ``table``; where the terminal is too narrow for it (every number whole, every column
    of words at least as wide as its longest word, up to ``_WORDS``), each row becomes one line
    of ``header value`` pairs instead, which the terminal wraps but never cuts."""
    from rich.cells import cell_len

    needed = len(table.columns) + 1  # the borders
    for column in table.columns:
        texts = [str(column.header), *(str(c) for c in column.cells)]
        if column.no_wrap:
            column.min_width = max(cell_len(t) for t in texts)
        else:
            column.min_width = min(_WORDS, max(cell_len(w) for t in texts for w in t.split() or [""]))
        needed += column.min_width + 2  # the padding
    if needed <= out.size.width:
        out.print(table)
        return
    if table.title:
        out.print(str(table.title), markup=False)
    headers = [str(c.header) for c in table.columns]
    for row in zip(*([str(cell) for cell in c.cells] for c in table.columns)):
        first, *rest = row
        out.print(f"{first}: " + ", ".join(f"{h} {v}" for h, v in zip(headers[1:], rest) if v),
                  markup=False)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _progress(enabled: bool):
    """A progress bar per stage (customers planned, messages sent) on a terminal only: quiet under
    cron, with ``--json``, or when stderr is not a terminal.

    Returns ``(update, stop)``; ``update(stage, done, total)`` takes ``total=None`` when it is not
    known (a spinner and a count then).
    """
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(SpinnerColumn(), TextColumn("{task.description:<8}"), BarColumn(),
                   MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}
    bar.start()

    def update(stage: str, done: int, total: int | None = None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return update, bar.stop


def _config_after_command(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    state = ctx.find_object(_State)
    if value is not None and state is not None:
        state.config = find_config(value)


class _Outreach(click.Group):
    """The ``outreach`` group: ``-c/--config`` and ``--json`` go before or after the command.

    ``-c`` is added to every command (plugins' too) as it is looked up; ``--json`` given before
    the command becomes the command's own ``--json`` default, and is refused, naming the command,
    where it has no JSON output.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not any(
                "-c" in p.opts or "--config" in p.opts for p in command.params):
            command.params.append(click.Option(
                ["-c", "--config"], type=click.Path(path_type=Path), expose_value=False,
                callback=_config_after_command,
                help="The deployment file (default: ./outreach.toml, or $OUTREACH_CONFIG); "
                     "also accepted before the command."))
        return command


@click.group(cls=_Outreach, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", type=click.Path(path_type=Path), envvar="OUTREACH_CONFIG",
              default=None, help="The deployment file (default: ./outreach.toml, or $OUTREACH_CONFIG).")
@click.option("--json", "as_json", is_flag=True,
              help="Print as JSON (the same as the command's own --json).")
@click.version_option(__version__, prog_name="outreach")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, as_json: bool) -> None:
    """Keep in touch with customers by email and SMS, without ever bothering them."""
    ctx.obj = _State(find_config(config))
    name = ctx.invoked_subcommand
    if as_json and name:
        command = cli.get_command(ctx, name)
        if command is None or not any(p.name == "as_json" for p in command.params):
            raise UsageError(f"--json: `outreach {name}` has no JSON output")
        ctx.default_map = {**(ctx.default_map or {}),
                           name: {**(ctx.default_map or {}).get(name, {}), "as_json": True}}


# ---------------------------------------------------------------------------------------- init / new-plugin
@cli.command()
@click.argument("directory", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--example", type=click.Choice(list(EXAMPLES)), default="bakery", show_default=True,
              help="What to start from: the demo bakery, or a blank project with one campaign.")
def init(directory: Path, example: str) -> None:
    """Write a working project into DIRECTORY (default: here): outreach.toml, campaigns, audience.

    Never overwrites: when any of the files exists, nothing is written (exit 2).
    """
    written = scaffold.init_project(directory, example)
    out.print(f"wrote {len(written)} files into {directory}/ ({EXAMPLES[example]})", markup=False)
    out.print("next:", markup=False)
    if directory.resolve() != Path.cwd().resolve():
        out.print(f"  cd {directory}", markup=False)
    for command, what in (("outreach validate", "check every file"),
                          ("outreach plan", "who would get what, and why not; sends nothing"),
                          ("outreach run", "send (into outbox/: no credentials needed)")):
        out.print(f"  {command:<20} # {what}", markup=False)


@cli.command("new-plugin")
@click.argument("kind", type=click.Choice(list(PLUGIN_KINDS)))
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def new_plugin(kind: str, name: str, directory: Path | None) -> None:
    """Write a plugin distribution: a KIND named NAME, in DIRECTORY (default: ./outreach-NAME).

    It has its pyproject.toml with the entry point, a module, and tests (using outreach.testing)
    that pass as generated. Never overwrites (exit 2).
    """
    folder, written = scaffold.new_plugin(kind, name, directory)
    out.print(f"wrote {len(written)} files into {folder}/", markup=False)
    out.print("next:", markup=False)
    out.print(f"  cd {folder}", markup=False)
    out.print('  pip install -e ".[test]"', markup=False)
    out.print("  python -m pytest", markup=False)


# ---------------------------------------------------------------------------------------- run / plan
def _print_report(report: RunReport, tz: tzinfo) -> None:
    table = _table(f"outreach {'dry run' if report.dry_run else 'run'} at {_shown(report.now, tz)}",
                   ("campaign", "due", *COUNTERS), numbers=COUNTERS)
    for rep in report.campaigns.values():
        table.add_row(rep.name, "yes" if rep.due else "no", *(str(getattr(rep, c)) for c in COUNTERS))
    _print_table(table)
    for rep in report.campaigns.values():
        if rep.error:
            out.print(f"[red]{rep.name}: {rep.error}[/red]")
        for reason, n in rep.reasons.most_common(5):
            out.print(f"  {rep.name}: {n} × {reason}", markup=False)
    for stopped in report.stopped_channels.values():
        err.print(f"channel {stopped.channel!r} stopped: {stopped.reason}. {stopped.released} "
                  "message(s) left queued, none failed: fix the channel's configuration and run "
                  "again to send them.", style="bold red", markup=False)
    if report.held_for_quiet_hours:
        out.print(f"{report.held_for_quiet_hours} message(s) due but held for quiet hours in the "
                  "recipient's zone: waiting for quiet hours to end", markup=False)
    if report.recovered != (0, 0):
        out.print(f"recovered from an earlier crash: {report.recovered[0]} queued again, "
                  f"{report.recovered[1]} marked unknown (see `outreach status`)")
    _print_audience_problems(report)


def _print_audience_problems(report: RunReport) -> None:
    """The audience rows a run or a plan skipped (or read in part), and the campaigns left out."""
    if report.row_problem_count:
        err.print(f"{report.row_problem_count} audience row problem(s) (each row skipped unless "
                  "it says otherwise):", markup=False)
        for line in report.row_problems[:10]:
            err.print(f"  {line}", markup=False)
        if report.row_problem_count > 10:
            err.print("  … (`outreach validate` lists them all)", markup=False)
    for problem in report.skipped_campaigns:
        err.print(f"campaign left out: {problem}", markup=False)


def _finish(report: RunReport, as_json: bool, tz: tzinfo) -> None:
    """Print a run's report and exit with the code cron acts on."""
    if as_json:
        _emit_json(report.as_dict())
    else:
        _print_report(report, tz)
    sys.exit(ExitCode.OK if report.ok else ExitCode.SEND_FAILED)


@cli.command()
@click.option("--now", "now_text", metavar="ISO-TIME", help="Decide everything as if it were this instant.")
@click.option("--dry-run", is_flag=True, help="Decide, but write and send nothing.")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign (repeatable).")
@click.option("--skip-invalid", is_flag=True, help="Run the valid campaigns even if others are invalid.")
@click.option("--no-send", is_flag=True, help="Plan and record, but leave delivery to `outreach dispatch`.")
@click.option("--wait", is_flag=True,
              help="With [workers]: wait until the workers have planned and sent the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def run(state: _State, now_text: str | None, dry_run: bool, campaigns: Sequence[str],
        skip_invalid: bool, no_send: bool, wait: bool, as_json: bool) -> None:
    """Plan due campaigns, record the decisions, and send what is due.

    With [workers] in outreach.toml, the run is planned in shards and sent by `outreach worker`
    processes: this command starts it and returns (or, with --wait, reports it once done).
    """
    project = state.project(only_valid=skip_invalid)
    now = parse_now(now_text, project.tz)
    if project.workers is not None and not dry_run:
        from outreach.workers.cli import start

        report, finished = start(project, state.plugins, now, campaigns=campaigns,
                                 send=not no_send, wait=wait)
        if not finished:
            if as_json:
                _emit_json(report.as_dict())
            else:
                out.print(f"run {report.run_id} started: {project.workers.shards} planning "
                          "shard(s) queued for the workers (`outreach status` follows them)",
                          markup=False)
            sys.exit(ExitCode.OK)
        _finish(report, as_json, project.tz)
    if wait:
        raise UsageError("--wait: only a run placed on workers ([workers] in outreach.toml) is "
                         "waited for; without them `outreach run` returns when it is done")
    update, stop = _progress(not as_json)
    ledger = Ledger(project.ledger_url)
    if ledger.created:  # a first run, or a ledger path that changed: never without a word
        err.print(f"created a new ledger at {_ledger_place(ledger)}", markup=False)
    try:
        report = execute(project, state.plugins, ledger, now, dry_run=dry_run, campaigns=campaigns,
                         send=not no_send, progress=update, skip_invalid=skip_invalid)
    finally:
        stop()
        ledger.close()
    _finish(report, as_json, project.tz)


@cli.command()
@click.option("--now", "now_text", metavar="ISO-TIME", help="Decide as if it were this instant.")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per candidate.")
@click.pass_obj
def plan(state: _State, now_text: str | None, campaigns: Sequence[str], as_json: bool) -> None:
    """Show who would get what, and for every skip the reason. Writes and sends nothing."""
    project = state.project(secrets=False)
    now = parse_now(now_text, project.tz)
    rows: list[PlanRow] = []
    update, stop = _progress(not as_json)
    ledger = Ledger(project.ledger_url)
    try:
        report = execute(project, state.plugins, ledger, now, dry_run=True, campaigns=campaigns,
                         on_row=rows.append, progress=update)
    finally:
        stop()
        ledger.close()
    if as_json:
        _emit_json({"now": report.now, "candidates": [r.as_dict() for r in rows],
                    "campaigns": [c.as_dict() for c in report.campaigns.values()],
                    "invalid_rows": {"count": report.row_problem_count,
                                     "first": report.row_problems}})
        return
    table = _table(f"plan at {_shown(report.now, project.tz)}",
                   ("campaign", "customer", "channel", "decision", "not before", "reason"))
    for r in rows:
        table.add_row(r.campaign, r.customer, r.channel or "-", r.decision,
                      _shown(r.not_before, project.tz), r.reason)
    _print_table(table)
    for rep in report.campaigns.values():
        if not rep.due:
            out.print(f"{rep.name}: not due ({rep.note})", markup=False)
    _print_audience_problems(report)


@cli.command()
@click.option("--now", "now_text", metavar="ISO-TIME", help="Deliver what is due at this instant.")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def dispatch(state: _State, now_text: str | None, campaigns: Sequence[str], limit: int | None,
             as_json: bool) -> None:
    """Deliver due messages without planning. Several may run at once on one ledger.

    The suppression list is re-checked before each send; consent is not (it lives in the audience,
    which only `outreach run` reads and re-checks waiting messages against).
    """
    from outreach.dispatch import Dispatcher

    project = state.project()
    now = parse_now(now_text, project.tz)
    report = RunReport(now=now.isoformat(timespec="seconds"))
    update, stop = _progress(not as_json)
    ledger = Ledger(project.ledger_url)
    try:
        Dispatcher(project, state.plugins, ledger, now, report, campaigns=campaigns,
                   progress=(lambda n, total: update("sending", n, total)) if update else None,
                   ).run(limit)
    finally:
        stop()
        ledger.close()
    _finish(report, as_json, project.tz)


@cli.command()
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True,
              help="Jobs at once in this process (planning shards and deliveries).")
@click.option("--queue", "queues", multiple=True, type=click.Choice(["outreach-plan",
                                                                      "outreach-dispatch"]),
              help="Only take jobs of this queue (repeatable; default: both).")
@click.pass_obj
def worker(state: _State, concurrency: int, queues: Sequence[str]) -> None:
    """Plan and send on this host: take jobs from the ledger's queue until stopped.

    Needs a PostgreSQL ledger and the workers extra (pip install 'outreach[workers]').
    Stop it with Ctrl-C or SIGTERM: the jobs it is running are finished first.
    """
    from outreach.workers.cli import work

    project = state.project()
    work(project, state.plugins, concurrency=concurrency, queues=queues)


# ---------------------------------------------------------------------------------------- validate
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--headers-only", is_flag=True,
              help="Check files, tables and columns without reading every row.")
@click.option("--offline", is_flag=True,
              help="Skip the checks of the providers' secrets (where they are not set).")
@click.pass_obj
def validate(state: _State, as_json: bool, headers_only: bool, offline: bool) -> None:
    """Check the deployment, every campaign and the audience, without sending anything.

    The checks `outreach run` makes before planning are the same (it refuses what this refuses,
    with the same messages); then the whole audience is read, to report every row a run would
    skip, what the source mapped, and each campaign that could reach nobody. With --offline, the
    providers' secrets are not required (each one missing is named), the rest is checked.
    """
    from outreach.audience_check import check_audience
    from outreach.survey import survey

    problems: list[str] = []
    project = None
    try:
        project = state.project(secrets=not offline)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
    unchecked = [str(p) for p in project.missing_secrets] if project is not None else []
    found = None
    now = parse_now(None, project.tz) if project is not None else None
    if project is not None and now is not None:
        source = project.source()
        problems += [str(p) for p in check_audience(project, source, now).all()]
        if not problems and not headers_only:
            update, stop = _progress(not as_json)
            try:
                found = survey(project, source, now,
                               (lambda n, total: update("reading", n, total)) if update else None)
            finally:
                stop()
    failures = [f"plugin {f.name}: {f.error}" for f in state.plugins.registry.failures]
    if project is not None:
        failures += [str(w) for w in project.warnings]
    campaigns = sorted(project.campaigns) if project else []
    result: dict[str, Any] = {"ok": not problems, "problems": problems, "plugin_failures": failures,
                              "campaigns": campaigns}
    if found is not None:
        result["audience"] = found.as_dict()
    if offline:
        result["secrets_not_checked"] = unchecked
    if as_json:
        _emit_json(result)
    else:
        for p in problems:
            err.print(p, markup=False)
        if offline:
            err.print("offline: the providers' secrets were not checked"
                      + (" (missing here: " + "; ".join(unchecked) + ")" if unchecked else ""),
                      markup=False)
        for f in failures:
            err.print(f"warning: {f}", markup=False)
        if found is not None:
            _print_survey(found)
        if not problems:
            notes = found.warnings if found is not None else []
            rows = found.row_problem_count if found is not None else 0
            tail = (f"; {rows} audience row problem(s) and {len(notes)} warning(s) above"
                    if rows or notes else "")
            out.print(f"ok: {len(campaigns)} campaign(s) valid: {', '.join(campaigns)}{tail}",
                      markup=False)
    sys.exit(ExitCode.OK if not problems else ExitCode.CONFIG)


def _print_survey(found: Any) -> None:
    """What `outreach validate` read in the audience, for people."""
    for role, origin in found.origins.items():
        count = found.customers if role == "customers" else found.events
        out.print(f"{role}: {count} from {origin}", markup=False)
        mapped = found.mapped.get(role, {})
        if mapped:
            out.print("  mapped: " + ", ".join(f"{k} ← {v}" for k, v in mapped.items()), markup=False)
        unused = found.unused.get(role)
        if unused:
            out.print("  columns no campaign reads (kept as attributes): " + ", ".join(unused),
                      markup=False)
    for key, origin in found.consents.items():
        out.print(f"consent {key}: {origin}", markup=False)
    if found.reachable:
        out.print("reachable: " + ", ".join(f"{ch} {n} of {found.customers}"
                                            for ch, n in found.reachable.items()), markup=False)
    if found.row_problem_count:
        err.print(f"{found.row_problem_count} audience row problem(s):", markup=False)
        for line in found.row_problems:
            err.print(f"  {line}", markup=False)
        if found.row_problem_count > len(found.row_problems):
            err.print(f"  … and {found.row_problem_count - len(found.row_problems)} more",
                      markup=False)
    for w in found.warnings:
        err.print(f"warning: {w}", markup=False)


# ---------------------------------------------------------------------------------------- preview / history
@cli.command()
@click.argument("campaign")
@click.option("--customer", "customer_id", metavar="ID", help="Render for this customer (default: a sample).")
@click.option("--channel", help="Render for this channel (default: every channel of the campaign).")
@click.option("--now", "now_text", metavar="ISO-TIME", help="The instant the rule sees.")
@click.option("--variant", "variant_name", metavar="NAME",
              help="Render this A/B variant (default: the customer's own, or the first).")
@click.option("--json", "as_json", is_flag=True, help="Print the rendered fields as JSON.")
@click.pass_obj
def preview(state: _State, campaign: str, customer_id: str | None, channel: str | None,
            now_text: str | None, variant_name: str | None, as_json: bool) -> None:
    """Render a campaign's message for one customer (or the sample customer), sending nothing."""
    from outreach import templates

    project = state.project(secrets=False)
    if campaign not in project.campaigns:
        raise UsageError(f"no campaign named {campaign!r} (campaigns: "
                         f"{', '.join(sorted(project.campaigns))})")
    camp = project.campaigns[campaign]
    variant = None
    if variant_name is not None:
        variant = next((v for v in camp.variants if v.name == variant_name), None)
        if variant is None:
            names = ", ".join(v.name for v in camp.variants) or "none"
            raise UsageError(f"--variant: campaign {campaign!r} has no variant named "
                             f"{variant_name!r} (variants: {names})")
    elif camp.variants:
        variant = camp.variant_for(customer_id) if customer_id else camp.variants[0]
    tmpl = variant.templates if variant else camp.templates
    now = parse_now(now_text, project.tz)
    if customer_id:
        from outreach.preview import customer_variables

        audience = project.source()
        customer = audience.customer(customer_id)
        if customer is None:
            raise UsageError(f"no customer with id {customer_id!r} in the audience")
        found = customer_variables(camp, project, state.plugins, audience, customer, now)
        variables, note, locale = found.variables, found.note, customer.locale
    else:
        variables = sample_variables(camp, project.tz, now, plugins=state.plugins,
                                     default_locale=project.locale)
        locale = project.locale
        note = (f"a sample customer in {project.timezone} speaking {project.locale} "
                "(--customer ID shows a real one)")
    if project.serve is not None:
        from outreach.config import sample_links

        variables = {**sample_links(project.serve.public_url), **variables}
    channels = [channel] if channel else camp.channels
    result: dict[str, dict[str, Any]] = {}
    for ch in channels:
        if ch not in camp.templates:
            raise UsageError(f"campaign {campaign!r} has no channel {ch!r} (channels: "
                             f"{', '.join(camp.channels)})")
        fields = tmpl[ch].for_locale(locale)
        rendered = {}
        for name, source in fields.items():
            try:
                rendered[name] = templates.render(name, source, variables)
            except Exception as exc:  # noqa: BLE001 - shown to the user as the render failure it is
                rendered[name] = f"!! cannot render: {templates.describe_error(exc)}"
        channel_obj = project.channels[ch].create()
        rendered_problems = channel_obj.check_rendered(rendered, camp.templates[ch].options)
        if project.channels[ch].cls.address == "phone" and "body" in rendered:
            from outreach.sms import count_segments

            seg = count_segments(rendered["body"])
            rendered["_segments"] = f"{seg.segments} ({seg.encoding}, {seg.units} units)"
        result[ch] = {"locale": locale, "fields": rendered, "problems": rendered_problems}
    if as_json:
        _emit_json({"campaign": campaign, "customer": customer_id or "sample", "note": note,
                    "variant": variant.name if variant else None, "channels": result})
        return
    err.print(note, markup=False)
    for ch, r in result.items():
        out.rule(f"{campaign} · {ch} · locale {r['locale']}"
                 + (f" · variant {variant.name}" if variant else ""))
        for name, value in r["fields"].items():
            out.print(f"[bold]{name}[/bold]")
            out.print(value, markup=False)
        for p in r["problems"]:
            err.print(f"problem: {p}", markup=False)


@cli.command()
@click.option("--customer", "customer_id", required=True, metavar="ID", help="The customer.")
@click.option("--render/--no-render", default=True, help="Show each message's text as it was sent.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def history(state: _State, customer_id: str, render: bool, as_json: bool) -> None:
    """Everything planned for a customer, what they got (rendered exactly), and every refusal."""
    project = state.project(only_valid=True, secrets=False)
    ledger = Ledger(project.ledger_url)
    try:
        rows = ledger.customer_messages(customer_id)
        refusals = ledger.customer_skips(customer_id)
        outcomes = ledger.delivery_events_for([r["key"] for r in rows])
        items = []
        for r in rows:
            item = {k: r[k] for k in ("key", "campaign", "variant", "channel", "address", "state",
                                      "attempts", "provider_id", "segments", "error")}
            item["planned_for"] = from_epoch(r["not_before"]).isoformat()
            item["sent_at"] = from_epoch(r["sent_at"]).isoformat() if r["sent_at"] else None
            # What the provider reported afterwards (outreach serve's webhooks).
            item["deliveries"] = [{**d, "occurred_at": from_epoch(d["occurred_at"]).isoformat()}
                                  for d in outcomes.get(r["key"], [])]
            if render:
                variables = json.loads(r["variables"])
                cfg = project.channels.get(r["channel"])
                if project.serve is not None and cfg is not None:  # as dispatch signed them
                    from outreach.serve.tokens import links

                    variables.update(links(project.serve.public_url,
                                           project.serve.token_secret.reveal().encode(),
                                           customer_id, r["key"], cfg.consent, r["category"]))
                try:
                    content, _ = render_stored(ledger.version_content(r["version_id"]), r["channel"],
                                               r["locale"], variables)
                    item["content"] = content
                except RenderError as exc:
                    item["content"] = {"error": str(exc)}
            items.append(item)
    finally:
        ledger.close()
    skipped = [{"key": s["key"], "campaign": s["campaign"], "outcome": s["outcome"],
                "reason": s["reason"], "decided_at": from_epoch(s["decided_at"]).isoformat()}
               for s in refusals]
    if as_json:
        _emit_json({"customer": customer_id, "messages": items, "refusals": skipped})
        return
    if not items and not skipped:
        out.print(f"nothing recorded for customer {customer_id!r}", markup=False)
    for item in items:
        out.rule(f"{item['campaign']} · {item['channel']} · {item['state']}"
                 + (f" · variant {item['variant']}" if item["variant"] else ""))
        out.print(f"to {item['address']}, planned for {_shown(item['planned_for'], project.tz)}"
                  + (f", sent {_shown(item['sent_at'], project.tz)}" if item["sent_at"] else "")
                  + (f" — {item['error']}" if item["error"] else ""), markup=False)
        for d in item["deliveries"]:
            out.print(f"  {d['occurred_at']} {d['provider']} {d['kind']}"
                      + (" (machine open)" if d["machine_open"] else "")
                      + (f": {d['detail']}" if d["detail"] else "")
                      + (" — settled an unknown outcome" if d["settled"] else ""), markup=False)
        for name, value in (item.get("content") or {}).items():
            out.print(f"[bold]{name}[/bold]")
            out.print(value, markup=False)
    for s in skipped:
        out.print(f"not sent: {s['campaign']} ({s['outcome']}, {_shown(s['decided_at'], project.tz)})"
                  f": {s['reason']}", markup=False)


# ---------------------------------------------------------------------------------------- serve / consent
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (a reverse proxy in front serves the public one).")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535),
              help="The port to listen on (0: any free port, printed at start).")
@click.pass_obj
def serve(state: _State, host: str, port: int) -> None:
    """Listen: one-click unsubscribe, the preference and feedback pages, provider webhooks."""
    import logging

    try:
        from outreach.serve.app import serve as run_server
    except ModuleNotFoundError as exc:
        raise UsageError(f"outreach serve needs {exc.name}: pip install 'outreach[serve]'") from None
    project = state.project(only_valid=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ledger = Ledger(project.ledger_url)
    try:
        run_server(project, ledger, host, port,
                   announce=lambda line: err.print(line, markup=False))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        ledger.close()


@cli.command()
@click.option("--customer", "customer_id", required=True, metavar="ID", help="The customer.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def consent(state: _State, customer_id: str, as_json: bool) -> None:
    """A customer's consent history: every withdrawal and grant outreach recorded, newest last."""
    project = state.project(only_valid=True)
    ledger = Ledger(project.ledger_url)
    try:
        rows = ledger.consent_history(customer_id)
        caps = ledger.customer_caps([customer_id]).get(customer_id)
    finally:
        ledger.close()
    items = [{"at": from_epoch(r["created_at"]).isoformat(),
              "consent": r["consent"], "category": r["category"], "action": r["action"],
              "source": r["source"], "evidence": r["evidence"]} for r in rows]
    own_cap = {"max": caps[0], "per_seconds": caps[1]} if caps else None
    if as_json:
        _emit_json({"customer": customer_id, "changes": items, "own_cap": own_cap})
        return
    if not items:
        out.print(f"no consent change recorded for customer {customer_id!r} (the audience's "
                  "consent columns decide)", markup=False)
    else:
        table = Table("when", "what", "action", "source", "evidence")
        for i in items:
            what = i["consent"] if i["consent"] is not None else f"category {i['category']}"
            table.add_row(i["at"], what, i["action"], i["source"], i["evidence"] or "")
        out.print(table)
    if caps:
        out.print(f"own cap: at most {caps[0]} marketing message(s) per {caps[1] // 86400} days",
                  markup=False)


# ---------------------------------------------------------------------------------------- report
def _report_day(option: str, value: str, tz: Any, end: bool) -> int:
    """``--since`` / ``--until``: a date (the whole day, in the deployment's zone) or a time."""
    from datetime import datetime, timedelta

    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{option}: expected a date such as 2026-11-01 or a time such as "
                         f"2026-11-01T09:00, got {value!r}") from None
    if end and len(value.strip()) == 10:  # a date alone: up to the end of that day
        when += timedelta(days=1)
    return epoch(when if when.tzinfo else when.replace(tzinfo=tz))


@cli.command()
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME",
              help="Only this campaign (repeatable; default: all).")
@click.option("--since", metavar="DATE", help="From this date or time (default: 90 days before "
                                              "--until), in the deployment's time zone.")
@click.option("--until", metavar="DATE", help="Up to the end of this date, or this time "
                                              "(default: now).")
@click.option("--by", type=click.Choice(["day", "week"]), default="day", show_default=True,
              help="One row per local day, or per week (from Monday).")
@click.option("--now", "now_text", metavar="ISO-TIME",
              help="Report as at this instant: the default --until, and which customers' "
                   "conversion windows have closed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--html", "html_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Also write one self-contained HTML file with charts (needs outreach[report]).")
@click.pass_obj
def report(state: _State, campaigns: tuple[str, ...], since: str | None, until: str | None,
           by: str, now_text: str | None, as_json: bool, html_file: Path | None) -> None:
    """What happened to each campaign's messages, per day or week, and each experiment's result.

    Planned, sent, failed and refused counts come from the ledger; delivered, bounced, opened,
    clicked, unsubscribed and complained from the providers' delivery events (outreach serve):
    without them those columns say they cannot be known.
    """
    from datetime import timedelta

    from outreach.reporting import Window, build_report

    if html_file is not None:
        from outreach.reporting.html import _plotly

        _plotly()  # say which extra is missing before any work
    project = state.project(only_valid=True, secrets=False)
    check_campaign_names(project, campaigns)
    now = epoch(parse_now(now_text, project.tz))
    hi = _report_day("--until", until, project.tz, True) if until else now
    lo = (_report_day("--since", since, project.tz, False) if since
          else hi - int(timedelta(days=90).total_seconds()))
    if lo >= hi:
        raise UsageError(f"--since ({since}) must come before --until ({until or 'now'})")
    window = Window(lo, hi, project.tz, by, list(campaigns) or None)
    kinds = {name: ch.cls.address for name, ch in project.channels.items()}
    wanted = {n: c for n, c in project.campaigns.items() if not campaigns or n in campaigns}
    source = project.source() if any(c.conversion for c in wanted.values()) else None
    ledger = Ledger(project.ledger_url)
    try:
        data = build_report(ledger, window, wanted, kinds, source, now)
    finally:
        ledger.close()
    if html_file is not None:
        from outreach.reporting.html import write_html

        write_html(data, html_file)
    if as_json:
        _emit_json(data)
        return
    from outreach.reporting.terminal import print_report

    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    print_report(data, Console(highlight=False, width=None if wide else 160))
    if html_file is not None:
        err.print(f"wrote {html_file}", markup=False)


# ---------------------------------------------------------------------------------------- plugins
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def plugins(state: _State, as_json: bool) -> None:
    """List the plugins: version, the hooks each implements, what it adds and the settings each
    channel type takes. Exits 2 when a plugin failed to load."""
    rows = state.plugins.describe()
    failed = any(r.get("error") for r in rows)
    if as_json:
        _emit_json(rows)
        sys.exit(ExitCode.CONFIG if failed else ExitCode.OK)
    table = Table(title="plugins", title_justify="left")
    for col in ("name", "distribution", "version", "adds", "hooks"):
        table.add_column(col)
    for r in rows:
        adds = ", ".join(f"{k[:-1]} {v}" for k in ("channels", "rules", "sources") for v in r[k])
        table.add_row(r["name"], r["distribution"] or "-", r["version"] or "-",
                      adds or "-", ", ".join(h.replace("outreach_", "") for h in r["hooks"])
                      if not r.get("error") else f"[red]failed: {escape(r['error'])}[/red]")
    out.print(table)
    settings = [(where, s) for r in rows for where, declared in r["settings"].items()
                for s in declared]
    if settings:
        out.print("settings ([channels.NAME] of each type, [plugins.NAME] of each plugin):",
                  markup=False)
        for where, s in settings:
            flags = "".join((", required" if s["required"] else "", ", secret" if s["secret"] else ""))
            out.print(f"  {where}.{s['name']} ({s['type']}{flags}): {s['help']}", markup=False)
    sys.exit(ExitCode.CONFIG if failed else ExitCode.OK)


# ---------------------------------------------------------------------------------------- suppression
def _ledger_place(ledger: Ledger) -> str:
    """Where a ledger is, for a message: its file, or its URL without a password."""
    from outreach.ledger import _safe_url

    return ledger.url.split("///", 1)[1] if ledger.is_sqlite else _safe_url(ledger.url)


@cli.command()
@click.argument("address", required=False)
@click.option("--reason", help="Why (kept with the entry).")
@click.option("--remove", is_flag=True, help="Remove the address from the list instead.")
@click.option("--list", "show", is_flag=True, help="List every suppressed address.")
@click.option("--import", "source", type=click.Path(dir_okay=False, path_type=Path),
              help="Add every address of FILE: one a line, or a CSV file with a header.")
@click.option("--column", help="With --import: the CSV column holding the addresses (default: "
                               "the columns named email or phone).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def suppress(state: _State, address: str | None, reason: str | None, remove: bool, show: bool,
             source: Path | None, column: str | None, as_json: bool) -> None:
    """Never write to ADDRESS again (an email address or a phone number), on any campaign.

    The address is stored normalised (+15035550104, jane.doe@example.com), the form the planner
    compares; one that does not normalise is refused (exit 2). With --import, refused lines are
    reported with their line number and the others added; the exit code is then 2.
    """
    from outreach import suppress as adding

    if column is not None and source is None:
        raise UsageError("suppress: --column goes with --import FILE")
    if source is not None and (address or remove or show):
        raise UsageError("suppress: --import FILE takes no ADDRESS, --remove or --list")
    project = state.project(only_valid=True)
    region = project.phone_region
    ledger = Ledger(project.ledger_url)
    if ledger.created:
        err.print(f"created a new ledger at {_ledger_place(ledger)}", markup=False)
    try:
        left = ledger.normalize_suppressions(region)  # entries of an older version, made to match
        for entry in left:
            err.print(f"warning: suppressed {entry['address']!r} cannot be compared with any "
                      f"address: {entry['problem']}", markup=False)
        if show:
            rows = ledger.suppression_list()
            for r in rows:
                r["created_at"] = from_epoch(r["created_at"]).isoformat()
            if as_json:
                _emit_json(rows)
            else:
                for r in rows:
                    out.print(f"{r['address']}  ({r['kind']}, {r['source']}, {r['created_at']}): "
                              f"{r['reason']}", markup=False)
            return
        if source is not None:
            if not reason:
                raise UsageError("suppress: --reason is required (it is kept with each entry)")
            report = adding.import_file(ledger, source, reason, region, column)
            if as_json:
                _emit_json(report.as_dict())
            else:
                for refused in report.refused:
                    err.print(f"refused {refused}", markup=False)
                out.print(f"{source}: {report.added} added, {report.already} already present, "
                          f"{len(report.refused)} refused", markup=False)
            if report.refused:
                sys.exit(ExitCode.CONFIG)
            return
        if not address:
            raise UsageError("suppress: give an ADDRESS (or --list, or --import FILE)")
        if remove:
            kind, target = adding.kind_of(address), address.strip()
            normal, _ = adding.normalize(kind, target, region)
            done = ledger.unsuppress(kind, normal or target)
            if normal and not done:  # an entry stored as it was typed
                done = ledger.unsuppress(kind, target)
            target = normal or target
            result = {"address": target, "kind": kind, "removed": done}
        else:
            if not reason:
                raise UsageError("suppress: --reason is required (it is kept with the entry)")
            kind, target = adding.one(address, region)
            done = ledger.suppress(kind, target, reason, "operator")
            result = {"address": target, "kind": kind, "added": done}
    finally:
        ledger.close()
    if as_json:
        _emit_json(result)
    elif remove:
        out.print(f"{target} ({kind}) {'removed from' if done else 'was not on'} the suppression "
                  "list", markup=False)
    elif done:
        out.print(f"suppressed {target} ({kind})", markup=False)
    else:
        out.print(f"{target} ({kind}) was already suppressed", markup=False)


# ---------------------------------------------------------------------------------------- status / resend
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def status(state: _State, as_json: bool) -> None:
    """Last runs, and how many messages are queued, deferred, unknown and failed (by reason)."""
    project = state.project(only_valid=True, secrets=False)
    ledger = Ledger(project.ledger_url)
    scale: dict[str, Any] | None = None
    try:
        runs = ledger.recent_runs(10)
        counts = ledger.state_counts()
        problems = ledger.problems()
        # Messages the dispatcher held back at sending (their reason says so; outreach.dispatch).
        held = ledger.deferred_count(QUIET_WAIT)
        evidence = ledger.evidence_counts()
        if not ledger.is_sqlite:
            from outreach.workers.status import workers_status

            scale = workers_status(ledger)
    finally:
        ledger.close()
    states = {s: counts.get(s, 0) for s in ("queued", "sending", "deferred", "sent", "failed",
                                            "unknown")}
    shown = [{"id": r["id"], "command": r["command"], "status": r["status"],
              "started_at": from_epoch(r["started_at"]).isoformat(),
              "finished_at": from_epoch(r["finished_at"]).isoformat() if r["finished_at"] else None,
              "totals": (r["summary"] or {}).get("totals"),
              "stopped_channels": (r["summary"] or {}).get("stopped_channels") or [],
              "held_for_quiet_hours": (r["summary"] or {}).get("held_for_quiet_hours", 0)}
             for r in runs]
    # Unknown outcomes a provider's event (outreach serve) settled as sent, and those still left
    # to an operator (`outreach resend --unknown`).
    unknowns = {"settled_by_evidence": evidence["settled"], "need_an_operator": states["unknown"]}
    if as_json:
        _emit_json({"states": states, "problems": problems, "runs": shown,
                    "held_for_quiet_hours": held,
                    "unknown_outcomes": unknowns, "unmatched_provider_events": evidence["unmatched"],
                    **({"workers": scale} if scale is not None else {})})
        return
    out.print("messages: " + ", ".join(f"{k} {v}" for k, v in states.items()), markup=False)
    if unknowns["settled_by_evidence"] or unknowns["need_an_operator"]:
        out.print(f"unknown outcomes: {unknowns['settled_by_evidence']} settled as sent by provider "
                  f"evidence, {unknowns['need_an_operator']} still need an operator "
                  "(outreach resend --unknown)", markup=False)
    if evidence["unmatched"]:
        out.print(f"provider events naming no message of this ledger: {evidence['unmatched']}",
                  markup=False)
    if scale is not None:
        from outreach.workers.status import print_status

        print_status(out, scale, lambda t: _shown(t, project.tz))
    for p in problems:
        why = p["error"] or ("waiting for the time it was planned for" if p["state"] == "deferred"
                             else "no reason recorded")
        out.print(f"  {p['count']} {p['state']}: {why}", markup=False)
    if held:
        out.print(f"{held} message(s) held for quiet hours in the recipient's zone: waiting for "
                  "quiet hours to end", markup=False)
    for stopped in shown[0]["stopped_channels"] if shown else []:
        err.print(f"the last run stopped channel {stopped['channel']!r}: {stopped['reason']} "
                  f"({stopped['released']} message(s) left queued)", style="bold red",
                  markup=False)
    table = _table("recent runs", ("started", "finished", "command", "status", "sent", "failed",
                                   "unknown"), numbers=("sent", "failed", "unknown"))
    for r in shown:
        t = r["totals"] or {}
        table.add_row(_shown(r["started_at"], project.tz),
                      _shown(r["finished_at"], project.tz) or "(running or stopped)", r["command"],
                      r["status"], str(t.get("sent", "")), str(t.get("failed", "")),
                      str(t.get("unknown", "")))
    _print_table(table)


@cli.command()
@click.option("--unknown", "unknown_only", is_flag=True,
              help="Messages whose outcome is unknown (they may have reached the customer).")
@click.option("--failed", "failed_only", is_flag=True,
              help="Failed messages (a mistake fixed since: a template, a key, a sender).")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME",
              help="With --failed: only this campaign (repeatable).")
@click.option("--since", "since_text", metavar="TIME",
              help="With --failed: only messages that failed at or after TIME (ISO 8601, or a "
                   "duration ago such as 6h or 2d).")
@click.option("--reason", metavar="TEXT",
              help="With --failed: only messages whose error contains TEXT (ignoring case).")
@click.option("--key", "keys", multiple=True, metavar="KEY", help="Only this message (repeatable).")
@click.option("--yes", is_flag=True, help="Queue them again; without it, only list them.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def resend(state: _State, unknown_only: bool, failed_only: bool, campaigns: Sequence[str],
           since_text: str | None, reason: str | None, keys: Sequence[str], yes: bool,
           as_json: bool) -> None:
    """List messages to send again; with --yes, queue them for the next run.

    --unknown: messages whose outcome is unknown, which may already have reached the customer
    (check the provider's logs first). --failed: failed messages, for a mistake fixed since;
    messages a policy refused (suppressed, consent withdrawn) stay failed unless named by --key.
    """
    if unknown_only == failed_only:
        raise UsageError("resend: give --unknown or --failed")
    if unknown_only and (campaigns or since_text or reason):
        raise UsageError("resend: --campaign, --since and --reason go with --failed")
    project = state.project(only_valid=True)
    if failed_only:
        _resend_failed(project, campaigns, since_text, reason, keys, yes, as_json)
        return
    ledger = Ledger(project.ledger_url)
    try:
        rows = [r for r in ledger.unknown_messages() if not keys or r["key"] in keys]
        requeued = ledger.resend_unknown([r["key"] for r in rows]) if yes and rows else 0
    finally:
        ledger.close()
    if as_json:
        _emit_json({"unknown": rows, "requeued": requeued})
        return
    for r in rows:
        out.print(f"{r['key']}  {r['channel']} → {r['address']}: {r['error']}", markup=False)
    if yes:
        out.print(f"{requeued} message(s) queued again; the next run sends them", markup=False)
    elif rows:
        out.print(f"{len(rows)} message(s) with an unknown outcome; add --yes to queue them again",
                  markup=False)
    else:
        out.print("no message has an unknown outcome", markup=False)


#: Failed messages listed one by one (all are counted, by campaign, channel and error).
RESEND_SHOWN = 20
#: Failed messages ``resend --failed --json`` lists (with the total beside them).
RESEND_JSON_ROWS = 1000


def _since(text: str | None, project: Project) -> int | None:
    """``--since`` as a Unix time: an ISO 8601 time (in the deployment's zone without an offset)
    or a duration before now."""
    if text is None:
        return None
    from outreach.settings import parse_duration

    try:
        return int(wall_clock() - parse_duration(text).total_seconds())
    except ValueError:
        pass
    try:
        return epoch(parse_now(text, project.tz))
    except UsageError:
        raise UsageError(f"--since: expected an ISO 8601 time such as 2026-11-24T09:00 or a "
                         f"duration such as 6h or 2d, got {text!r}") from None


def _resend_failed(project: Project, campaigns: Sequence[str], since_text: str | None,
                   reason: str | None, keys: Sequence[str], yes: bool, as_json: bool) -> None:
    from outreach.ledger import FailedSelection

    check_campaign_names(project, campaigns)
    selection = FailedSelection(tuple(campaigns), _since(since_text, project), reason or None,
                                tuple(keys))
    ledger = Ledger(project.ledger_url)
    try:
        groups = ledger.failed_counts(selection)
        refused = ledger.failed_counts(selection, refused=True)
        rows = ledger.failed_messages(selection, RESEND_JSON_ROWS if as_json else RESEND_SHOWN)
        requeued = ledger.resend_failed(selection) if yes and groups else 0
    finally:
        ledger.close()
    total = sum(g["count"] for g in groups)
    kept = sum(g["count"] for g in refused)
    named_refused = sum(g["count"] for g in groups if g["stopped_by"])
    for r in rows:
        r["failed_at"] = from_epoch(r.pop("updated_at")).isoformat()
    if as_json:
        _emit_json({"count": total, "groups": groups, "failed": rows,
                    "refused_by_policy": {"count": kept, "groups": refused},
                    "requeued": requeued})
        return
    if not total:
        out.print("no failed message matches" + (" (apart from those a policy refused)"
                                                 if kept else ""), markup=False)
    else:
        out.print(f"{total} failed message(s):", markup=False)
        for g in groups:
            out.print(f"  {g['count']} × {g['campaign']} · {g['channel']}: {g['error']}",
                      markup=False)
        for r in rows:
            out.print(f"  {r['key']}  {r['channel']} → {r['address']} (failed "
                      f"{_shown(r['failed_at'], project.tz)})", markup=False)
        if total > len(rows):
            out.print(f"  … and {total - len(rows)} more", markup=False)
    if kept:
        out.print(f"{kept} message(s) a policy refused stay failed (a suppression or a consent "
                  "withdrawn is a decision, not a mistake); name one with --key to queue it "
                  "anyway:", markup=False)
        for g in refused[:5]:
            out.print(f"  {g['count']} × {g['campaign']} · {g['channel']}: {g['error']}",
                      markup=False)
    if named_refused:
        out.print(f"{named_refused} of them, named by --key, were refused by a policy: they go "
                  "only if the suppression list and consent allow it now", markup=False)
    if yes:
        out.print(f"{requeued} message(s) queued again; the next run sends them (the suppression "
                  "list is checked again before each is sent, and `outreach run` re-checks "
                  "consent)", markup=False)
    elif total:
        out.print(f"add --yes to queue these {total} message(s) again", markup=False)


def _add_plugin_commands() -> None:
    try:
        get_plugins().pm.hook.outreach_register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - a plugin's broken command must not break the CLI
        err.print(f"warning: a plugin failed to add its commands: {exc}", markup=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error a user can cause into a message and exit code."""
    _add_plugin_commands()
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="outreach",
                      standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.CONFIG)
    except click.Abort:
        err.print("aborted")
        sys.exit(ExitCode.CONFIG)
    except OutreachError as exc:
        if os.environ.get("OUTREACH_DEBUG") and exc.exit_code == ExitCode.INTERNAL:
            raise  # a plugin crashed: the traceback shows where
        err.print(f"error: {exc}" if not isinstance(exc, ConfigError) else
                  "invalid configuration:\n" + "\n".join(f"  {p}" for p in exc.problems),
                  markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback; OUTREACH_DEBUG shows it
        if os.environ.get("OUTREACH_DEBUG"):
            raise
        from outreach.ledger import _first_line

        err.print(f"error: unexpected {type(exc).__name__}: {_first_line(exc)} "
                  "(set OUTREACH_DEBUG=1 to see where)", markup=False)
        sys.exit(ExitCode.INTERNAL)
    sys.exit(rv if isinstance(rv, int) else ExitCode.OK)  # a plugin command's own code


if __name__ == "__main__":  # pragma: no cover
    main()
