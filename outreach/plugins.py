"""Finding, loading and registering plugins.

Built-in rules, channels, sources and policy steps are registered through the same hooks as third
parties (as pytest does), then every distribution's entry points in the group ``outreach`` are loaded
one by one: a plugin that fails to import is recorded (which one, why) and the rest load, so only the
campaigns that need it fail validation. ``check_pending()`` runs last, so a misspelt hook name is an
error rather than silence.

``OUTREACH_PLUGINS`` (comma-separated entry-point names) restricts which installed plugins load;
``OUTREACH_PLUGINS=""`` loads none but the built-ins.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable

import pluggy

from outreach import hookspecs
from outreach.audience import Source
from outreach.channel import Channel, ChannelError, Delivery, OutgoingMessage
from outreach.decision import Choice, ChannelInfo, DecisionContext, Defer, Refusal
from outreach.rule import Candidate, Rule

#: Built-in plugin modules, registered like any other. The policy steps are listed in the order
#: they answer (pluggy calls the last registered first, so they are registered in reverse).
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


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or registered, and why."""

    name: str
    distribution: str | None
    error: str


@dataclass
class Registry:
    """Everything the plugins registered, with where each came from."""

    channels: dict[str, type[Channel]] = field(default_factory=dict)
    rules: dict[str, type[Rule]] = field(default_factory=dict)
    sources: dict[str, type[Source]] = field(default_factory=dict)
    #: (kind, name) -> name of the plugin that registered it.
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def failure_hint(self) -> str:
        """A sentence naming plugins that failed to load, to add to a 'not registered' error."""
        if not self.failures:
            return ""
        names = ", ".join(f"{f.name} ({f.error})" for f in self.failures)
        return f"; plugins that failed to load: {names}"


class _Chain:
    """One policy hook's implementations, called in pluggy's order without pluggy's generic dispatch.

    ``pluggy`` spends a few microseconds per hook call on bookkeeping; asked twice per candidate,
    that is most of the policy chain's cost at a million customers. When no implementation is a
    wrapper, calling them directly in the order pluggy would (last registered first, tryfirst and
    trylast respected, each with only the arguments it declares) gives exactly pluggy's answers.
    With a wrapper the hook itself is called.
    """

    def __init__(self, hook, argnames: tuple[str, ...]) -> None:
        self.hook = hook
        self.argnames = argnames
        impls = hook.get_hookimpls()
        self.direct = not any(getattr(i, "hookwrapper", False) or getattr(i, "wrapper", False)
                              for i in impls)
        self.calls = []
        for impl in reversed(impls):
            names = tuple(impl.argnames)
            if names == argnames:
                self.calls.append(impl.function)
            else:
                idx = [argnames.index(n) for n in names]
                self.calls.append(lambda *a, _f=impl.function, _i=idx: _f(*[a[i] for i in _i]))

    def first_caller(self) -> Callable[[Any, Any, Any], Any]:
        """:meth:`first` as a plain function of the hook's three arguments, for hot loops.

        The planner asks the policy chain over a million times a run; binding the implementations
        into one closure saves the method lookups and argument packing of each call.
        """
        if not self.direct:
            hook, names = self.hook, self.argnames
            return lambda a, b, c: hook(**dict(zip(names, (a, b, c))))
        calls = tuple(self.calls)

        def first(a: Any, b: Any, c: Any) -> Any:
            for call in calls:
                res = call(a, b, c)
                if res is not None:
                    return res
            return None

        return first

    def all_caller(self) -> Callable[[Any, Any, Any], list]:
        """:meth:`all` as a plain function of the hook's three arguments, for hot loops."""
        if not self.direct:
            hook, names = self.hook, self.argnames
            return lambda a, b, c: hook(**dict(zip(names, (a, b, c))))
        calls = tuple(self.calls)

        def every(a: Any, b: Any, c: Any) -> list:
            out = []
            for call in calls:
                res = call(a, b, c)
                if res is not None:
                    out.append(res)
            return out

        return every

    def first(self, *args):
        """The first non-None answer (a ``firstresult`` hook)."""
        if not self.direct:
            return self.hook(**dict(zip(self.argnames, args)))
        for call in self.calls:
            res = call(*args)
            if res is not None:
                return res
        return None

    def all(self, *args) -> list:
        """Every non-None answer, in call order."""
        if not self.direct:
            return self.hook(**dict(zip(self.argnames, args)))
        out = []
        for call in self.calls:
            res = call(*args)
            if res is not None:
                out.append(res)
        return out


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
        # The policy hooks' callers, made on first use (after every plugin is registered).
        self._check: _Chain | None = None
        self._decide: _Chain | None = None

    # policy ------------------------------------------------------------------------------------
    def check_channel(self, candidate: Candidate, channel: ChannelInfo,
                      ctx: DecisionContext) -> Refusal | None:
        """The first refusal of ``channel`` for ``candidate``, or None."""
        if self._check is None:
            self._check = _Chain(self.pm.hook.outreach_check_channel, ("candidate", "channel", "ctx"))
        return self._check.first(candidate, channel, ctx)

    def decide(self, candidate: Candidate, choice: Choice,
               ctx: DecisionContext) -> Refusal | Defer | None:
        """Combine every ``outreach_decide`` answer: any refusal wins, else the latest deferral."""
        if self._decide is None:
            self._decide = _Chain(self.pm.hook.outreach_decide, ("candidate", "choice", "ctx"))
        return _combine(self._decide.all(candidate, choice, ctx))

    def check_caller(self) -> Callable[[Candidate, ChannelInfo, DecisionContext], Refusal | None]:
        """:meth:`check_channel` as a plain function (same calls, same answers), for hot loops."""
        if self._check is None:
            self._check = _Chain(self.pm.hook.outreach_check_channel, ("candidate", "channel", "ctx"))
        return self._check.first_caller()

    def decide_caller(self) -> Callable[[Candidate, Choice, DecisionContext], Refusal | Defer | None]:
        """:meth:`decide` as a plain function (same calls, same answers), for hot loops."""
        if self._decide is None:
            self._decide = _Chain(self.pm.hook.outreach_decide, ("candidate", "choice", "ctx"))
        every = self._decide.all_caller()

        def decide(candidate: Candidate, choice: Choice, ctx: DecisionContext) -> Refusal | Defer | None:
            answers = every(candidate, choice, ctx)
            return _combine(answers) if answers else None

        return decide

    def template_context(self, customer: Any, campaign: str) -> dict[str, Any]:
        """Every plugin's extra template variables, merged (earlier-registered plugins win)."""
        merged: dict[str, Any] = {}
        for extra in self.pm.hook.outreach_template_context(customer=customer, campaign=campaign):
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
        self.pm.hook.outreach_message_sent(message=message, delivery=delivery)

    def message_failed(self, message: OutgoingMessage, error: ChannelError, state: str) -> None:
        """Tell observers a message did not go out."""
        self.pm.hook.outreach_message_failed(message=message, error=error, state=state)

    # introspection -----------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """What ``outreach plugins`` shows: each plugin, its version, hooks, channels and rules."""
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
            rows.append({"name": name, "distribution": dist, "version": ver, "hooks": hooks,
                         **{k: sorted(v) for k, v in adds.items()}})
        for failure in self.registry.failures:
            rows.append({"name": failure.name, "distribution": failure.distribution,
                         "version": None, "hooks": [], "channels": [], "rules": [], "sources": [],
                         "error": failure.error})
        return rows


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
    """Ask one plugin to register its channels, rules and sources, with a register bound to it."""
    for hook, kind, base in (("outreach_register_channels", "channels", Channel),
                             ("outreach_register_rules", "rules", Rule),
                             ("outreach_register_sources", "sources", Source)):
        impl = getattr(plugin, hook, None)
        if impl is not None:
            impl(register=_make_register(registry, kind, base, name))


