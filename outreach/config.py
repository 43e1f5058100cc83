"""Loading and validating ``outreach.toml`` and every campaign file, before anything else happens.

Every problem found is collected and reported together, each naming the file, the key path and
what was expected. A project with an invalid campaign is refused as a whole (nothing is sent) unless
the caller asks to go on with the valid campaigns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from jinja2 import TemplateError

from outreach import templates
from outreach.addresses import region_problem
from outreach.audience import Source
from outreach.channel import Channel
from outreach.errors import ConfigError, Problem
from outreach.experiments import VariantWeights
from outreach.localise import Placeholder
from outreach.plugins import Plugins
from outreach.rule import Rule
from outreach.settings import Secret, Setting, resolve

CONFIG_FILE = "outreach.toml"
CAMPAIGN_DIR = "campaigns"
CATEGORIES = ("marketing", "transactional")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
#: Quiet hours of every phone channel unless outreach.toml says otherwise: no texts at night.
DEFAULT_PHONE_QUIET_HOURS = (time(21, 0), time(8, 0))


@dataclass(frozen=True)
class CapRule:
    """At most ``max`` marketing messages per customer in any window of length ``per``."""

    max: int
    per: timedelta
    #: Only count (and limit) this channel; None for all channels together.
    channel: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How failed sends are retried: a few times in-process, then across runs with backoff."""

    #: Attempts in total across runs before a message is failed for good.
    max_attempts: int = 5
    #: Attempts within one run (tenacity), for short glitches.
    attempts_per_run: int = 3
    #: First wait between runs, doubled per attempt, capped at ``max_backoff``.
    backoff: timedelta = timedelta(minutes=1)
    max_backoff: timedelta = timedelta(hours=1)
    #: Longest in-process wait; a longer Retry-After defers the message to a later run instead.
    max_wait: timedelta = timedelta(seconds=30)


@dataclass
class WorkersConfig:
    """The ``[workers]`` table: planning and delivery placed on ``outreach worker`` processes
    (PostgreSQL ledgers only; see :mod:`outreach.workers`)."""

    #: Planning shards per run: customers are split by a hash of their id.
    shards: int = 8
    #: A cron expression: the workers start a run on it themselves (no cron on any host).
    schedule: str | None = None
    #: How often each worker takes back expired claims and stalled shards and sends what is due.
    sweep: timedelta = timedelta(seconds=30)


@dataclass
class ServeConfig:
    """The ``[serve]`` table: what ``outreach serve`` listens with, and what links it signs
    (see :mod:`outreach.serve`). Secrets are read from the environment when the table is read."""

    #: The address customers and providers reach (links and signatures are computed against it).
    public_url: str
    #: The key that signs links; from the environment variable ``token_secret_env`` names.
    token_secret: Secret
    sendgrid_verification_key: Secret | None = None
    twilio_auth_token: Secret | None = None
    max_body: int = 1_048_576
    replay_window: timedelta = timedelta(minutes=5)


@dataclass
class ChannelConfig:
    """One ``[channels.NAME]`` table, validated."""

    name: str
    plugin: str
    cls: type[Channel]
    settings: dict[str, Any]
    consent: str
    rate_limit: float | None
    concurrency: int
    timeout: float
    quiet_hours: tuple[time, time] | None
    #: Secrets the environment lacks: only a project loaded for a command that sends nothing
    #: (``load_project(secrets=False)``) has channels like that.
    missing_secrets: tuple[str, ...] = ()

    #: Whether ``[serve]`` signs links for this channel's messages (see Channel.links_served).
    links: bool = False

    def create(self) -> Channel:
        """A fresh channel instance (one per process).

        A channel without its secrets whose constructor refuses to be made without them is set up
        as a bare :class:`Channel` of its class (its own constructor is not run): enough for the
        checks of templates and rendered messages that ``validate --offline`` and ``preview``
        ask of it, never for sending.
        """
        settings = {**self.settings, "timeout": self.timeout}
        channel: Channel
        if self.missing_secrets:
            try:
                channel = self.cls(self.name, settings)
            except Exception:  # noqa: BLE001 - it needs its secrets to be made: make its checks
                channel = _without_provider(self.cls)(self.name, settings)
        else:
            channel = self.cls(self.name, settings)
        channel.links_served = self.links
        return channel


_BARE: dict[type[Channel], type[Channel]] = {}


def _without_provider(cls: type[Channel]) -> type[Channel]:
    """``cls`` with the base class's constructor and ``close``: its checks, none of its client."""
    if cls not in _BARE:
        _BARE[cls] = type(cls.__name__, (cls,), {"__init__": Channel.__init__,
                                                 "close": Channel.close,
                                                 "__module__": cls.__module__})
    return _BARE[cls]


@dataclass
class ChannelTemplates:
    """A campaign's templates for one channel: the default fields and per-locale overrides."""

    fields: dict[str, str]
    locales: dict[str, dict[str, str]]
    options: dict[str, Any]
    #: The file each ``FIELD_file`` template was read from, by key (``body``, ``hy.body``), so a
    #: problem with it names the file the person edits.
    files: dict[str, str] = field(default_factory=dict)

    def for_locale(self, locale: str) -> dict[str, str]:
        """The templates for a customer's locale, field by field: exact tag, then language, then
        the default (:func:`outreach.templates.locale_chain`)."""
        merged = dict(self.fields)
        for variant in templates.locale_chain(locale, self.locales):
            merged.update(self.locales[variant])
        return merged


def pick_locale(locale: str, available: Mapping[str, Any]) -> str | None:
    """The best of ``available`` for ``locale`` (``hy-AM`` → ``hy-AM``, then ``hy``), or None."""
    if not locale:
        return None
    wanted = locale.replace("_", "-").lower()
    lowered = {k.lower(): k for k in available}
    while wanted:
        if wanted in lowered:
            return lowered[wanted]
        wanted = wanted.rpartition("-")[0]
    return None


@dataclass
class Variant:
    """One A/B variant of a campaign: its share and its templates (the campaign's, with the
    variant's fields over them), stored as a campaign version of its own."""

    name: str
    weight: float
    templates: dict[str, ChannelTemplates]
    content: dict[str, Any] = field(default_factory=dict)
    version: str = ""


@dataclass
class Conversion:
    """What counts as success for a campaign: an event of ``event`` within ``within`` of the
    planned send time (or of when a held-out customer's message would have been sent)."""

    event: str
    within: timedelta


