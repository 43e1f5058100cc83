"""Finding, loading and registering plugins.

Built-in rules, channels, sources and policy steps are registered through the same hooks as third
parties (as pytest does), then every distribution's entry points in the group ``outreach`` are loaded
one by one: a plugin that fails to import is recorded (which one, why) and the rest load, so only the
campaigns that need it fail validation. A plugin that would load and silently do nothing (no hook,
an ``outreach_*`` function without ``@hookimpl``, or, found by ``check_pending()`` which runs last,
a hook name that does not exist) is a fatal failure: loading the project refuses to go on.

``OUTREACH_PLUGINS`` (comma-separated entry-point names) restricts which installed plugins load;
``OUTREACH_PLUGINS=""`` loads none but the built-ins.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pluggy

from outreach import hookspecs
from outreach.audience import Customer, Source
from outreach.channel import Channel, ChannelError, Delivery, OutgoingMessage
from outreach.decision import CampaignInfo, Choice, ChannelInfo, DecisionContext, Defer, Refusal
from outreach.errors import OutreachError, Problem
from outreach.rule import Candidate, Rule
from outreach.settings import Setting, resolve

#: Built-in plugin modules, registered like any other. The policy steps are listed in the order
#: they answer: their implementations are ``tryfirst`` (pluggy calls the last registered first, so
#: they are registered in reverse), and the policy chain calls them before any other plugin's.
BUILTIN_MODULES = (
    "outreach.rules.newsletter",
    "outreach.rules.thank_you",
    "outreach.rules.reminder",
    "outreach.rules.apology",
    "outreach.rules.birthday",
    "outreach.channels.outbox",
    "outreach.sources.csv_source",
    "outreach.sources.sql_source",
)
POLICY_MODULES = (
    "outreach.policy.consent",
    "outreach.policy.suppression",
    "outreach.policy.addresses",
    "outreach.policy.quiet_hours",
)


#: The plugin names of the built-in policy steps, in the order they answer.
POLICY_NAMES = tuple(m.rsplit(".", 1)[1] for m in POLICY_MODULES)

#: What each policy hook may answer (besides None).
_ANSWERS: dict[str, tuple[type, ...]] = {"outreach_check_channel": (Refusal,),
                                         "outreach_decide": (Refusal, Defer)}

#: ``outreach internal error`` exit code: a plugin raised while the run was under way.
EXIT_PLUGIN_CRASHED = 4


class PluginError(OutreachError):
    """A plugin broke its contract at run time (a policy answer of the wrong type): the run
    stops rather than apply a policy it cannot read."""


class PluginCrashed(OutreachError):
    """A plugin raised while the run was under way; the message names it and what it raised."""

    exit_code = EXIT_PLUGIN_CRASHED


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or registered, and why.

    A ``fatal`` failure is a plugin that loaded but whose hooks would silently not run (no hook,
    an unknown hook name, a function named like a hook without ``@hookimpl``): every command that
    loads the project refuses to go on, as a policy that is quietly not applied is worse than none.
    Other failures (an import error, a duplicate name) only stop the campaigns that need the plugin.
    """

    name: str
    distribution: str | None
    error: str
    #: ``name = module`` as the distribution declares it, for entry-point plugins.
    entry_point: str | None = None
    fatal: bool = False

    def where(self) -> str:
        """The plugin named as its author and its user know it."""
        return describe_plugin(self.name, self.distribution, self.entry_point)


