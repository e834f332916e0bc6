"""The plugin host: finds plugins, keeps one broken plugin from breaking the rest, builds registries.

There is no module-level registry. Each :class:`PluginHost` owns a pluggy ``PluginManager`` and the
component registries collected from it, so tests and embedding applications can make as many
independent hosts as they like.

Environment variables (read when the host is created):

``PGMM_DISABLE_PLUGINS``
    Comma-separated entry-point or distribution names not to load (listed as ``disabled``).
``PGMM_LOAD_PLUGINS``
    Comma-separated allow-list; when set, only these load (pgmm-core's own built-ins always load).
``PGMM_TRACE_PLUGINS``
    ``1`` logs every entry-point import and every hook call (the plugins called, with their
    distributions, the time it took and whether it returned or raised) to stderr, through the
    ``pgmm_core.plugins.trace`` logger.

Every hook is called through pluggy's hook caller, so pluggy's order, ``tryfirst``/``trylast`` and
wrappers hold (see :mod:`pgmm_core.hookspecs`). Registration hooks are called one plugin at a time
through ``subset_hook_caller``: a plugin whose hook raises is isolated and every component records
exactly who provided it.

A plugin that fails (its import raises, a registration hook raises, it implements a misspelt hook)
is marked ``failed`` with the error, blocked in pluggy (``set_blocked``) so that no later hook call
reaches it, its components are left out, and a warning naming it and its distribution is logged
once per host; ``python -m pgmm_core plugins`` lists it with the error. A component name claimed by
two plugins is left out for both, with one warning naming both; everything else keeps working.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from pgmm_core import hookspecs
from pgmm_core.errors import PluginError
from pgmm_core.registry import NameClash, Provider, Registrar, Registry, merge_registries

logger = logging.getLogger(__name__)
trace_logger = logging.getLogger(f"{__name__}.trace")

ENTRY_POINT_GROUP = "pgmm"
CORE_DISTRIBUTION = "pgmm-core"

PluginStatus = Literal["loaded", "failed", "disabled"]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _split_names(value: str | None) -> set[str]:
    if value is None:
        return set()
    return {_normalise(part) for part in value.split(",") if part.strip()}


@dataclass
class PluginInfo:
    """What ``python -m pgmm_core plugins`` shows for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    status: PluginStatus
    error: str | None = None
    components: list[str] = field(default_factory=list)
    module: str | None = None
    clashes: list[str] = field(default_factory=list)
    """``kind:name`` of components left out because another plugin claims the same name."""

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": list(self.components),
            "module": self.module,
            "clashes": list(self.clashes),
        }