@dataclass
class Campaign:
    """One campaign file, validated."""

    name: str
    file: Path
    rule_name: str
    rule: Rule
    channels: list[str]
    category: str
    priority: int
    templates: dict[str, ChannelTemplates]
    schedule: str | None = None
    start: datetime | None = None
    where: str | None = None
    description: str = ""
    sample: dict[str, Any] = field(default_factory=dict)
    #: The campaign's content as stored in the ledger (templates inlined), and its hash.
    content: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    #: Customer fields the templates read (None: all of them).
    customer_fields: set[str] | None = None
    #: Send at this time of day on each customer's own clock (see :func:`outreach.schedule.next_local_time`).
    send_at: time | None = None
    #: A/B variants (empty: none); a customer's is :meth:`variant_for` theirs.
    variants: list[Variant] = field(default_factory=list)
    #: The share of eligible customers kept as a control group (see outreach.experiments).
    holdout: float = 0.0
    conversion: Conversion | None = None

    def variant_for(self, customer_id: str) -> Variant | None:
        """The variant ``customer_id`` gets (sticky), or None when the campaign has none."""
        if not self.variants:
            return None
        name = self._weights.pick(self.name, customer_id)
        return next(v for v in self.variants if v.name == name)

    @functools.cached_property
    def _weights(self) -> VariantWeights:
        return VariantWeights.of([(v.name, v.weight) for v in self.variants])


@dataclass
class Project:
    """Everything one deployment is configured with."""

    root: Path
    file: Path
    timezone: str
    tz: ZoneInfo
    ledger_url: str
    source_cls: type[Source]
    source_settings: dict[str, Any]
    channels: dict[str, ChannelConfig]
    caps: list[CapRule]
    retry: RetryPolicy
    campaigns: dict[str, Campaign]
    #: Problems of campaigns left out because the caller asked to go on with the valid ones.
    skipped: list[Problem] = field(default_factory=list)
    #: Problems that stop nothing (a channel whose plugin is missing, used by no campaign).
    warnings: list[Problem] = field(default_factory=list)
    batch_size: int = 2000
    claim_ttl: timedelta = timedelta(minutes=10)
    #: Set when ``[workers]`` is: ``outreach run`` then plans in shards on the workers.
    workers: WorkersConfig | None = None
    #: The language of the campaigns' default templates (the sample customer's).
    locale: str = "en"
    #: Set when ``[serve]`` is: links in messages (unsubscribe, preferences, feedback) point there.
    serve: ServeConfig | None = None
    #: The region of phone numbers written without ``+country`` (``phone_region``), or None.
    phone_region: str | None = None
    #: The longest an event-only run plans incrementally before a full pass (outreach.incremental).
    full_pass_every: timedelta = timedelta(days=1)
    #: Channel secrets the environment lacks (loaded with ``secrets=False`` only).
    missing_secrets: list[Problem] = field(default_factory=list)
    #: Each plugin's validated ``[plugins.NAME]`` table, by plugin name.
    plugin_values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def plugin_settings(self, name: str) -> dict[str, Any]:
        """Plugin ``name``'s validated ``[plugins.NAME]`` settings, defaults filled in."""
        return self.plugin_values.get(name, {})

    def source(self) -> Source:
        """A fresh audience source, told which attributes the campaigns' rules read as dates."""
        source = self.source_cls(self.source_settings, self.root, self.timezone)
        source.dates = frozenset(name for c in self.campaigns.values()
                                 for name, kind in c.rule.attributes().items() if kind == "date")
        return source


_DEPLOYMENT_KEYS = {
    "timezone": Setting("str", default="UTC",
                        help="IANA time zone of cron schedules and of times written without an "
                             "offset"),
    "locale": Setting("str", default="en",
                      help="the language of the campaigns' default templates: the sample "
                           "customer of `validate` and `preview` speaks it"),
    "ledger": Setting("str", default="sqlite:///outreach.db",
                      help="where decisions are recorded: sqlite:///FILE (relative to this file's "
                           "folder) or postgresql://USER@HOST/DB (needs outreach[postgresql])"),
    "phone_region": Setting("str", help="the region (\"US\") of phone numbers written without "
                                        "+country code: in outreach suppress, and in the audience "
                                        "unless [audience] phone_region says otherwise"),
    "batch_size": Setting("int", default=2000, minimum=1, help="customers per planning batch"),
    "claim_ttl": Setting("duration", default=timedelta(minutes=10), minimum=1,
                         help="how long a dispatch process may hold a message"),
    "full_pass_every": Setting("duration", default=timedelta(days=1), minimum=1,
                               help="a run in which only event-driven campaigns are due reads "
                                    "only the new events; at least this often it reads the whole "
                                    "audience instead, to reconcile everything"),
}
_TABLES = ("audience", "channels", "caps", "quiet_hours", "retry", "workers", "serve",
           "plugins")
