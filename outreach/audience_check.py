"""The checks of the audience that ``outreach run`` and ``outreach validate`` share.

Before anything is planned, the source says what makes it unusable (a file missing or not UTF-8,
another delimiter, a table, column or query that fails: :meth:`Source.check`), and each campaign
is held against what the audience has: an attribute its rule reads (``before =
"appointment_date"``) must be one of the audience's, and at least one of its channels' consents
must be one the audience can give. ``outreach validate`` reports these problems and exits 2;
``outreach run`` and ``outreach plan`` refuse the same problems with the same messages, because
both call :func:`check_audience`. With ``run --skip-invalid``, the campaigns a problem concerns
are left out (and named) and the others run; a customers file that cannot be read stops
everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from outreach.audience import Source, SourceProblem
from outreach.config import Campaign, Project
from outreach.errors import ConfigError, Problem


@dataclass
class AudienceCheck:
    """What :func:`check_audience` found."""

    #: The customers cannot be read: nothing can be planned.
    problems: list[Problem] = field(default_factory=list)
    #: The events cannot be read: no campaign that reads events can be planned.
    event_problems: list[Problem] = field(default_factory=list)
    #: Problems of single campaigns (an attribute the audience lacks, no consent it can give).
    campaign_problems: dict[str, list[Problem]] = field(default_factory=dict)
    #: The campaigns that read events (left out with the event problems under --skip-invalid).
    event_campaigns: list[str] = field(default_factory=list)

    def all(self) -> list[Problem]:
        """Every problem, in the order they are reported."""
        out = self.problems + self.event_problems
        for problems in self.campaign_problems.values():
            out += problems
        return out

    def enforce(self, project: Project, *, skip_invalid: bool = False) -> tuple[Project, list[str]]:
        """The project to plan: refuse (ConfigError, exit 2) what cannot be planned, or with
        ``skip_invalid`` leave out the campaigns concerned. Returns the project and what was left
        out, one line per campaign, naming why."""
        if self.problems or (not skip_invalid and self.all()):
            raise ConfigError(self.problems if self.problems else self.all())
        left_out: dict[str, list[str]] = {}
        if self.event_problems:
            why = "; ".join(str(p) for p in self.event_problems)
            for name in self.event_campaigns:
                left_out.setdefault(name, []).append(f"it reads events, which cannot be read: {why}")
        for name, problems in self.campaign_problems.items():
            left_out.setdefault(name, []).extend(str(p) for p in problems)
        if not left_out:
            return project, []
        kept = {n: c for n, c in project.campaigns.items() if n not in left_out}
        return (replace(project, campaigns=kept),
                [f"{name}: {'; '.join(reasons)}" for name, reasons in left_out.items()])


def _as_problem(item: SourceProblem | tuple[str, str]) -> SourceProblem:
    return item if isinstance(item, SourceProblem) else SourceProblem(*item)


def reads_events(campaign: Campaign, now: datetime) -> bool:
    """Whether the campaign's rule asks for events at ``now``."""
    needs = campaign.rule.event_needs(now)
    return bool(needs and (needs.types or needs.latest))


def check_audience(project: Project, source: Source, now: datetime) -> AudienceCheck:
    """Check ``source`` and every campaign of ``project`` against it, reading no row."""
    out = AudienceCheck()
    where = str(project.file)
    for item in source.check():
        problem = _as_problem(item)
        target = out.event_problems if problem.role == "events" else out.problems
        target.append(Problem(where, problem.key, problem.message))
    out.event_campaigns = [name for name, c in project.campaigns.items() if reads_events(c, now)]
    if out.problems:
        return out  # without customers there is nothing to hold campaigns against
    try:
        known, _ = source.columns()
        consents = source.consents()
    except Exception:  # noqa: BLE001 - a source that cannot tell is not held to it
        known, consents = None, None
    for name, campaign in project.campaigns.items():
        f = str(campaign.file.relative_to(project.root)
                if campaign.file.is_relative_to(project.root) else campaign.file)
        mine: list[Problem] = []
        if known is not None:
            for param in campaign.rule.attribute_params:
                attribute = campaign.rule.config.get(param)
                if isinstance(attribute, str) and attribute and attribute not in known:
                    listed = ", ".join(sorted(known - _STANDARD)) or "none"
                    mine.append(Problem(f, f"params.{param}", f"the audience has no attribute "
                                        f"{attribute!r} (its attributes: {listed})"))
        if consents is not None:
            keys = [project.channels[ch].consent for ch in campaign.channels
                    if ch in project.channels]
            if keys and not any(k in consents for k in keys):
                wanted = ", ".join(dict.fromkeys(keys))
                mine.append(Problem(f, "channels", f"can reach nobody: the audience gives no "
                                    f"consent for {wanted} (no consent_{keys[0]} column, mapped "
                                    f"column or consent_default)"))
        if mine:
            out.campaign_problems[name] = mine
    return out


_STANDARD = {"id", "first_name", "last_name", "email", "phone", "timezone", "locale", "tags",
             "name", "consent"}