class PluginHost:
    """Loads the ``pgmm`` entry points and answers "which components exist and who provides them".

    ``load_entry_points=False`` gives an empty host for tests; :meth:`register` adds in-process
    plugins through exactly the same path the entry points take. ``warn_failures=False`` keeps
    failed plugins and name clashes out of the log (for ``plugins``, which lists them anyway).
    """

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        environ: Mapping[str, str] | None = None,
        warn_failures: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None
        self._commands: Any = None
        self._config_model: Any = None
        self._trace = env.get("PGMM_TRACE_PLUGINS", "") not in ("", "0", "false", "no")
        self._disabled = _split_names(env.get("PGMM_DISABLE_PLUGINS"))
        allowed = env.get("PGMM_LOAD_PLUGINS")
        self._allowed = None if allowed is None else _split_names(allowed)
        self._warnings = PluginWarnings(self._infos, self._disabled, self._allowed, warn_failures)
        if self._trace:
            _send_trace_to_stderr()
            tracer = HookTrace(self._infos)
            self._pm.add_hookcall_monitoring(tracer.before, tracer.after)
        if load_entry_points:
            self._load_entry_points()

    # --- loading ---------------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # pgmm-core first, then by name: the order registration hooks are called in.
        ordered = sorted(eps, key=lambda ep: (_dist_name(ep) != CORE_DISTRIBUTION, ep.name))
        for ep in ordered:
            dist = _dist_name(ep)
            version = ep.dist.version if ep.dist is not None else None
            info = PluginInfo(ep.name, dist, version, "loaded", module=ep.value)
            if ep.name in self._infos:
                other = self._infos[ep.name]
                info.status, info.error = "failed", (
                    f"entry point name '{ep.name}' is also used by {other.distribution}"
                )
                self._infos[f"{ep.name}@{dist}"] = info
                continue
            self._infos[ep.name] = info
            if not self._wanted(ep.name, dist):
                info.status = "disabled"
                self._pm.set_blocked(ep.name)
                self._trace_line(f"skip {ep.name} ({dist} {version}): disabled (PGMM_DISABLE/LOAD_PLUGINS)")
                continue
            started = time.perf_counter()
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            finally:
                elapsed = (time.perf_counter() - started) * 1000
                self._trace_line(f"load {ep.name} = {ep.value} ({dist} {version}) {elapsed:.2f} ms")
            self._register_checked(plugin, info)

    def _wanted(self, name: str, dist: str | None) -> bool:
        names = {_normalise(name)} | ({_normalise(dist)} if dist else set())
        if dist == CORE_DISTRIBUTION:
            return not (names & self._disabled)
        if names & self._disabled:
            return False
        return self._allowed is None or bool(names & self._allowed)

    def register(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Register an in-process plugin (a module or object with ``@hookimpl`` functions)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self._infos:
            if self._infos[name].status != "disabled":
                raise PluginError(f"a plugin named '{name}' is already registered")
            self._pm.unblock(name)  # an explicit registration replaces a disabled entry point
        info = PluginInfo(name, distribution, version, "loaded", module=_module_name(plugin))
        self._infos[name] = info
        self._register_checked(plugin, info)
        self._invalidate()
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin registered earlier (the trainer does this for run-scoped callbacks)."""
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)
        elif self._pm.is_blocked(name):  # it failed: free the name for the next run's callback
            self._pm.unblock(name)
        self._infos.pop(name, None)
        self._invalidate()

    def _register_checked(self, plugin: object, info: PluginInfo) -> None:
        unknown = _unknown_hook_names(plugin, self._pm)
        if unknown:
            self._fail(info, "; ".join(unknown))
            return
        try:
            self._pm.register(plugin, name=info.name)
            self._pm.check_pending()  # a hook implementation pluggy knows no spec for
        except Exception as exc:  # pluggy validates hook signatures here
            self._fail(info, f"invalid plugin: {exc}")

    def _fail(self, info: PluginInfo, error: str) -> None:
        """Mark a plugin failed and block it, so no later hook call reaches it."""
        info.status, info.error = "failed", error
        self._pm.set_blocked(info.name)

    def _invalidate(self) -> None:
        self._registries = None
        self._commands = None
        self._config_model = None

    # --- queries ---------------------------------------------------------------------------------

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not, with the components it contributed."""
        self.registries()  # fills PluginInfo.components and registration failures
        return list(self._infos.values())

    def registries(self) -> dict[str, Registry]:
        """Component registries by kind, collected on first use."""
        if self._registries is None:
            self._registries = self._collect()
            self._warnings.emit()
        return self._registries

    def clashes(self) -> list[NameClash]:
        """Component names left out because more than one plugin registers them."""
        return [clash for registry in self.registries().values() for clash in registry.clashes.values()]

    def disabled_distributions(self) -> set[str]:
        """Distributions whose plugins PGMM_DISABLE_PLUGINS / PGMM_LOAD_PLUGINS kept from loading."""
        return {_normalise(i.distribution) for i in self._infos.values() if i.status == "disabled" and i.distribution}

    def failed(self) -> list[PluginInfo]:
        """Plugins that could not be loaded or registered, each with its error."""
        self.registries()
        return [info for info in self._infos.values() if info.status == "failed"]

    def registry(self, kind: str) -> Registry:
        try:
            return self.registries()[kind]
        except KeyError:
            raise PluginError(f"unknown component kind '{kind}'") from None

    def build(self, kind: str, config: Any, **context: Any) -> Any:
        """Build the component named by ``config.type``; its factory gets the context it accepts."""
        return self.registry(kind).get(config.type).build(config, **context)

    def config_model(self) -> Any:
        """The root config model assembled from the registered components (cached per host)."""
        if self._config_model is None:
            from pgmm_core.config.assemble import assemble_config_model

            self._config_model = assemble_config_model(self.registries())
        return self._config_model

    def commands(self) -> Any:
        """Subcommands contributed through ``pgmm_register_commands``."""
        if self._commands is None:
            from pgmm_core.commands import CommandRegistrar, merge_commands

            contributions = []
            for info, plugin in self._loaded_plugins("pgmm_register_commands"):
                registrar = CommandRegistrar(info.provider)
                try:
                    self._call_one(plugin, "pgmm_register_commands", registrar=registrar)
                except Exception as exc:  # its commands are dropped, everyone else's stay
                    self._fail(info, f"pgmm_register_commands raised {type(exc).__name__}: {exc}")
                    continue
                contributions.append(registrar)
            self._commands, notes = merge_commands(contributions)
            self._warnings.note(notes)
            self._warnings.emit()
        return self._commands

    # --- hook calling ------------------------------------------------------------------------------

    def _loaded_plugins(self, *hook_names: str) -> list[tuple[PluginInfo, object]]:
        """Loaded plugins implementing any of ``hook_names``, in registration-hook order."""
        out = []
        for info in list(self._infos.values()):
            plugin = self._pm.get_plugin(info.name) if info.status == "loaded" else None
            if plugin is None:
                continue
            implemented = {caller.name for caller in self._pm.get_hookcallers(plugin) or []}
            if implemented & set(hook_names):
                out.append((info, plugin))
        return out

    def _call_one(self, plugin: object, hook_name: str, **kwargs: Any) -> Any:
        """Call one plugin's implementations of a hook (its own wrappers included) through pluggy."""
        others = [p for p in self._pm.get_plugins() if p is not plugin]
        return self._pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def _trace_line(self, text: str) -> None:
        if self._trace:
            trace_logger.info("%s", text)

    def call_event(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook through pluggy's hook caller, in pluggy's order (see hookspecs).

        An exception is re-raised as :class:`PluginError` naming the plugin whose implementation
        raised and its distribution, because a traceback deep inside someone's callback rarely says
        whose code it was.
        """
        caller = getattr(self._pm.hook, hook_name)
        try:
            caller(**kwargs)
        except Exception as exc:
            impl = raising_impl(caller.get_hookimpls(), exc)
            if impl is None:
                raise PluginError(f"{hook_name} raised {type(exc).__name__}: {exc}") from exc
            info = self._infos.get(impl.plugin_name)
            provider = info.provider if info is not None else Provider(impl.plugin_name)
            raise PluginError(f"{hook_name} in {provider} raised {type(exc).__name__}: {exc}") from exc

    def _collect(self) -> dict[str, Registry]:
        """Run every registration hook, plugin by plugin, and merge the results.

        Each plugin first registers into scratch registries; if any of its hooks raises, the plugin
        is failed and blocked and none of its components are kept. Merging leaves out names claimed
        by more than one plugin and picks each kind's default.
        """
        hooks = hookspecs.REGISTRATION_HOOKS
        contributions: dict[str, list[Registry]] = {kind: [] for kind in hooks}
        for info in self._infos.values():
            info.components, info.clashes = [], []
        for info, plugin in self._loaded_plugins(*hooks.values()):
            implemented = {caller.name for caller in self._pm.get_hookcallers(plugin) or []}
            scratches: list[Registry] = []
            try:
                for kind, hook_name in hooks.items():
                    if hook_name in implemented:
                        scratch = Registry(kind)
                        self._call_one(plugin, hook_name, registrar=Registrar(scratch, info.provider))
                        scratches.append(scratch)
            except Exception as exc:
                self._fail(info, f"{hook_name} raised {type(exc).__name__}: {exc}")
                continue
            for scratch in scratches:
                contributions[scratch.kind].append(scratch)
        merged = {kind: merge_registries(kind, scratches) for kind, scratches in contributions.items()}
        for registry, notes in merged.values():
            self._warnings.note(notes)
            _record_contributions(registry, self._infos)
        return {kind: registry for kind, (registry, _) in merged.items()}

    def close_matches(self, kind: str, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.registry(kind).all_names(), n=3, cutoff=0.6)


class PluginWarnings:
    """The warnings a host logs, each once: failed plugins, name clashes, env lists naming nothing."""

    def __init__(self, infos: Mapping[str, PluginInfo], disabled: set[str], allowed: set[str] | None,
                 warn_failures: bool) -> None:
        self._infos = infos
        self._disabled = disabled
        self._allowed = allowed
        self._warn_failures = warn_failures
        self._warned: set[str] = set()
        self._notes: list[str] = []

    def note(self, messages: Iterable[str]) -> None:
        """Problems found while collecting (name clashes, contested defaults), logged by :meth:`emit`."""
        self._notes.extend(m for m in messages if m not in self._notes)

    def emit(self) -> None:
        known = {_normalise(n) for info in self._infos.values() for n in (info.name, info.distribution or "")}
        lists = (("PGMM_DISABLE_PLUGINS", self._disabled), ("PGMM_LOAD_PLUGINS", self._allowed or set()))
        for variable, names in lists:
            unknown = sorted(names - known - self._warned)
            if unknown and self._infos:
                self._warned.update(unknown)
                logger.warning("pgmm: warning: %s names no installed plugin: %s (installed: %s)%s", variable,
                               ", ".join(unknown), ", ".join(sorted(i.name for i in self._infos.values())),
                               "; only the plugins it names are loaded" if variable == "PGMM_LOAD_PLUGINS" else "")
        if not self._warn_failures:  # `plugins` lists failures and clashes itself
            return
        for key, info in self._infos.items():
            if info.status != "failed" or key in self._warned:
                continue
            self._warned.add(key)
            logger.warning(
                "pgmm: warning: plugin '%s' from %s failed and is skipped: %s "
                "(`python -m pgmm_core plugins` lists every plugin; PGMM_DISABLE_PLUGINS=%s silences this)",
                info.name, _describe_distribution(info), info.error, info.name,
            )
        for note in self._notes:
            if note not in self._warned:
                self._warned.add(note)
                logger.warning("pgmm: warning: %s", note)


def _record_contributions(registry: Registry, infos: Mapping[str, PluginInfo]) -> None:
    """Fill each plugin's ``components`` and ``clashes`` (``kind:name``) from a merged registry."""
    def info_of(provider: Provider) -> PluginInfo:
        return infos.get(provider.plugin) or PluginInfo(provider.plugin, None, None, "loaded")

    for spec in registry:
        info_of(spec.provider).components.append(f"{registry.kind}:{spec.name}")
    for clash in registry.clashes.values():
        for provider in clash.providers:
            entry = f"{registry.kind}:{clash.name}"
            if entry not in info_of(provider).clashes:
                info_of(provider).clashes.append(entry)


class HookTrace:
    """``PGMM_TRACE_PLUGINS``: one line per hook call through pluggy's ``add_hookcall_monitoring``.

    Each line names the hook, the plugins called in the order pluggy calls them (with their
    distributions), the time the call took and its outcome (``returned`` or ``raised ...``).
    """

    def __init__(self, infos: Mapping[str, PluginInfo]) -> None:
        self._infos = infos
        self._started: list[float] = []  # a stack: hook calls can nest

    def before(self, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self._started.append(time.perf_counter())

    def after(self, outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        elapsed = (time.perf_counter() - self._started.pop()) * 1000
        called = ", ".join(self._describe(impl.plugin_name) for impl in reversed(impls)) or "(no plugin)"
        error = outcome.exception
        result = "returned" if error is None else f"raised {type(error).__name__}: {error}"
        trace_logger.info("%s -> %s %.2f ms %s", hook_name, called, elapsed, result)

    def _describe(self, plugin_name: str) -> str:
        info = self._infos.get(plugin_name)
        if info is None or not info.distribution:
            return plugin_name
        return f"{plugin_name} ({info.distribution} {info.version})" if info.version else (
            f"{plugin_name} ({info.distribution})")


def raising_impl(impls: Sequence[Any], exc: BaseException) -> Any:
    """The hook implementation whose code raised ``exc``: the innermost traceback frame that runs an
    implementation's function (for methods, on that implementation's plugin object)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        for impl in impls:
            function = impl.function
            code = getattr(getattr(function, "__func__", function), "__code__", None)
            owner = getattr(function, "__self__", None)
            if code is frame.f_code and (owner is None or frame.f_locals.get("self", owner) is owner):
                found = impl
        tb = tb.tb_next
    return found


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (a redirected or captured one)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def _send_trace_to_stderr() -> None:
    """``PGMM_TRACE_PLUGINS`` asks for the trace on stderr, whatever else logging is set up to do."""
    if not any(isinstance(h, _CurrentStderr) for h in trace_logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("[pgmm trace] %(message)s"))
        trace_logger.addHandler(handler)
    trace_logger.setLevel(logging.INFO)
    trace_logger.propagate = False

def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _describe_distribution(info: PluginInfo) -> str:
    if info.distribution:
        return f"{info.distribution} {info.version}" if info.version else info.distribution
    return "an in-process registration"


def _module_name(plugin: object) -> str | None:
    return getattr(plugin, "__name__", None) or type(plugin).__module__


def _unknown_hook_names(plugin: object, pm: pluggy.PluginManager) -> list[str]:
    """Hook implementations whose names match no spec, with a suggestion (a typo is the usual cause)."""
    known = [name for name in dir(hookspecs) if name.startswith("pgmm_")]
    problems = []
    for attr in _plugin_attrs(plugin):
        fn = getattr(plugin, attr, None)
        if fn is None or pm.parse_hookimpl_opts(plugin, attr) is None:
            continue
        if attr not in known:
            hint = difflib.get_close_matches(attr, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(f"unknown hook '{attr}'{suggestion}")
    return problems


def _plugin_attrs(plugin: object) -> Iterable[str]:
    return [name for name in dir(plugin) if name.startswith("pgmm_")]