_RETRY_KEYS = {
    "max_attempts": Setting("int", default=5, minimum=1,
                            help="attempts across runs before a transient failure fails for good"),
    "attempts_per_run": Setting("int", default=3, minimum=1,
                                help="tries within one run (exponential backoff with jitter)"),
    "backoff": Setting("duration", default=timedelta(minutes=1),
                       help="wait before a later run may retry, doubled per attempt"),
    "max_backoff": Setting("duration", default=timedelta(hours=1),
                           help="the longest wait between runs' retries"),
    "max_wait": Setting("duration", default=timedelta(seconds=30),
                        help="a longer Retry-After defers the message to a later run instead of "
                             "waiting in this one"),
}
_WORKERS_KEYS = {
    "shards": Setting("int", default=8, minimum=1, help="planning shards per run"),
    "schedule": Setting("str", help="cron expression on which the workers start a run"),
    "sweep": Setting("duration", default=timedelta(seconds=30), minimum=1,
                     help="how often a worker recovers expired claims and stalled shards"),
}
_SERVE_KEYS = {
    "public_url": Setting("str", required=True,
                          help="the https address customers and providers reach outreach serve at "
                               "(behind a proxy, the proxy's): links are built on it and provider "
                               "signatures are checked against it"),
    "token_secret": Setting("str", required=True, secret=True, env="OUTREACH_TOKEN_SECRET",
                            help="signs the links in messages (unsubscribe, preferences, "
                                 "feedback): at least 32 random characters, the same for every "
                                 "process that sends or serves; changing it breaks links already "
                                 "sent"),
    "sendgrid_verification_key": Setting("str", secret=True,
                                          env="SENDGRID_WEBHOOK_VERIFICATION_KEY",
                                          help="SendGrid's Event Webhook verification key (base64 "
                                               "public key); without it the SendGrid endpoint "
                                               "refuses every request"),
    "twilio_auth_token": Setting("str", secret=True, env="TWILIO_AUTH_TOKEN",
                                 help="the Twilio auth token that signs its callbacks; without it "
                                      "the Twilio endpoints refuse every request"),
    "max_body": Setting("int", default=1_048_576, minimum=1024,
                        help="largest request body accepted, in bytes (413 above it)"),
    "replay_window": Setting("duration", default=timedelta(minutes=5), minimum=1,
                             help="signed webhook timestamps further than this from now are "
                                  "refused as replays"),
}
_CAP_KEYS = {
    "max": Setting("int", required=True, minimum=0, help="messages allowed in the window"),
    "per": Setting("duration", required=True, minimum=1, help="the rolling window"),
    "channel": Setting("str", help="limit only this channel"),
}
_CAMPAIGN_KEYS = {
    "name": Setting("str", required=True,
                    help="unique among the campaigns: letters, digits, - and _"),
    "description": Setting("str", default="", help="what the campaign is for, for people"),
    "rule": Setting("str", required=True, help="the registered rule that selects the audience"),
    "schedule": Setting("str", help="a cron expression in the deployment's time zone; without "
                                    "one, the campaign is evaluated on every run"),
    "send_at": Setting("clock", help="send at this time of day on each customer's own clock: the "
                                     "first such time at or after the occurrence (or, without a "
                                     "schedule, after the rule selects them)"),
    "start": Setting("str", help="a date (2026-11-01): occurrences before it are never sent"),
    "channels": Setting("list", required=True,
                        help="configured channel names, in order of preference"),
    "category": Setting("str", choices=CATEGORIES,
                        help="transactional campaigns are exempt from frequency caps (default: "
                             "the rule's)"),
    "priority": Setting("int", help="the higher wins the last slot under a cap (default: the "
                                    "rule's)"),
    "where": Setting("str", help="an audience filter: a sandboxed Jinja expression such as "
                                 "\"'vip' in customer.tags\""),
    "holdout": Setting("float", default=0.0, minimum=0.0,
                       help="the share of eligible customers (0 to 0.5) kept as a control group: "
                            "recorded as held_out, sent nothing, chosen by a hash of campaign and "
                            "customer (sticky); `outreach report` shows the lift against them"),
    "conversion": Setting("table", help="what counts as success for the report's variants and "
                                        "holdout: { event = \"purchase\", within = \"14d\" }"),
}
#: Keys of a ``[[variants]]`` table (besides one table per channel with the fields that differ).
_VARIANT_KEYS = {
    "name": Setting("str", required=True, help="the variant's name (letters, digits, - and _), "
                                               "recorded with each message"),
    "weight": Setting("float", default=1.0, minimum=0.0,
                      help="its share of customers, relative to the other variants' weights"),
}
#: Keys of a campaign's ``conversion`` table.
_CONVERSION_KEYS = {
    "event": Setting("str", required=True,
                     help="the audience event type that counts as a conversion (purchase)"),
    "within": Setting("duration", required=True, minimum=1,
                      help="how long after the planned send time an event still counts"),
}


def reference_tables() -> dict[str, Mapping[str, Setting]]:
    """The keys of ``outreach.toml``'s own tables, by table (``""`` is the top level), and of a
    campaign file's top level (``campaign``): what the reference documentation is generated from.

    ``[audience]``, ``[channels.NAME]`` and ``[plugins.NAME]`` take the registered source's,
    channel type's or plugin's settings (:func:`outreach.reference.deployment_reference`).
    """
    return {"": _DEPLOYMENT_KEYS, "caps": _CAP_KEYS, "quiet_hours": _QUIET_KEYS,
            "retry": _RETRY_KEYS, "workers": _WORKERS_KEYS, "serve": _SERVE_KEYS,
            "campaign": _CAMPAIGN_KEYS, "campaign.variants": _VARIANT_KEYS,
            "campaign.conversion": _CONVERSION_KEYS}


#: The tables ``outreach.toml`` may hold (anything else at the top level is a key).
DEPLOYMENT_TABLES = _TABLES