def describe_plugin(name: str, distribution: str | None, entry_point: str | None) -> str:
    """``plugin NAME (distribution D, entry point NAME = module)``, with what is known."""
    parts = [f"distribution {distribution}"] if distribution else []
    if entry_point:
        parts.append(f"entry point {entry_point}")
    return f"plugin {name}" + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class Registry:
    """Everything the plugins registered, with where each came from."""

    channels: dict[str, type[Channel]] = field(default_factory=dict)
    rules: dict[str, type[Rule]] = field(default_factory=dict)
    sources: dict[str, type[Source]] = field(default_factory=dict)
    #: (kind, name) -> name of the plugin that registered it.
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    #: plugin name -> the settings it declares for its ``[plugins.NAME]`` table.
    settings: dict[str, Mapping[str, Setting]] = field(default_factory=dict)

    def problems(self) -> list[Problem]:
        """The fatal failures, as configuration problems naming each plugin."""
        return [Problem(f.where(), "", f.error) for f in self.failures if f.fatal]

    def failure_hint(self) -> str:
        """A sentence naming plugins that failed to load, to add to a 'not registered' error."""
        if not self.failures:
            return ""
        names = ", ".join(f"{f.name} ({f.error})" for f in self.failures)
        return f"; plugins that failed to load: {names}"


def _adapt(function: Callable[..., Any], names: tuple[str, ...],
           argnames: tuple[str, ...]) -> Callable[..., Any]:
    """``function`` as a function of all of ``argnames``, passing it only the ones it declares.

    An implementation that takes the first few arguments (the built-in steps take the three the
    hooks had before ``campaign``) gets a plain closure: the hot loop calls it per candidate.
    """
    if names == argnames:
        return function
    f = function
    if names == argnames[:3]:
        return lambda a, b, c, d: f(a, b, c)
    if names == argnames[:2]:
        return lambda a, b, c, d: f(a, b)
    if names == argnames[:1]:
        return lambda a, b, c, d: f(a)
    idx = [argnames.index(n) for n in names]
    return lambda *a: f(*[a[i] for i in idx])


class _Chain:
    """One policy hook's implementations, called in order without pluggy's generic dispatch.

    ``pluggy`` spends a few microseconds per hook call on bookkeeping; asked twice per candidate,
    that is most of the policy chain's cost at a million customers. When no implementation is a
    wrapper, the implementations are called directly: the built-in policy steps first, in their
    documented order, then the others in pluggy's order (last registered first, tryfirst and
    trylast respected), each with only the arguments it declares. With a wrapper the hook itself
    is called.

    Every answer is checked (a policy answer of the wrong type is a :class:`PluginError`) and an
    exception a plugin raises becomes :class:`PluginCrashed`, naming the plugin.
    """

    def __init__(self, plugins: "Plugins", hook_name: str, argnames: tuple[str, ...],
                 only: tuple[str, ...] | None = None) -> None:
        self.plugins = plugins
        self.hook_name = hook_name
        self.hook = getattr(plugins.pm.hook, hook_name)
        self.argnames = argnames
        self.answers = _ANSWERS[hook_name]
        impls = list(reversed(self.hook.get_hookimpls()))
        if only is not None:
            impls = [i for i in impls if i.plugin_name in only]
        rank = {name: i for i, name in enumerate(POLICY_NAMES)}
        impls.sort(key=lambda i: rank.get(i.plugin_name, len(rank)))  # stable: the rest keep order
        self.direct = only is not None or not any(
            getattr(i, "hookwrapper", False) or getattr(i, "wrapper", False) for i in impls)
        self.calls: list[Callable[..., Any]] = []
        self.names: list[str] = []
        for impl in impls:
            self.calls.append(_adapt(impl.function, tuple(impl.argnames), argnames))
            self.names.append(impl.plugin_name)

    def _hook_call(self, *args: Any) -> Any:
        try:
            return self.hook(**dict(zip(self.argnames, args)))
        except (PluginError, PluginCrashed):
            raise
        except Exception as exc:
            raise self.plugins.crashed(self.hook_name, exc) from exc

    def _blame(self, call: Callable[..., Any] | None, exc: Exception) -> OutreachError:
        if isinstance(exc, (PluginError, PluginCrashed)):
            return exc
        name = self.names[self.calls.index(call)] if call is not None else None
        return self.plugins.crashed(self.hook_name, exc, name)

    def _wrong(self, call: Callable[..., Any] | None, res: Any) -> PluginError:
        name = self.names[self.calls.index(call)] if call is not None else None
        expected = " or ".join(t.__name__ for t in self.answers)
        who = self.plugins.where(name) if name else "a plugin"
        return PluginError(f"{who}: {self.hook_name} returned {res!r}; expected {expected} "
                           "(from outreach) or None")

    def _check(self, answers: list, call: Callable[..., Any] | None = None) -> list:
        for res in answers:
            if not isinstance(res, self.answers):
                raise self._wrong(call, res)
        return answers

    def first_caller(self) -> Callable[..., Any]:
        """The first non-None answer (a ``firstresult`` hook), as a plain function of the hook's
        arguments, for hot loops.

        The planner asks the policy chain over a million times a run; binding the implementations
        into one closure saves the method lookups and argument packing of each call.
        """
        if not self.direct:
            def through_hook(*args: Any) -> Any:
                res = self._hook_call(*args)
                return self._check([res])[0] if res is not None else None

            return through_hook
        calls = tuple(self.calls)
        answers = self.answers
        blame, wrong = self._blame, self._wrong

        def first(a: Any, b: Any, c: Any, d: Any) -> Any:
            call = None
            try:
                for call in calls:
                    res = call(a, b, c, d)
                    if res is not None:
                        if not isinstance(res, answers):
                            raise wrong(call, res)
                        return res
            except Exception as exc:
                raise blame(call, exc) from exc
            return None

        return first

    def all_caller(self) -> Callable[..., list]:
        """Every non-None answer, in call order, as a plain function of the hook's arguments."""
        if not self.direct:
            return lambda *args: self._check(list(self._hook_call(*args)))
        calls = tuple(self.calls)
        answers = self.answers
        blame, wrong = self._blame, self._wrong

        def every(a: Any, b: Any, c: Any, d: Any) -> list:
            out = []
            call = None
            try:
                for call in calls:
                    res = call(a, b, c, d)
                    if res is not None:
                        if not isinstance(res, answers):
                            raise wrong(call, res)
                        out.append(res)
            except Exception as exc:
                raise blame(call, exc) from exc
            return out

        return every


