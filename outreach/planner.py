"""Planning: from due campaigns and a streamed audience to decided messages in the outbox.

One pass over the audience, in batches: each batch of customers is shown to every due campaign's
rule, every candidate goes through the policy chain, caps are allocated per customer by priority,
and the batch's messages and refusals are written in a few set-wise statements. Memory holds one
batch (plus the events the due rules asked for), never the whole audience.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

from outreach import caps as caps_mod
from outreach import templates
from outreach.audience import Customer, Event, Profile, RowProblem
from outreach.config import Campaign, Project
from outreach.decision import ChannelInfo, Choice, DecisionContext, Defer, Refusal
from outreach.ledger import Ledger, epoch
from outreach.plugins import Plugins
from outreach.policy.addresses import normalize, raw_address
from outreach.report import RunReport
from outreach.rule import Candidate, SelectContext
from outreach.schedule import due as due_at


@dataclass
class PlanRow:
    """One candidate's fate, as ``outreach plan`` lists it."""

    campaign: str
    customer: str
    key: str
    decision: str  # send, defer, skipped, suppressed, capped, already planned
    channel: str | None = None
    reason: str = ""
    not_before: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: one object per candidate."""
        return {"campaign": self.campaign, "customer": self.customer, "key": self.key,
                "channel": self.channel, "decision": self.decision, "reason": self.reason,
                "not_before": self.not_before}


@dataclass
class _Accepted:
    campaign: Campaign
    candidate: Candidate
    channel: str
    address: str
    send_at: datetime
    defer_reason: str = ""


class Planner:
    """Plans one run at ``now``. With ``dry_run`` it decides everything and writes nothing."""

    def __init__(self, project: Project, plugins: Plugins, ledger: Ledger, now: datetime,
                 report: RunReport, *, campaigns: Sequence[str] | None = None,
                 dry_run: bool = False, run_id: str | None = None,
                 on_row: Callable[[PlanRow], None] | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.project = project
        self.plugins = plugins
        self.ledger = ledger
        self.now = now
        self.report = report
        self.only = set(campaigns) if campaigns else None
        self.dry_run = dry_run
        self.run_id = run_id
        self.on_row = on_row
        self.progress = progress
        self.channel_info = {
            name: ChannelInfo(name, cfg.cls.address, cfg.consent, cfg.quiet_hours)
            for name, cfg in project.channels.items()
        }
        self._versions: dict[str, int] = {}

    # ------------------------------------------------------------------ due
    def due_campaigns(self) -> list[tuple[Campaign, datetime | None]]:
        """The campaigns due now, each with the occurrence it serves; records first sightings."""
        states = self.ledger.campaign_states()
        out = []
        for campaign in self.project.campaigns.values():
            if self.only is not None and campaign.name not in self.only:
                continue
            d = due_at(campaign.schedule, campaign.start, states.get(campaign.name), self.now,
                       self.project.tz)
            rep = self.report.campaign(campaign.name)
            rep.due, rep.note = d.due, d.note
            if d.baseline is not None and not self.dry_run:
                self.ledger.complete_occurrence(campaign.name, epoch(d.baseline))
            if d.due:
                out.append((campaign, d.occurrence))
        return out

    # ------------------------------------------------------------------ the pass
    def run(self) -> None:
        """Plan every due campaign in one pass over the audience."""
        due = self.due_campaigns()
        if not due:
            return
        if not self.dry_run:
            for campaign, occurrence in due:
                if occurrence is not None:
                    self.ledger.begin_occurrence(campaign.name, epoch(occurrence))
                self._versions[campaign.name] = self.ledger.store_version(
                    campaign.name, campaign.version, campaign.content)
        source = self.project.source()
        events, latest = self._collect_events(source, [c for c, _ in due])
        seen = 0
        for batch in _batches(source.customers(self._row_problem), self.project.batch_size):
            profiles = [Profile(c, events.get(c.id, []), latest.get(c.id, {})) for c in batch]
            self._plan_batch(profiles, due)
            seen += len(batch)
            if self.progress:
                self.progress(seen)
        if not self.dry_run:
            for campaign, occurrence in due:
                if occurrence is not None and not self.report.campaign(campaign.name).error:
                    self.ledger.complete_occurrence(campaign.name, epoch(occurrence))

    def _row_problem(self, problem: RowProblem) -> None:
        self.report.add_row_problem(str(problem))

    def _collect_events(self, source, due: list[Campaign]):
        """The events the due rules asked for, by customer; and the latest activity per customer."""
        needs = [n for n in (c.rule.event_needs(self.now) for c in due) if n]
        if not needs:
            return {}, {}
        types = frozenset().union(*(n.types for n in needs))
        latest_types = frozenset().union(*(n.latest for n in needs))
        sinces = [n.since for n in needs if n.types]
        since = None if latest_types or not sinces or None in sinces else min(sinces)
        event_since = min((s for s in sinces if s is not None), default=None)
        events: dict[str, list[Event]] = {}
        latest: dict[str, dict[str, datetime]] = {}
        for event in source.events(types | latest_types, since, self._row_problem):
            if event.time > self.now:
                continue  # an event from the future (or a replayed --now) has not happened yet
            if event.type in latest_types:
                mine = latest.setdefault(event.customer_id, {})
                if event.type not in mine or event.time > mine[event.type]:
                    mine[event.type] = event.time
            if event.type in types and (event_since is None or event.time >= event_since):
                events.setdefault(event.customer_id, []).append(event)
        for evs in events.values():
            evs.sort(key=lambda e: e.time)
        return events, latest

    # ------------------------------------------------------------------ one batch
    def _plan_batch(self, profiles: list[Profile], due: list[tuple[Campaign, datetime | None]]) -> None:
        views: dict[str, dict[str, Any]] = {}

        def view(c: Customer) -> dict[str, Any]:
            if c.id not in views:
                views[c.id] = c.template_view()
            return views[c.id]

        found: list[tuple[Campaign, Candidate]] = []
        for campaign, occurrence in due:
            rep = self.report.campaign(campaign.name)
            if rep.error:
                continue
            chosen = profiles
            if campaign.where:
                chosen = []
                for p in profiles:
                    try:
                        if templates.evaluate_where(campaign.where, view(p.customer)):
                            chosen.append(p)
                    except Exception as exc:  # noqa: BLE001 - a filter failing for one customer
                        rep.reasons[f"where could not be evaluated: {exc}"] += 1
            if not chosen:
                continue
            history = (self.ledger.history(campaign.name, [p.customer.id for p in chosen])
                       if campaign.rule.needs_history else {})
            ctx = SelectContext(campaign.name, self.now, self.project.tz, occurrence, history)
            try:
                for cand in campaign.rule.select(chosen, ctx):
                    found.append((campaign, cand))
            except Exception as exc:  # noqa: BLE001 - a rule plugin's bug stops its campaign only
                rep.error = f"rule {campaign.rule_name!r} failed: {type(exc).__name__}: {exc}"
                found = [(c, x) for c, x in found if c is not campaign]
        if not found:
            return

        existing = self.ledger.existing_keys([c.key for _, c in found])
        fresh = []
        for campaign, cand in found:
            if cand.key in existing:
                self.report.campaign(campaign.name).already_planned += 1
                self._row(campaign, cand, "already planned", reason="planned by an earlier run")
            else:
                self.report.campaign(campaign.name).selected += 1
                fresh.append((campaign, cand))
        if not fresh:
            return

        ctx = DecisionContext(self.now, self.project.tz,
                              self.ledger.suppressed(self._addresses(fresh)))
        accepted: list[_Accepted] = []
        skips: list[dict[str, Any]] = []
        for campaign, cand in fresh:
            outcome = self._decide(campaign, cand, ctx)
            if isinstance(outcome, _Accepted):
                accepted.append(outcome)
            else:
                kind, channel, reason = outcome
                self.report.campaign(campaign.name).refuse(kind, reason)
                self._row(campaign, cand, kind, channel=channel, reason=reason)
                skips.append(self._skip_row(campaign, cand, kind, reason))

        planned, capped = self._allocate(accepted)
        for a, reason in capped:
            self.report.campaign(a.campaign.name).refuse("capped", reason)
            self._row(a.campaign, a.candidate, "capped", channel=a.channel, reason=reason)
            skips.append(self._skip_row(a.campaign, a.candidate, "capped", reason))

        rows = []
        for a in planned:
            later = a.send_at > self.now
            rep = self.report.campaign(a.campaign.name)
            rep.queued += 1
            if later:
                rep.deferred += 1
            reason = a.defer_reason or ("waits for its delay" if later else "")
            self._row(a.campaign, a.candidate, "defer" if later else "send", channel=a.channel,
                      reason=reason, not_before=a.send_at.isoformat())
            if not self.dry_run:
                rows.append(self._message_row(a, later))
        if not self.dry_run:
            # The planner lock makes this the only writer of new keys; the unique key would still
            # turn a second insert of the same message into a no-op.
            self.ledger.insert_messages(rows)
            self.ledger.record_skips(skips)

    def _addresses(self, fresh: Iterable[tuple[Campaign, Candidate]]) -> set[tuple[str, str]]:
        pairs = set()
        for campaign, cand in fresh:
            for ch in campaign.channels:
                kind = self.channel_info[ch].address_kind
                raw = raw_address(cand, kind)
                if raw:
                    address, _ = normalize(kind, raw)
                    pairs.add((kind, address or raw))
        return pairs

    def _decide(self, campaign: Campaign, cand: Candidate, ctx: DecisionContext):
        """The policy chain for one candidate: an _Accepted, or (outcome, channel, reason)."""
        refusals: list[tuple[str, Refusal]] = []
        for ch in campaign.channels:
            info = self.channel_info[ch]
            refusal = self.plugins.check_channel(cand, info, ctx)
            if refusal is not None:
                refusals.append((ch, refusal))
                continue
            address, _ = normalize(info.address_kind, raw_address(cand, info.address_kind))
            send_at = max(self.now, cand.not_before or self.now)
            verdict = self.plugins.decide(cand, Choice(info, address, send_at), ctx)
            if isinstance(verdict, Refusal):
                return verdict.outcome, ch, verdict.reason
            reason = ""
            if isinstance(verdict, Defer):
                send_at, reason = max(send_at, verdict.until), verdict.reason
            return _Accepted(campaign, cand, ch, address, send_at, reason)
        first = refusals[0][1]
        if len(refusals) == 1:
            return first.outcome, refusals[0][0], first.reason
        outcome = "suppressed" if all(r.outcome == "suppressed" for _, r in refusals) else first.outcome
        return outcome, None, "; ".join(f"{ch}: {r.reason}" for ch, r in refusals)

    def _allocate(self, accepted: list[_Accepted]):
        """Apply frequency caps per customer, highest priority first. Returns (planned, capped)."""
        caps = self.project.caps
        marketing = [a for a in accepted if a.campaign.category != "transactional"]
        if not caps or not marketing:
            return accepted, []
        width = caps_mod.widest(caps)
        lo = epoch(self.now) - width
        hi = max(epoch(a.send_at) for a in marketing) + width
        usage = self.ledger.cap_usage(sorted({a.candidate.customer.id for a in marketing}), lo, hi)
        by_customer: dict[str, list[_Accepted]] = {}
        for a in marketing:
            by_customer.setdefault(a.candidate.customer.id, []).append(a)
        planned = [a for a in accepted if a.campaign.category == "transactional"]
        capped = []
        for cid, mine in by_customer.items():
            use = caps_mod.Usage(list(usage.get(cid, ())))
            mine.sort(key=lambda a: (-a.campaign.priority, a.send_at, a.candidate.key))
            for a in mine:
                at = epoch(a.send_at)
                reason = caps_mod.check(caps, use, a.channel, at)
                if reason:
                    capped.append((a, reason))
                else:
                    use.items.append((a.channel, at))
                    planned.append(a)
        return planned, capped

    # ------------------------------------------------------------------ rows
    def _variables(self, a: _Accepted) -> dict[str, Any]:
        customer = a.candidate.customer
        full = customer.template_view()
        fields = a.campaign.customer_fields
        stored = full if fields is None else {k: full[k] for k in fields if k in full}
        variables = {"customer": stored, **a.candidate.variables}
        if self.plugins.has_template_context:
            variables.update(self.plugins.template_context(customer, a.campaign.name))
        return variables

    def _message_row(self, a: _Accepted, later: bool) -> dict[str, Any]:
        c = a.candidate.customer
        at = epoch(a.send_at)
        return {
            "key": a.candidate.key, "campaign": a.campaign.name,
            "version_id": self._versions[a.campaign.name], "customer_id": c.id,
            "channel": a.channel, "address": a.address, "name": c.name, "locale": c.locale,
            "variables": json.dumps(self._variables(a), ensure_ascii=False, separators=(",", ":"),
                                    default=str),
            "category": a.campaign.category, "priority": a.campaign.priority,
            "state": "deferred" if later else "queued", "not_before": at, "due_at": at,
            "run_id": self.run_id,
        }

    def _skip_row(self, campaign: Campaign, cand: Candidate, outcome: str, reason: str) -> dict[str, Any]:
        return {"key": cand.key, "campaign": campaign.name, "customer_id": cand.customer.id,
                "outcome": outcome, "reason": reason, "decided_at": epoch(self.now),
                "run_id": self.run_id}

    def _row(self, campaign: Campaign, cand: Candidate, decision: str, *, channel: str | None = None,
             reason: str = "", not_before: str | None = None) -> None:
        if self.on_row:
            self.on_row(PlanRow(campaign.name, cand.customer.id, cand.key, decision, channel, reason,
                                not_before))


def _batches(items: Iterable[Customer], size: int) -> Iterator[list[Customer]]:
    batch: list[Customer] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