def _selected_entry_points() -> Iterable[Any]:
    allowed = os.environ.get("OUTREACH_PLUGINS")
    allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in entry_points(group="outreach"):
        if allow is None or ep.name in allow:
            yield ep


def get_plugins(extra: Iterable[Any] = (), load_entry_points: bool = True) -> Plugins:
    """Build a fresh plugin manager: built-ins, then installed plugins, then ``extra`` (tests).

    A fresh manager per call keeps tests independent of each other.
    """
    pm = pluggy.PluginManager("outreach")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    dists: dict[str, tuple[str, str]] = {}

    def add(plugin: Any, name: str, dist: tuple[str, str] | None = None) -> None:
        try:
            _register_things(pm, registry, plugin, name)
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin is reported, the rest go on
            _forget(registry, name)
            registry.failures.append(PluginFailure(name, dist[0] if dist else None, _explain(exc)))
            return
        if dist:
            dists[name] = dist

    for module in BUILTIN_MODULES + tuple(reversed(POLICY_MODULES)):
        add(importlib.import_module(module), module.rsplit(".", 1)[1])
    if load_entry_points:
        for ep in _selected_entry_points():
            dist = (ep.dist.name, ep.dist.version) if ep.dist else None
            if pm.get_plugin(ep.name) is not None:
                registry.failures.append(PluginFailure(ep.name, dist[0] if dist else None,
                                                       "a plugin of that name is already loaded"))
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                registry.failures.append(PluginFailure(ep.name, dist[0] if dist else None,
                                                       _explain(exc)))
                continue
            add(plugin, ep.name, dist)
    for i, plugin in enumerate(extra):
        add(plugin, getattr(plugin, "__name__", None) or f"plugin-{i}")
    while True:  # a misspelt hook is an error naming its plugin, not silence
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            culprit = pm.get_name(exc.plugin) or "?"
            pm.unregister(exc.plugin)
            _forget(registry, culprit)
            registry.failures.append(PluginFailure(culprit, dists.pop(culprit, (None,))[0],
                                                   _explain(exc)))
    return Plugins(pm, registry, dists)


def _forget(registry: Registry, plugin_name: str) -> None:
    for (kind, thing), origin in list(registry.origin.items()):
        if origin == plugin_name:
            getattr(registry, kind).pop(thing, None)
            del registry.origin[(kind, thing)]


def _explain(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
