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
    ``1`` prints every entry-point import and every hook call (plugin, distribution, duration) to
    stderr.

A plugin that fails (its import raises, a registration hook raises, it implements a misspelt hook)
is marked ``failed`` with the error, its components are left out, and a warning naming it and its
distribution is logged once per host; ``python -m pgmm_core plugins`` lists it with the error.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from pgmm_core import hookspecs
from pgmm_core.errors import PluginError
from pgmm_core.registry import Provider, Registrar, Registry

logger = logging.getLogger(__name__)

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
        }


class PluginHost:
    """Loads the ``pgmm`` entry points and answers "which components exist and who provides them".

    ``load_entry_points=False`` gives an empty host for tests; :meth:`register` adds in-process
    plugins through exactly the same path the entry points take. ``warn_failures=False`` keeps
    failed plugins out of the log (for ``plugins``, which lists them anyway).
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
        self._warn_failures = warn_failures
        self._warned: set[str] = set()
        self._disabled = _split_names(env.get("PGMM_DISABLE_PLUGINS"))
        allowed = env.get("PGMM_LOAD_PLUGINS")
        self._allowed = None if allowed is None else _split_names(allowed)
        if load_entry_points:
            self._load_entry_points()

    # --- loading ---------------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # Built-ins first so that their names are the "first provider" in duplicate reports.
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
                self._trace_line(f"skip {ep.name} ({dist} {version}): disabled (PGMM_DISABLE/LOAD_PLUGINS)")
                continue
            started = time.perf_counter()
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                info.status, info.error = "failed", f"import failed: {type(exc).__name__}: {exc}"
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
        if name in self._infos and self._infos[name].status != "disabled":
            raise PluginError(f"a plugin named '{name}' is already registered")
        info = PluginInfo(name, distribution, version, "loaded", module=_module_name(plugin))
        self._infos[name] = info
        self._register_checked(plugin, info)
        self._invalidate()
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin registered earlier (the trainer does this for run-scoped callbacks)."""
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)
        self._infos.pop(name, None)
        self._invalidate()

    def _register_checked(self, plugin: object, info: PluginInfo) -> None:
        unknown = _unknown_hook_names(plugin, self._pm)
        if unknown:
            info.status, info.error = "failed", "; ".join(unknown)
            return
        try:
            self._pm.register(plugin, name=info.name)
        except Exception as exc:  # pluggy validates hook signatures here
            info.status, info.error = "failed", f"invalid plugin: {exc}"

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
            self._warn_about_failures()
        return self._registries

    def disabled_distributions(self) -> set[str]:
        """Distributions whose plugins PGMM_DISABLE_PLUGINS / PGMM_LOAD_PLUGINS kept from loading."""
        return {_normalise(i.distribution) for i in self._infos.values() if i.status == "disabled" and i.distribution}

    def failed(self) -> list[PluginInfo]:
        """Plugins that could not be loaded or registered, each with its error."""
        self.registries()
        return [info for info in self._infos.values() if info.status == "failed"]

    def _warn_about_failures(self) -> None:
        known = {_normalise(n) for info in self._infos.values() for n in (info.name, info.distribution or "")}
        for variable, names in (("PGMM_DISABLE_PLUGINS", self._disabled), ("PGMM_LOAD_PLUGINS", self._allowed or set())):
            unknown = sorted(names - known - self._warned)
            if unknown and self._infos:
                self._warned.update(unknown)
                logger.warning("pgmm: warning: %s names no installed plugin: %s (installed: %s)%s", variable,
                               ", ".join(unknown), ", ".join(sorted(i.name for i in self._infos.values())),
                               "; only the plugins it names are loaded" if variable == "PGMM_LOAD_PLUGINS" else "")
        if not self._warn_failures:
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

    def registry(self, kind: str) -> Registry:
        try:
            return self.registries()[kind]
        except KeyError:
            raise PluginError(f"unknown component kind '{kind}'") from None

    def build(self, kind: str, config: Any, **context: Any) -> Any:
        """Build the component named by ``config.type`` with the kind's context arguments."""
        return self.registry(kind).get(config.type).build(config, **context)

    def config_model(self) -> Any:
        """The root config model assembled from the registered components (cached per host)."""
        if self._config_model is None:
            from pgmm_core.config.assemble import assemble_config_model

            self._config_model = assemble_config_model(self)
        return self._config_model

    def commands(self) -> Any:
        """Subcommands contributed through ``pgmm_register_commands``."""
        if self._commands is None:
            from pgmm_core.commands import CommandRegistrar

            registrar = CommandRegistrar()
            for plugin_name, impl in self._impls("pgmm_register_commands"):
                info = self._infos.get(plugin_name)
                registrar.provider = info.provider if info else Provider(plugin_name)
                before = dict(registrar.commands)
                try:
                    self._call_impl(impl, plugin_name, {"registrar": registrar}, "pgmm_register_commands")
                except Exception as exc:  # its commands are dropped, everyone else's stay
                    registrar.commands = before
                    if info is not None:
                        info.status = "failed"
                        info.error = f"pgmm_register_commands raised {type(exc).__name__}: {exc}"
            self._commands = registrar
            self._warn_about_failures()
        return self._commands

    # --- hook calling ------------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[tuple[str, Any]]:
        caller = getattr(self._pm.hook, hook_name)
        impls = list(reversed(caller.get_hookimpls()))  # pluggy lists last-registered first
        return [(impl.plugin_name, impl) for impl in impls if self._status(impl.plugin_name) == "loaded"]

    def _status(self, plugin_name: str) -> str:
        info = self._infos.get(plugin_name)
        return info.status if info is not None else "loaded"

    def _call_impl(self, impl: Any, plugin_name: str, kwargs: dict[str, Any], hook_name: str) -> Any:
        args = [kwargs[arg] for arg in impl.argnames]
        started = time.perf_counter()
        outcome = "ok"
        try:
            return impl.function(*args)
        except BaseException as exc:
            outcome = f"raised {type(exc).__name__}"
            raise
        finally:
            if self._trace:
                info = self._infos.get(plugin_name)
                dist = f" ({info.distribution} {info.version})" if info and info.distribution else ""
                elapsed = (time.perf_counter() - started) * 1000
                self._trace_line(f"{hook_name} -> {plugin_name}{dist} {elapsed:.2f} ms {outcome}")

    def _trace_line(self, text: str) -> None:
        if self._trace:
            print(f"[pgmm trace] {text}", file=sys.stderr, flush=True)

    def call_event(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin in registration order.

        An exception is re-raised as :class:`PluginError` naming the plugin and its distribution,
        because a traceback deep inside someone's callback rarely says whose code it was.
        """
        for plugin_name, impl in self._impls(hook_name):
            try:
                self._call_impl(impl, plugin_name, kwargs, hook_name)
            except Exception as exc:
                provider = self._infos[plugin_name].provider if plugin_name in self._infos else plugin_name
                raise PluginError(
                    f"{hook_name} in {provider} raised {type(exc).__name__}: {exc}"
                ) from exc

    def _collect(self) -> dict[str, Registry]:
        """Run every registration hook, plugin by plugin, and merge the results.

        Each plugin first registers into scratch registries; if any of its hooks raises, the plugin
        is marked ``failed`` and none of its components are kept. Merging then detects duplicates
        across plugins.
        """
        merged = {kind: Registry(kind) for kind in hookspecs.REGISTRATION_HOOKS}
        for info in self._infos.values():
            info.components = []
        per_plugin: dict[str, list[tuple[str, Registry]]] = {}
        for kind, hook_name in hookspecs.REGISTRATION_HOOKS.items():
            for plugin_name, impl in self._impls(hook_name):
                per_plugin.setdefault(plugin_name, [])
                scratch = Registry(kind)
                info = self._infos.get(plugin_name)
                provider = info.provider if info else Provider(plugin_name)
                try:
                    self._call_impl(impl, plugin_name, {"registrar": Registrar(scratch, provider)}, hook_name)
                except Exception as exc:
                    if info is not None:
                        info.status = "failed"
                        info.error = f"{hook_name} raised {type(exc).__name__}: {exc}"
                    per_plugin[plugin_name] = []
                    continue
                if self._status(plugin_name) == "loaded":
                    per_plugin[plugin_name].append((kind, scratch))
        for plugin_name, contributions in per_plugin.items():
            if self._status(plugin_name) != "loaded":
                continue
            for kind, scratch in contributions:
                for spec in scratch:
                    merged[kind].add(spec)
                    if plugin_name in self._infos:
                        self._infos[plugin_name].components.append(f"{kind}:{spec.name}")
        return merged

    def close_matches(self, kind: str, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.registry(kind).all_names(), n=3, cutoff=0.6)


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