def _read_toml(path: Path, problems: list[Problem], shown: str | None = None) -> dict[str, Any] | None:
    """Parse a TOML file; a problem names it as ``shown`` (relative to the project) when given."""
    where = shown or str(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        problems.append(Problem(where, "", "file not found"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(where, "", f"not valid TOML: {exc}"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(where, "", f"cannot be read: {exc}"))
    return None


def find_config(start: Path | None = None) -> Path:
    """``outreach.toml`` in the given folder or file (default: the current folder)."""
    path = Path(start or ".")
    return path / CONFIG_FILE if path.is_dir() else path


def load_project(
    config_path: Path, plugins: Plugins, *, only_valid: bool = False,
    environ: Mapping[str, str] | None = None, secrets: bool = True,
) -> Project:
    """Read and validate the deployment and all its campaigns.

    Raises ConfigError with every problem found. With ``only_valid``, invalid campaigns are left
    out (and listed in ``Project.skipped``) while deployment-level problems still refuse everything.
    With ``secrets=False`` (commands that contact no provider: status, history, plan, preview,
    validate --offline), channel secrets missing from the environment are listed in
    ``Project.missing_secrets`` instead of refusing the project.
    """
    problems: list[Problem] = []
    config_path = Path(config_path)
    data = _read_toml(config_path, problems)
    if data is None:
        raise ConfigError(problems)
    root = config_path.resolve().parent
    f = str(config_path)
    problems += plugins.registry.problems()  # a plugin that would silently not run stops everything

    top = {k: v for k, v in data.items() if k not in _TABLES}
    base = resolve(_DEPLOYMENT_KEYS, top, file=f, prefix="")
    problems += base.problems
    tz_name = base.values.get("timezone") or "UTC"
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder: OSError
        problems.append(Problem(f, "timezone", f"expected an IANA time zone such as "
                                               f"\"Europe/London\", got {tz_name!r}"))
        tz = ZoneInfo("UTC")
    ledger_url = _ledger_url(base.values.get("ledger") or "sqlite:///outreach.db", root, f, problems)
    locale = base.values.get("locale") or "en"
    if not _LOCALE.match(locale):
        problems.append(Problem(f, "locale", f"expected a language tag such as \"en\" or "
                                             f"\"hy-AM\", got {locale!r}"))

    for name in _TABLES:
        if name in data and not isinstance(data[name], (dict, list)):
            problems.append(Problem(f, name, "expected a table"))
    source_cls, source_settings = _load_audience(data.get("audience", {}), plugins, f, root, problems)
    phone_region = base.values.get("phone_region")
    if phone_region is not None:
        why = region_problem(phone_region)
        if why:
            problems.append(Problem(f, "phone_region", why))
        phone_region = phone_region.upper()
        if "phone_region" in source_cls.settings and source_settings.get("phone_region") is None:
            source_settings["phone_region"] = phone_region  # the deployment's is the default
    elif isinstance(source_settings.get("phone_region"), str):
        phone_region = source_settings["phone_region"].upper()
    quiet = _load_quiet_hours(data.get("quiet_hours", {}), f, problems)
    unavailable: dict[str, str] = {}
    missing_secrets: list[Problem] = []
    channels = _load_channels(data.get("channels", {}), plugins, quiet, f, root, environ, problems,
                              unavailable, None if secrets else missing_secrets)
    caps = _load_caps(data.get("caps", []), channels, f, problems)
    retry_table = data.get("retry", {})
    retry_values = resolve(_RETRY_KEYS, retry_table if isinstance(retry_table, dict) else {},
                           file=f, prefix="retry")
    problems += retry_values.problems
    retry = RetryPolicy(**retry_values.values) if not retry_values.problems else RetryPolicy()
    workers = _load_workers(data["workers"], ledger_url, f, problems) if "workers" in data else None
    serve = _load_serve(data["serve"], f, environ, problems) if "serve" in data else None
    for channel_cfg in channels.values():
        channel_cfg.links = serve is not None
    plugin_values = plugins.resolve_settings(data.get("plugins", {}), f, root, environ, problems)

    if problems:
        raise ConfigError(problems)

    try:  # the audience's columns make sample renders strict about names it does not have
        columns = source_cls(source_settings, root, tz_name).columns()
    except Exception:  # noqa: BLE001 - a source that cannot tell is checked leniently
        columns = (None, None)
    campaigns: dict[str, Campaign] = {}
    campaign_problems: list[Problem] = []
    folder = root / CAMPAIGN_DIR
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    seen: dict[str, Path] = {}
    for path in files:
        mine: list[Problem] = []
        campaign = _load_campaign(path, root, plugins, channels, tz, columns, mine, unavailable,
                                  locale)
        if campaign and campaign.name in seen:
            mine.append(Problem(str(path.relative_to(root)), "name",
                                f"campaign {campaign.name!r} is already defined in "
                                f"{seen[campaign.name].relative_to(root)}"))
        if mine or campaign is None:
            campaign_problems += mine
            continue
        seen[campaign.name] = path
        campaigns[campaign.name] = campaign
    if campaign_problems and not only_valid:
        raise ConfigError(campaign_problems)
    wrong = plugins.probe_policies(campaigns.values(), channels, datetime.now(timezone.utc), tz,
                                   plugin_values)
    if wrong:  # a policy that cannot be read is not applied to anyone: refuse to go on
        raise ConfigError(wrong)
    used = {ch for c in campaigns.values() for ch in c.channels}
    warnings = [Problem(f, f"channels.{name}.plugin", f"{text} (no campaign uses this channel)")
                for name, text in unavailable.items() if name not in used]

    return Project(
        root=root, file=config_path, timezone=tz_name, tz=tz, ledger_url=ledger_url,
        source_cls=source_cls, source_settings=source_settings, channels=channels, caps=caps,
        retry=retry, campaigns=campaigns, skipped=campaign_problems, warnings=warnings,
        batch_size=base.values["batch_size"], claim_ttl=base.values["claim_ttl"], locale=locale,
        workers=workers, serve=serve, phone_region=phone_region,
        full_pass_every=base.values["full_pass_every"], plugin_values=plugin_values,
        missing_secrets=missing_secrets,
    )


def _load_workers(table: Any, ledger_url: str, f: str,
                  problems: list[Problem]) -> WorkersConfig | None:
    if not isinstance(table, dict):
        return None  # reported with the other tables that are not tables
    resolved = resolve(_WORKERS_KEYS, table, file=f, prefix="workers")
    problems += resolved.problems
    values = resolved.values
    schedule = values.get("schedule")
    if schedule is not None and not croniter.is_valid(schedule):
        problems.append(Problem(f, "workers.schedule", "expected a cron expression such as "
                                                       f"\"*/10 * * * *\", got {schedule!r}"))
    if ledger_url.startswith("sqlite"):
        problems.append(Problem(f, "workers", "workers share their jobs through a PostgreSQL "
                                              "ledger; remove [workers] or set ledger = "
                                              "\"postgresql://…\""))
    if resolved.problems:
        return None
    return WorkersConfig(shards=values["shards"], schedule=schedule, sweep=values["sweep"])


def _load_serve(table: Any, f: str, environ: Mapping[str, str] | None,
                problems: list[Problem]) -> ServeConfig | None:
    if not isinstance(table, dict):
        return None  # reported with the other tables that are not tables
    resolved = resolve(_SERVE_KEYS, table, file=f, prefix="serve", environ=environ)
    problems += resolved.problems
    values = resolved.values
    url = values.get("public_url")
    if isinstance(url, str) and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        problems.append(Problem(f, "serve.public_url", "expected the address outreach serve is "
                                                       "reached at, such as "
                                                       f"\"https://mail.example.com\", got {url!r}"))
        return None
    secret = values.get("token_secret")
    if secret is not None and len(secret.reveal()) < 32:
        problems.append(Problem(f, "serve.token_secret_env",
                                f"the environment variable {secret.env} holds a secret of "
                                f"{len(secret.reveal())} characters: use at least 32 random ones "
                                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"))
        return None
    if resolved.problems or not isinstance(url, str) or secret is None:
        return None
    return ServeConfig(public_url=url.rstrip("/"), token_secret=secret,
                       sendgrid_verification_key=values.get("sendgrid_verification_key"),
                       twilio_auth_token=values.get("twilio_auth_token"),
                       max_body=values["max_body"], replay_window=values["replay_window"])


def _ledger_url(url: str, root: Path, f: str, problems: list[Problem]) -> str:
    """Normalise the ledger URL: relative SQLite paths are relative to the project folder."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        if not rest or rest == ":memory:":
            return url
        path = root / rest  # an absolute path stays itself
        if not path.parent.is_dir():  # a typo would make a new, empty ledger: refuse it instead
            problems.append(Problem(f, "ledger", f"the folder {path.parent} does not exist: "
                                                 "create it, or correct the path"))
        return "sqlite:///" + str(path)
    if url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        return url
    problems.append(Problem(f, "ledger", "expected sqlite:///FILE or postgresql://… , got "
                                         f"{url.split('://')[0]!r}"))
    return url


def _load_audience(table: Any, plugins: Plugins, f: str, root: Path,
                   problems: list[Problem]) -> tuple[type[Source], dict[str, Any]]:
    from outreach.sources.csv_source import CSVSource

    if not isinstance(table, dict):
        return CSVSource, {}
    table = dict(table)
    kind = table.pop("source", "csv")
    cls = plugins.registry.sources.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(plugins.registry.sources))
        problems.append(Problem(f, "audience.source", f"unknown source {kind!r} (registered: "
                                                      f"{known}){plugins.registry.failure_hint()}"))
        return CSVSource, {}
    resolved = resolve(cls.settings, table, file=f, prefix="audience", root=root)
    problems += resolved.problems
    return cls, resolved.values


_QUIET_KEYS = {
    "start": Setting("clock", required=True, help="when the quiet hours begin, on the customer's "
                                                  "clock"),
    "end": Setting("clock", required=True, help="when they end (may be after midnight)"),
}


def _load_quiet_hours(table: Any, f: str,
                      problems: list[Problem]) -> dict[str, tuple[time, time] | None]:
    """Quiet hours per channel name; None where a channel's are turned off with ``false``."""
    out: dict[str, tuple[time, time] | None] = {}
    for channel, spec in (table.items() if isinstance(table, dict) else ()):
        key = f"quiet_hours.{channel}"
        if spec is False:
            out[channel] = None
            continue
        if not isinstance(spec, dict):
            problems.append(Problem(f, key, 'expected { start = "21:00", end = "08:00" } or false'))
            continue
        resolved = resolve(_QUIET_KEYS, spec, file=f, prefix=key)
        problems += resolved.problems
        if not resolved.problems:
            out[channel] = (resolved.values["start"], resolved.values["end"])
    return out


def _load_channels(table: Any, plugins: Plugins, quiet: dict[str, tuple[time, time] | None], f: str,
                   root: Path, environ: Mapping[str, str] | None, problems: list[Problem],
                   unavailable: dict[str, str],
                   missing_secrets: list[Problem] | None = None) -> dict[str, ChannelConfig]:
    out: dict[str, ChannelConfig] = {}
    if not isinstance(table, dict) or not table:
        problems.append(Problem(f, "channels", "expected at least one [channels.NAME] table"))
        return out
    for name, spec in table.items():
        key = f"channels.{name}"
        if not isinstance(spec, dict):
            problems.append(Problem(f, key, "expected a table"))
            continue
        if not _NAME.match(name):
            problems.append(Problem(f, key, "channel names use letters, digits, - and _"))
        plugin = spec.get("plugin")
        cls = plugins.registry.channels.get(plugin) if isinstance(plugin, str) else None
        if not isinstance(plugin, str) or cls is None:
            known = ", ".join(sorted(plugins.registry.channels))
            # Only the campaigns that use this channel fail (its plugin may have failed to load).
            unavailable[name] = (f"expected a registered channel type ({known}) at {key}.plugin, "
                                 f"got {plugin!r}{plugins.registry.failure_hint()}")
            continue
        declared = {**Channel.CORE_SETTINGS, **cls.settings}
        resolved = resolve(declared, spec, file=f, prefix=key, environ=environ, root=root,
                           secrets=missing_secrets is None)
        if missing_secrets is not None:
            missing_secrets += resolved.missing_secrets
        if resolved.problems:
            problems += resolved.problems
            continue
        values = resolved.values
        own = {k: v for k, v in values.items() if k not in Channel.CORE_SETTINGS}
        own["project_root"] = str(root)
        out[name] = ChannelConfig(
            name=name, plugin=plugin, cls=cls, settings=own,
            consent=values.get("consent") or name, rate_limit=values.get("rate_limit"),
            concurrency=values.get("concurrency") or cls.default_concurrency(),
            timeout=float(values["timeout"]),
            quiet_hours=quiet[name] if name in quiet else (
                DEFAULT_PHONE_QUIET_HOURS if cls.address == "phone" else None),
            missing_secrets=tuple(p.key for p in resolved.missing_secrets),
        )
        try:  # a channel may refuse combinations of settings in its constructor
            out[name].create().close()
        except Exception as exc:  # noqa: BLE001 - reported as a configuration problem
            problems.append(Problem(f, key, str(exc) or type(exc).__name__))
            del out[name]
    for name in quiet:
        if isinstance(table, dict) and name not in table:
            problems.append(Problem(f, f"quiet_hours.{name}", f"no channel named {name!r}"))
    return out


def _load_caps(table: Any, channels: dict[str, ChannelConfig], f: str,
               problems: list[Problem]) -> list[CapRule]:
    if isinstance(table, dict):
        table = [table]
    if not isinstance(table, list):
        problems.append(Problem(f, "caps", "expected a list of [[caps]] tables"))
        return []
    caps = []
    for i, spec in enumerate(table):
        key = f"caps[{i}]"
        if not isinstance(spec, dict):
            problems.append(Problem(f, key, "expected a table with max and per"))
            continue
        resolved = resolve(_CAP_KEYS, spec, file=f, prefix=key)
        problems += resolved.problems
        if resolved.problems:
            continue
        channel = resolved.values.get("channel")
        if channel is not None and channel not in channels:
            problems.append(Problem(f, f"{key}.channel", f"no channel named {channel!r}"))
            continue
        caps.append(CapRule(resolved.values["max"], resolved.values["per"], channel))
    return caps


def _load_campaign(path: Path, root: Path, plugins: Plugins, channels: dict[str, ChannelConfig],
                   tz: ZoneInfo, columns: tuple[set[str] | None, set[str] | None],
                   problems: list[Problem], unavailable: Mapping[str, str],
                   locale: str = "en") -> Campaign | None:
    f = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    data = _read_toml(path, problems, f)
    if data is None:
        return None
    channel_names = [k for k, v in data.items()
                     if (k in channels or k in unavailable) and isinstance(v, dict)]
    top = {k: v for k, v in data.items()
           if k not in ("params", "sample", "variants") and k not in channel_names}
    for k, v in list(top.items()):
        if isinstance(v, dict) and k not in _CAMPAIGN_KEYS:
            problems.append(Problem(f, k, f"no channel named {k!r} in outreach.toml (channels: "
                                          f"{', '.join(sorted(channels))})"))
            top.pop(k)
    base = resolve(_CAMPAIGN_KEYS, top, file=f, prefix="")
    problems += base.problems
    v = base.values
    name = v.get("name")
    if isinstance(name, str) and not _NAME.match(name):
        problems.append(Problem(f, "name", "expected letters, digits, - and _ (at most 63)"))

    rule_name = v.get("rule")
    rule_cls = plugins.registry.rules.get(rule_name) if isinstance(rule_name, str) else None
    rule = None
    if rule_cls is None and "rule" in v:
        known = ", ".join(sorted(plugins.registry.rules))
        problems.append(Problem(f, "rule", f"expected a registered rule ({known}), got "
                                           f"{rule_name!r}{plugins.registry.failure_hint()}"))
    elif rule_cls is not None:
        params = data.get("params", {})
        if not isinstance(params, dict):
            problems.append(Problem(f, "params", "expected a [params] table of the rule's parameters"))
            params = {}
        resolved = resolve(rule_cls.params, params, file=f, prefix="params")
        problems += resolved.problems
        if not resolved.problems:
            rule = rule_cls(name or path.stem, resolved.values)
            for key, message in rule.check():
                problems.append(Problem(f, f"params.{key}", message))
        if rule_cls.requires_schedule and not v.get("schedule"):
            problems.append(Problem(f, "schedule", f"the {rule_cls.name} rule needs a cron schedule"))

    schedule = v.get("schedule")
    if schedule is not None and not croniter.is_valid(schedule):
        problems.append(Problem(f, "schedule", f"expected a cron expression such as \"0 10 * * *\", "
                                               f"got {schedule!r}"))
    start = None
    if v.get("start") is not None:
        try:
            start = datetime.fromisoformat(v["start"])
            start = start if start.tzinfo else start.replace(tzinfo=tz)
        except ValueError:
            problems.append(Problem(f, "start", f"expected a date such as \"2026-11-01\", got "
                                                f"{v['start']!r}"))

    chosen = v.get("channels") or []
    if "channels" in v and not chosen:
        problems.append(Problem(f, "channels", "expected at least one channel"))
    for i, ch in enumerate(chosen):
        if ch in unavailable:
            problems.append(Problem(f, f"channels[{i}]", f"channel {ch!r} cannot be used: "
                                                         f"{unavailable[ch]}"))
        elif ch not in channels:
            problems.append(Problem(f, f"channels[{i}]", f"no channel named {ch!r} in outreach.toml "
                                                         f"(channels: {', '.join(sorted(channels))})"))
        elif ch not in channel_names:
            problems.append(Problem(f, ch, f"the campaign sends on {ch!r} but has no [{ch}] table "
                                           "with its templates"))
    for ch in channel_names:
        if ch not in chosen:
            problems.append(Problem(f, ch, f"templates for {ch!r}, which is not in channels"))

    category = v.get("category") or (rule_cls.default_category if rule_cls else "marketing")
    priority = v.get("priority")
    if priority is None:
        priority = rule_cls.default_priority if rule_cls else 0
    where = v.get("where")
    if where is not None:
        try:
            templates.compile_where(where)
        except TemplateError as exc:
            problems.append(Problem(f, "where", f"not a valid expression: {exc}"))

    tmpl: dict[str, ChannelTemplates] = {}
    for ch in channel_names:
        if ch in chosen and ch in channels:
            t = _load_channel_templates(data[ch], channels[ch], ch, f, root, category, problems)
            if t is not None:
                tmpl[ch] = t
    sample = data.get("sample", {})
    if not isinstance(sample, dict):
        problems.append(Problem(f, "sample", "expected a table of sample values"))
        sample = {}
    holdout = v.get("holdout") or 0.0
    if holdout > 0.5:
        problems.append(Problem(f, "holdout", f"expected a share from 0 to 0.5, got {holdout!r}"))
    conversion = None
    if v.get("conversion") is not None:
        conv = resolve(_CONVERSION_KEYS, v["conversion"], file=f, prefix="conversion")
        problems += conv.problems
        if not conv.problems:
            conversion = Conversion(conv.values["event"], conv.values["within"])
    variants = _load_variants(data.get("variants"), tmpl, channels, f, root, problems)

    if problems or rule is None:
        return None
    campaign = Campaign(
        # With no problems every required key is there: name and rule are strings.
        name=v["name"], file=path, rule_name=v["rule"], rule=rule, channels=list(chosen),
        category=category, priority=priority, templates=tmpl, schedule=schedule, start=start,
        where=where, description=v.get("description") or "", sample=sample,
        send_at=v.get("send_at"), holdout=holdout, conversion=conversion, variants=variants,
    )
    _seal(campaign)
    _check_send_at(campaign, channels, f, problems)
    _check_sample(campaign, channels, plugins, columns, tz, f, problems, locale)
    for variant in variants:
        shown = replace(campaign, templates=variant.templates, variants=[])
        _seal(shown)
        variant.content = {**shown.content, "variant": variant.name}
        blob = json.dumps(variant.content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        variant.version = hashlib.sha256(blob.encode()).hexdigest()[:16]
        if campaign.customer_fields is not None:
            campaign.customer_fields = (None if shown.customer_fields is None
                                        else campaign.customer_fields | shown.customer_fields)
        before = len(problems)
        _check_sample(shown, channels, plugins, columns, tz, f, problems, locale)
        for p in problems[before:]:
            p.key = f"variants.{variant.name}.{p.key}" if p.key else f"variants.{variant.name}"
    return None if problems else campaign


def _load_variants(raw: Any, base: dict[str, ChannelTemplates], channels: dict[str, ChannelConfig],
                   f: str, root: Path, problems: list[Problem]) -> list[Variant]:
    """A campaign's ``[[variants]]``: each the campaign's templates with its own fields over them."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        problems.append(Problem(f, "variants", "expected [[variants]] tables"))
        return []
    if len(raw) < 2:
        problems.append(Problem(f, "variants", "expected at least two [[variants]] to compare"))
    out: list[Variant] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        prefix = f"variants[{i}]"
        own = {k: v for k, v in table.items() if not (k in base and isinstance(v, dict))}
        for k, value in own.items():
            if isinstance(value, dict):
                problems.append(Problem(f, f"{prefix}.{k}", f"no channel named {k!r} among the "
                                                            f"campaign's ({', '.join(base)})"))
        resolved = resolve(_VARIANT_KEYS, {k: v for k, v in own.items() if not isinstance(v, dict)},
                           file=f, prefix=prefix)
        problems += resolved.problems
        name = resolved.values.get("name")
        if not isinstance(name, str):
            continue
        if not _NAME.match(name):
            problems.append(Problem(f, f"{prefix}.name", "expected letters, digits, - and _"))
        if name in seen:
            problems.append(Problem(f, f"{prefix}.name", f"a second variant named {name!r}"))
        seen.add(name)
        merged: dict[str, ChannelTemplates] = {}
        for ch, tmpl in base.items():
            fields, locales = dict(tmpl.fields), {k: dict(x) for k, x in tmpl.locales.items()}
            for key, value in (table.get(ch) or {}).items():
                if isinstance(value, dict) and _LOCALE.match(key):
                    for lk, lv in value.items():
                        got = _variant_field(channels[ch], f"{prefix}.{ch}.{key}.{lk}", lk, lv,
                                             root, f, problems)
                        if got:
                            locales.setdefault(key, {})[got[0]] = got[1]
                    continue
                got = _variant_field(channels[ch], f"{prefix}.{ch}.{key}", key, value, root, f,
                                     problems)
                if got:
                    fields[got[0]] = got[1]
            merged[ch] = ChannelTemplates(fields, locales, tmpl.options)
        out.append(Variant(name, resolved.values.get("weight", 1.0), merged))
    if out and sum(v.weight for v in out) <= 0:
        problems.append(Problem(f, "variants", "expected at least one variant with a weight above 0"))
    return out


def _variant_field(channel: ChannelConfig, path: str, key: str, value: Any, root: Path, f: str,
                   problems: list[Problem]) -> tuple[str, str] | None:
    """One template field a variant overrides: (field, source), or None after a problem."""
    name = key[:-5] if key.endswith("_file") else key
    if name not in channel.cls.template_fields:
        problems.append(Problem(f, path, f"a variant overrides template fields only (known: "
                                         f"{', '.join(sorted(channel.cls.template_fields))})"))
        return None
    if key.endswith("_file") and isinstance(value, str):
        try:
            value = templates.read_template_file(root, value)
        except ValueError as exc:
            problems.append(Problem(f, path, str(exc)))
            return None
    if not isinstance(value, str):
        problems.append(Problem(f, path, "expected a template string"))
        return None
    error = templates.check_syntax(name, value)
    if error:
        problems.append(Problem(f, path, error))
        return None
    return name, value


def _load_channel_templates(table: dict[str, Any], channel: ChannelConfig, ch: str, f: str,
                            root: Path, category: str,
                            problems: list[Problem]) -> ChannelTemplates | None:
    cls = channel.cls
    before = len(problems)
    files: dict[str, str] = {}

    def fields_of(tbl: dict[str, Any], prefix: str, allow_locales: bool):
        fields: dict[str, str] = {}
        options: dict[str, Any] = {}
        locales: dict[str, dict[str, str]] = {}
        for key, value in tbl.items():
            path = f"{prefix}.{key}"
            if isinstance(value, dict):
                if not allow_locales:
                    problems.append(Problem(f, path, "expected a template string"))
                elif not _LOCALE.match(key):
                    problems.append(Problem(f, path, "expected a locale table such as [email.hy], "
                                                     "or a template field"))
                else:
                    sub, sub_options, _ = fields_of(value, path, False)
                    if sub_options:
                        problems.append(Problem(f, path, "locale tables hold templates only"))
                    locales[key] = sub
                continue
            field_name = key[:-5] if key.endswith("_file") else key
            if field_name in cls.template_fields:
                if key.endswith("_file"):
                    try:
                        text = templates.read_template_file(root, value)
                    except ValueError as exc:
                        problems.append(Problem(f, path, str(exc)))
                        continue
                    files[path.split(".", 1)[1][:-5]] = value
                    value = text
                if not isinstance(value, str):
                    problems.append(Problem(f, path, "expected a template string"))
                    continue
                error = templates.check_syntax(field_name, value)
                if error:
                    problems.append(Problem(f, path, error))
                fields[field_name] = value
            elif key in cls.campaign_options:
                options[key] = value
            else:
                known = sorted(set(cls.template_fields) | set(cls.campaign_options))
                problems.append(Problem(f, path, f"unknown key for a {cls.type_name} channel "
                                                 f"(known: {', '.join(known)})"))
        return fields, options, locales

    fields, raw_options, locales = fields_of(table, ch, True)
    resolved = resolve(cls.campaign_options, raw_options, file=f, prefix=ch)
    problems += resolved.problems
    # The default templates are every locale's fallback, so they alone must be complete.
    present = set(fields)
    instance = channel.create()
    for message in instance.check_campaign(present, resolved.values, category):
        problems.append(Problem(f, ch, message))
    instance.close()
    if len(problems) > before:
        return None
    return ChannelTemplates(fields, locales, resolved.values, files)


def _seal(campaign: Campaign) -> None:
    """Compute what the ledger stores of a campaign (content, version hash, fields templates read)."""
    content = {
        "name": campaign.name, "rule": campaign.rule_name, "category": campaign.category,
        "priority": campaign.priority, "channels": campaign.channels,
        "templates": {ch: {"fields": t.fields, "locales": t.locales,
                           "options": _jsonable(t.options)}
                      for ch, t in campaign.templates.items()},
    }
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    campaign.content = content
    campaign.version = hashlib.sha256(blob.encode()).hexdigest()[:16]
    sources = [src for t in campaign.templates.values()
               for src in [*t.fields.values(), *(s for loc in t.locales.values() for s in loc.values())]]
    campaign.customer_fields = templates.referenced_fields(sources)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, time):
        return value.isoformat()
    return value


def _check_send_at(campaign: Campaign, channels: dict[str, ChannelConfig], f: str,
                   problems: list[Problem]) -> None:
    """A ``send_at`` inside a channel's quiet hours would always be deferred: say so instead."""
    if campaign.send_at is None:
        return
    for ch in campaign.channels:
        quiet = channels[ch].quiet_hours if ch in channels else None
        if quiet is not None and _in_quiet_hours(campaign.send_at, quiet):
            problems.append(Problem(
                f, "send_at", f"{campaign.send_at:%H:%M} falls in the quiet hours of channel "
                              f"{ch!r} ({quiet[0]:%H:%M}–{quiet[1]:%H:%M}), so every message would "
                              "wait for them to end: choose a time outside them"))


def _in_quiet_hours(at: time, quiet: tuple[time, time]) -> bool:
    from outreach.policy.quiet_hours import quiet_until

    utc = ZoneInfo("UTC")
    return quiet_until(datetime.combine(datetime(2000, 1, 1).date(), at, tzinfo=utc), *quiet, utc) \
        is not None


#: The sample customer of validate and preview. Its time zone and locale are the deployment's.
SAMPLE_CUSTOMER: dict[str, str | list[str]] = {
    "id": "sample", "first_name": "Ani", "last_name": "Petrosyan", "email": "ani@example.com",
    "phone": "+37491234567", "timezone": "UTC", "locale": "en", "tags": ["vip"],
}


def sample_variables(campaign: Campaign, tz: ZoneInfo, now: datetime | None = None,
                     locale: str | None = None,
                     columns: tuple[set[str] | None, set[str] | None] = (None, None),
                     plugins: Plugins | None = None, default_locale: str = "en") -> dict[str, Any]:
    """Variables for a sample render: a sample customer in the deployment's time zone speaking
    ``default_locale`` (or ``locale``, for a locale's templates; ``[sample.customer]`` overrides
    any field), the rule's own sample variables (``[sample.event]`` for event attributes), any
    other table of ``[sample]``, and what plugins add through ``outreach_template_context``."""
    now = now or datetime.now(tz)
    customer: dict[str, Any] = {**SAMPLE_CUSTOMER, "timezone": tz.key, "locale": default_locale}
    # [sample.customer] may set any TOML value
    customer.update(campaign.sample.get("customer", {}) if isinstance(campaign.sample.get("customer"),
                                                                          dict) else {})
    if locale:
        customer["locale"] = locale
    customer.setdefault("name", f"{customer.get('first_name', '')} {customer.get('last_name', '')}"
                        .strip())
    known_customer, known_event = columns
    variables: dict[str, Any] = {k: v for k, v in campaign.sample.items()
                                 if k not in ("customer", "event")}
    if plugins is not None and plugins.has_template_context:
        from outreach.audience import Customer

        fields = {k: customer[k] for k in ("id", "first_name", "last_name", "email", "phone",
                                           "timezone", "locale") if k in customer}
        variables.update(plugins.template_context(Customer(**fields), campaign.name))
    variables["customer"] = SampleRecord(customer, known_customer)
    for name, value in campaign.rule.sample_variables(now, campaign.sample).items():
        if name == "event" and _reads_feedback(campaign, now):
            # A feedback answer (outreach serve) has these fields, whatever the source's columns.
            value = {**FEEDBACK_SAMPLE, **value}
            variables[name] = SampleRecord(value, None if known_event is None
                                           else known_event | set(FEEDBACK_SAMPLE))
            continue
        variables[name] = SampleRecord(value, known_event) if name == "event" else value
    return variables


#: The fields of a ``feedback`` event (outreach serve's feedback page), as a sample shows them.
FEEDBACK_SAMPLE = {"rating": 2, "comment": "The bread was cold.", "message": "sample:key",
                   "campaign": "feedback"}


def _reads_feedback(campaign: Campaign, now: datetime) -> bool:
    try:
        needs = campaign.rule.event_needs(now)
    except Exception:  # noqa: BLE001 - a rule that cannot say reads whatever it reads
        return False
    return needs is not None and "feedback" in needs.types


class SampleRecord(dict):
    """A sample customer or event: the audience's own columns render as placeholders.

    Sample renders check templates, not data: a template that reads ``customer.club_renews_on``
    must not fail validation because the built-in sample customer lacks that column, but a name
    the audience does not have at all (a typo) still fails. ``known=None`` accepts any name.
    """

    def __init__(self, values: Mapping[str, Any], known: set[str] | None) -> None:
        super().__init__(values)
        self._known = known

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name.startswith("_") or (self._known is not None and name not in self._known):
            raise AttributeError(name)
        return Placeholder(f"<{name}>")

    def __missing__(self, key: str) -> Any:
        if self._known is not None and key not in self._known:
            raise KeyError(key)
        return Placeholder(f"<{key}>")


def sample_links(public_url: str) -> dict[str, str]:
    """The link variables ``[serve]`` gives each message, as a sample render shows them."""
    base = public_url.rstrip("/")
    return {"unsubscribe_url": f"{base}/u/SAMPLE-TOKEN", "preferences_url": f"{base}/u/SAMPLE-TOKEN",
            "feedback_url": f"{base}/f/SAMPLE-TOKEN"}


def _check_sample(campaign: Campaign, channels: dict[str, ChannelConfig], plugins: Plugins,
                  columns: tuple[set[str] | None, set[str] | None],
                  tz: ZoneInfo, f: str, problems: list[Problem], default_locale: str = "en") -> None:
    """Render every template variant against a sample customer; report what fails."""
    for ch, tmpl in campaign.templates.items():
        channel = channels[ch].create()
        for locale in [None, *tmpl.locales]:
            fields = tmpl.for_locale(locale or "")
            variables = sample_variables(campaign, tz, locale=locale, columns=columns,
                                         plugins=plugins, default_locale=default_locale)
            if channels[ch].links:  # [serve] signs these for every message
                variables.update(sample_links("https://outreach.example"))
            rendered = {}
            for field_name, source in fields.items():
                try:
                    rendered[field_name] = templates.render(field_name, source, variables)
                except Exception as exc:  # noqa: BLE001 - sandbox refusals are not all TemplateErrors
                    own = f"{locale}.{field_name}" if locale and field_name in \
                        tmpl.locales[locale] else field_name
                    where = f" ({tmpl.files[own]})" if own in tmpl.files else ""
                    hint = ""
                    if not channels[ch].links and any(
                            f"{name} is undefined" in str(exc) or f"'{name}'" in str(exc)
                            for name in sample_links("")):
                        hint = " (add [serve] to outreach.toml: outreach serve signs these links)"
                    problems.append(Problem(f, f"{ch}.{own}", f"fails on a sample customer"
                                                              f"{where}: "
                                                              f"{templates.describe_error(exc)}"
                                                              f"{hint}"))
            if len(rendered) == len(fields):
                for message in channel.check_rendered(rendered, tmpl.options):
                    key = f"{ch}.{locale}" if locale else ch
                    problems.append(Problem(f, key, f"on a sample customer: {message}"))
        channel.close()
    if campaign.where:
        try:
            templates.evaluate_where(
                campaign.where, sample_variables(campaign, tz, columns=columns)["customer"])
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem(f, "where", f"fails on a sample customer: {exc}"))