class Plugins:
    """The plugin manager and what was registered, with typed calls into the hooks.

    The core calls hooks only through this class, so every call site is type-checked.
    """

    def __init__(self, pm: pluggy.PluginManager, registry: Registry,
                 dists: dict[str, tuple[str, str]]) -> None:
        self.pm = pm
        self.registry = registry
        #: plugin name -> (distribution name, version) for entry-point plugins.
        self.distributions = dists
        #: plugin name -> ``name = module`` for entry-point plugins.
        self.entry_points: dict[str, str] = {}
        # The policy hooks' callers, made on first use (after every plugin is registered).
        self._check: Callable[..., Refusal | None] | None = None
        self._decide: Callable[..., Refusal | Defer | None] | None = None

    # policy ------------------------------------------------------------------------------------
    def check_channel(self, candidate: Candidate, channel: ChannelInfo, ctx: DecisionContext,
                      campaign: CampaignInfo) -> Refusal | None:
        """The first refusal of ``channel`` for ``candidate``, or None."""
        return self.check_caller()(candidate, channel, ctx, campaign)

    def decide(self, candidate: Candidate, choice: Choice, ctx: DecisionContext,
               campaign: CampaignInfo) -> Refusal | Defer | None:
        """Combine every ``outreach_decide`` answer: any refusal wins, else the latest deferral."""
        return self.decide_caller()(candidate, choice, ctx, campaign)

    def check_caller(self) -> Callable[[Candidate, ChannelInfo, DecisionContext, CampaignInfo],
                                       Refusal | None]:
        """``outreach_check_channel`` as a plain function (the first refusal, or None), for hot
        loops. Made on first use, after every plugin is registered."""
        if self._check is None:
            self._check = _Chain(self, "outreach_check_channel",
                                 ("candidate", "channel", "ctx", "campaign")).first_caller()
        return self._check

    def decide_caller(self) -> Callable[[Candidate, Choice, DecisionContext, CampaignInfo],
                                        Refusal | Defer | None]:
        """``outreach_decide`` as a plain function, for hot loops: any refusal wins, else the
        latest deferral, else None.

        A deferral moves the send, so the built-in time steps (quiet hours) are asked again about
        the new time: a plugin's "not before 23:35" must not put an SMS inside the night. They
        may move it further (to the end of the quiet hours) or refuse it.
        """
        if self._decide is not None:
            return self._decide
        names = ("candidate", "choice", "ctx", "campaign")
        every = _Chain(self, "outreach_decide", names).all_caller()
        builtin = _Chain(self, "outreach_decide", names, only=POLICY_NAMES).all_caller()

        def decide(candidate: Candidate, choice: Choice, ctx: DecisionContext,
                   campaign: CampaignInfo) -> Refusal | Defer | None:
            answers = every(candidate, choice, ctx, campaign)
            if not answers:
                return None
            verdict = _combine(answers)
            for _ in range(_MAX_MOVES):
                if not isinstance(verdict, Defer) or verdict.until <= choice.send_at:
                    return verdict
                choice = Choice(choice.channel, choice.address, verdict.until)
                again = _combine(builtin(candidate, choice, ctx, campaign))
                if again is None:
                    return verdict
                if isinstance(again, Refusal):
                    return again
                verdict = Defer(again.until, f"{verdict.reason}, then {again.reason}")
            return verdict

        self._decide = decide
        return decide

    def where(self, name: str | None) -> str:
        """Plugin ``name`` as its author and its user know it (distribution, entry point)."""
        if name is None:
            return "a plugin"
        dist = self.distributions.get(name)
        return describe_plugin(name, dist[0] if dist else None, self.entry_points.get(name))

    def crashed(self, hook: str, exc: BaseException, name: str | None = None) -> PluginCrashed:
        """The error for a plugin that raised in ``hook``, naming it (found from the traceback
        when not given)."""
        if name is None:
            name = self._culprit(exc)
        return PluginCrashed(f"{self.where(name)} failed in {hook}: {_explain(exc)} "
                             "(set OUTREACH_DEBUG=1 to see where)")

    def _culprit(self, exc: BaseException) -> str | None:
        """The plugin whose hook implementation is the outermost frame of ``exc``'s traceback."""
        codes = {}
        for caller in vars(self.pm.hook).values():
            if isinstance(caller, pluggy.HookCaller):
                for impl in caller.get_hookimpls():
                    code = getattr(impl.function, "__code__", None)
                    if code is not None:
                        codes[code] = impl.plugin_name
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in codes:
                return codes[tb.tb_frame.f_code]
            tb = tb.tb_next
        return None

    def _observe(self, hook: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.pm.hook, hook)(**kwargs)
        except Exception as exc:
            raise self.crashed(hook, exc) from exc

    def template_context(self, customer: Any, campaign: str) -> dict[str, Any]:
        """Every plugin's extra template variables, merged (earlier-registered plugins win)."""
        merged: dict[str, Any] = {}
        for extra in self._observe("outreach_template_context", customer=customer, campaign=campaign):
            if extra:
                merged.update(extra)
        return merged

    @property
    def has_template_context(self) -> bool:
        """Whether any plugin adds template variables (skips the call per candidate when none)."""
        return bool(self.pm.hook.outreach_template_context.get_hookimpls())

    # observers ---------------------------------------------------------------------------------
    def message_sent(self, message: OutgoingMessage, delivery: Delivery) -> None:
        """Tell observers a message went out."""
        self._observe("outreach_message_sent", message=message, delivery=delivery)

    def message_failed(self, message: OutgoingMessage, error: ChannelError, state: str) -> None:
        """Tell observers a message did not go out."""
        self._observe("outreach_message_failed", message=message, error=error, state=state)

    def probe_policies(self, campaigns: Iterable[Any], channels: Mapping[str, Any],
                       now: datetime, tz: Any,
                       settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[Problem]:
        """Ask every plugin's policy hooks about a sample customer, on each campaign's channels,
        so ``validate`` (and ``run``, before anything is planned) refuses an implementation that
        answers with something other than a ``Refusal``, a ``Defer`` or None.

        Only the answer's type is judged: a plugin that raises on a made-up customer is not
        held to it here (a real one in the run would be named then).
        """
        problems: list[Problem] = []
        blamed: set[tuple[str, str]] = set()
        infos = {name: ChannelInfo(name, cfg.cls.address, cfg.consent, cfg.quiet_hours, cfg.plugin)
                 for name, cfg in channels.items()}
        customer = Customer("sample", "Ani", "Petrosyan", email="ani@example.com",
                            phone="+37491234567",
                            consent=frozenset(i.consent for i in infos.values()))
        candidate = Candidate("sample", customer)
        ctx = DecisionContext(now, tz, settings=settings or {})
        for hook, second in (("outreach_check_channel", "channel"), ("outreach_decide", "choice")):
            names = ("candidate", second, "ctx", "campaign")
            impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls()
                     if i.plugin_name not in POLICY_NAMES]
            for impl in impls:
                call = _adapt(impl.function, tuple(impl.argnames), names)
                for campaign in campaigns:
                    about = CampaignInfo(campaign.name, campaign.category, campaign.priority)
                    for ch in campaign.channels:
                        info = infos.get(ch)
                        if info is None or (impl.plugin_name, hook) in blamed:
                            continue
                        address = customer.email if info.address_kind == "email" else customer.phone
                        arg = (info if hook == "outreach_check_channel"
                               else Choice(info, address or "", now))
                        try:
                            res = call(candidate, arg, ctx, about)
                        except Exception:  # noqa: BLE001 - judged on real customers, in the run
                            continue
                        if res is not None and not isinstance(res, _ANSWERS[hook]):
                            blamed.add((impl.plugin_name, hook))
                            expected = " or ".join(t.__name__ for t in _ANSWERS[hook])
                            problems.append(Problem(
                                self.where(impl.plugin_name), "",
                                f"{hook} returned {res!r} for the sample customer; expected "
                                f"{expected} (from outreach) or None"))
        return problems

    # settings ----------------------------------------------------------------------------------
    def resolve_settings(self, table: Any, file: str, root: Path,
                         environ: Mapping[str, str] | None,
                         problems: list[Problem]) -> dict[str, dict[str, Any]]:
        """Validate ``[plugins.NAME]`` tables against what each plugin declared; every plugin that
        declares settings gets its values (defaults filled in) even without a table.

        An unknown key, a wrong type or a table for a plugin that declares no settings is a
        problem naming the file and the key, as for a channel's table.
        """
        out: dict[str, dict[str, Any]] = {}
        if not isinstance(table, dict):
            return out  # "expected a table" is reported with the other top-level tables
        failed = {f.name for f in self.registry.failures}
        for name, given in table.items():
            if name in self.registry.settings or name in failed:
                continue
            having = ", ".join(sorted(self.registry.settings)) or "none"
            problems.append(Problem(file, f"plugins.{name}",
                                    f"no loaded plugin named {name!r} declares settings (plugins "
                                    f"with settings: {having}){self.registry.failure_hint()}"))
        for name, declared in self.registry.settings.items():
            given = table.get(name, {})
            if not isinstance(given, dict):
                problems.append(Problem(file, f"plugins.{name}", "expected a table"))
                continue
            resolved = resolve(declared, given, file=file, prefix=f"plugins.{name}",
                               environ=environ, root=root)
            problems += resolved.problems
            out[name] = resolved.values
        return out

    # introspection -----------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """What ``outreach plugins`` shows: each plugin, its version, hooks, what it adds, the
        settings of each channel type it adds and of its own ``[plugins.NAME]`` table."""
        rows: list[dict[str, Any]] = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist, ver = self.distributions.get(name, ("outreach (built-in)", _core_version()))
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            adds: dict[str, list[str]] = {"channels": [], "rules": [], "sources": []}
            for (kind, thing), origin in self.registry.origin.items():
                if origin == name:
                    adds[kind].append(thing)
            settings = {t: _settings_rows(self.registry.channels[t].settings)
                        for t in sorted(adds["channels"])}
            if name in self.registry.settings:
                settings[f"plugins.{name}"] = _settings_rows(self.registry.settings[name])
            rows.append({"name": name, "distribution": dist, "version": ver,
                         "entry_point": self.entry_points.get(name), "hooks": hooks,
                         **{k: sorted(v) for k, v in adds.items()}, "settings": settings})
        for failure in self.registry.failures:
            rows.append({"name": failure.name, "distribution": failure.distribution,
                         "version": None, "entry_point": failure.entry_point, "hooks": [],
                         "channels": [], "rules": [], "sources": [], "settings": {},
                         "error": failure.error})
        return rows


#: How many times a deferral is re-checked against the built-in time steps (quiet hours end
#: outside quiet hours, so one is enough; the bound only guards against a step that never settles).
_MAX_MOVES = 8


def _settings_rows(declared: Mapping[str, Setting]) -> list[dict[str, Any]]:
    return [{"name": k, "type": s.kind, "required": s.required, "secret": s.secret, "help": s.help}
            for k, s in declared.items()]


def _combine(answers: list) -> Refusal | Defer | None:
    """``outreach_decide`` answers combined: the first refusal, else the latest deferral (the
    first of equals), else None."""
    if not answers:
        return None
    refusal = next((a for a in answers if isinstance(a, Refusal)), None)
    if refusal is not None:
        return refusal
    defers = [a for a in answers if isinstance(a, Defer)]
    return max(defers, key=lambda d: d.until) if defers else None


def _core_version() -> str:
    from outreach import __version__

    return __version__


def _make_register(registry: Registry, kind: str, base: type, plugin_name: str):
    table: dict[str, Any] = getattr(registry, kind)
    attr = "name" if kind == "rules" else "type_name"

    def register(cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{plugin_name} registered {cls!r}, which is not a subclass of "
                            f"{base.__module__}.{base.__name__}")
        name = getattr(cls, attr, "")
        if not name or not isinstance(name, str):
            raise TypeError(f"{plugin_name} registered {cls.__name__} without a {attr}")
        if kind == "channels" and issubclass(cls, Channel) and cls.address not in ("email", "phone"):
            raise TypeError(f"channel {name!r} of {plugin_name}: address must be 'email' or "
                            f"'phone', not {cls.address!r}")
        if name in table and table[name] is not cls:
            other = registry.origin[(kind, name)]
            raise TypeError(f"{kind[:-1]} {name!r} is registered twice: by {other} and by {plugin_name}")
        table[name] = cls
        registry.origin[(kind, name)] = plugin_name

    return register


def _register_things(pm: pluggy.PluginManager, registry: Registry, plugin: Any, name: str) -> None:
    """Ask one plugin to register its channels, rules and sources, with a register bound to it,
    and to declare its settings."""
    for hook, kind, base in (("outreach_register_channels", "channels", Channel),
                             ("outreach_register_rules", "rules", Rule),
                             ("outreach_register_sources", "sources", Source)):
        impl = getattr(plugin, hook, None)
        if impl is not None:
            impl(register=_make_register(registry, kind, base, name))
    declare = getattr(plugin, "outreach_plugin_settings", None)
    if declare is not None:
        declared = declare()
        if not isinstance(declared, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Setting) for k, v in declared.items()):
            raise TypeError("outreach_plugin_settings must return a dict of name -> "
                            f"outreach.Setting, got {declared!r}")
        missing = sorted(k for k, v in declared.items() if not v.help)
        if missing:
            raise TypeError(f"settings without help=: {', '.join(missing)}")
        registry.settings[name] = declared


def _defect(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """Why ``plugin`` would load and silently do nothing, or None: it implements no hook, or it
    has a function named like a hook that is not decorated with ``@hookimpl``."""
    marker = f"{pm.project_name}_impl"
    undecorated = sorted(n for n in dir(plugin) if n.startswith("outreach_")
                         and callable(getattr(plugin, n, None))
                         and not hasattr(getattr(plugin, n), marker))
    if undecorated:
        return (f"{', '.join(undecorated)} {'is' if len(undecorated) == 1 else 'are'} not "
                "decorated with @outreach.hookimpl, so outreach would never call "
                f"{'it' if len(undecorated) == 1 else 'them'}")
    if not pm.get_hookcallers(plugin):
        return ("implements no outreach hook (hooks are functions named outreach_*, decorated with "
                "@outreach.hookimpl; see the hooks reference)")
    return None


def _selected_entry_points() -> Iterable[Any]:
    allowed = os.environ.get("OUTREACH_PLUGINS")
    allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in entry_points(group="outreach"):
        if allow is None or ep.name in allow:
            yield ep


def get_plugins(extra: Iterable[Any] | Mapping[str, Any] = (),
                load_entry_points: bool = True) -> Plugins:
    """Build a fresh plugin manager: built-ins, then installed plugins, then ``extra``.

    Public, for plugin tests: ``get_plugins(extra={"name": my_module})`` loads a plugin module that
    is not installed, under the name its entry point would give it (``extra=[my_module]`` uses
    the module's ``__name__``), beside the installed ones; with
    ``load_entry_points=False`` only the built-ins and ``extra`` load, so a test does not depend
    on what else is installed (``OUTREACH_PLUGINS`` does the same for the ``outreach`` command).
    Pass the result to :meth:`outreach.testing.Project.run`. A fresh manager per call keeps
    tests independent of each other.
    """
    pm = pluggy.PluginManager("outreach")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    dists: dict[str, tuple[str, str]] = {}
    eps: dict[str, str] = {}

    def add(plugin: Any, name: str, dist: tuple[str, str] | None = None,
            ep: str | None = None) -> None:
        dist_name = dist[0] if dist else None
        try:
            _register_things(pm, registry, plugin, name)
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin is reported, the rest go on
            _forget(registry, name)
            registry.failures.append(PluginFailure(name, dist_name, _explain(exc), ep))
            return
        defect = _defect(pm, plugin)
        if defect:
            pm.unregister(plugin)
            _forget(registry, name)
            registry.failures.append(PluginFailure(name, dist_name, defect, ep, fatal=True))
            return
        if dist:
            dists[name] = dist
        if ep:
            eps[name] = ep

    for module in BUILTIN_MODULES + tuple(reversed(POLICY_MODULES)):
        add(importlib.import_module(module), module.rsplit(".", 1)[1])
    if load_entry_points:
        for ep in _selected_entry_points():
            dist = (ep.dist.name, ep.dist.version) if ep.dist else None
            where = f"{ep.name} = {ep.value}"
            if pm.get_plugin(ep.name) is not None:
                registry.failures.append(PluginFailure(ep.name, dist[0] if dist else None,
                                                       "a plugin of that name is already loaded",
                                                       where))
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                registry.failures.append(PluginFailure(ep.name, dist[0] if dist else None,
                                                       _explain(exc), where))
                continue
            add(plugin, ep.name, dist, where)
    named = (extra.items() if isinstance(extra, Mapping) else
             ((getattr(p, "__name__", None) or f"plugin-{i}", p) for i, p in enumerate(extra)))
    for name, plugin in named:
        add(plugin, name)
    while True:  # a misspelt hook is an error naming its plugin, not silence
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            culprit = pm.get_name(exc.plugin) or "?"
            pm.unregister(exc.plugin)
            _forget(registry, culprit)
            registry.settings.pop(culprit, None)
            registry.failures.append(PluginFailure(culprit, dists.pop(culprit, (None,))[0],
                                                   _explain(exc), eps.pop(culprit, None),
                                                   fatal=True))
    plugins = Plugins(pm, registry, dists)
    plugins.entry_points = eps
    return plugins


def _forget(registry: Registry, plugin_name: str) -> None:
    registry.settings.pop(plugin_name, None)
    for (kind, thing), origin in list(registry.origin.items()):
        if origin == plugin_name:
            getattr(registry, kind).pop(thing, None)
            del registry.origin[(kind, thing)]


def _explain(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
