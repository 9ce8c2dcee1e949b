"""Finding, loading and selecting backends: pluggy plugins under the ``topgrad`` entry point group.

Entry points are imported one at a time, so a plugin that fails to import costs a
warning naming it, never the other backends. Backends load lazily: listing them imports
only the (cheap) plugin modules, and a backend's heavy imports run when it is selected.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import pkgutil
import sys
import threading
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from typing import Any

import pluggy

from topgrad import hookspecs
from topgrad.backend import Backend, BackendSpec
from topgrad.errors import (
    BackendConflictError,
    BackendNotFoundError,
    BackendUnavailableError,
    qualified_name,
)
from topgrad.optable import OpTable, merge, own_ops, strays
from topgrad.warning_location import warn

ENTRY_POINT_GROUP = "topgrad"
_IN_PROCESS = "register_backend()"

_manager: pluggy.PluginManager | None = None
_in_process: dict[str, BackendSpec] = {}
_loaded: dict[str, Backend] = {}
_current: Backend | None = None
_selected: str | None = None  # set_backend's choice: kept (and reloaded) when a plugin is added
_skipped: dict[str, str] = {}  # installed plugins that could not be used, and why
_offered_none: dict[str, str] = {}  # plugins whose topgrad_backends answered nothing (None, []): the answer
_entries: dict[str, Any] = {}  # plugin name -> the entry point it came from
_load_errors: dict[str, BaseException] = {}  # plugin name -> what its entry point's load raised
_array_types: dict[int, tuple[Backend, type]] = {}  # id(backend) -> (backend, its arrays' type)
_lock = threading.RLock()  # the state above changes under it: threads' first uses may coincide


def _new_lock_after_fork() -> None:
    """A forked child has only the forking thread: a lock another thread held at the fork would
    stay held for ever there, so the child starts with a new one."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


# ---- discovery ----------------------------------------------------------------------
def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with every installed entry point of group ``topgrad`` registered."""
    if _manager is None:
        with _lock:  # one thread builds it; the others wait, then take it
            if _manager is None:
                _build_manager()
    assert _manager is not None
    return _manager


def _build_manager() -> None:
    """Register every installed entry point of group ``topgrad`` in a new plugin manager."""
    global _manager
    manager = pluggy.PluginManager("topgrad")
    manager.add_hookspecs(hookspecs)
    _entries.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        name = _plugin_name(ep)
        if name is None:
            continue
        _entries[name] = ep
        plugin = None
        heavy_before = HEAVY_MODULES & sys.modules.keys()
        try:
            plugin = ep.load()
            manager.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not break the others
            hook, why = _wrong_arguments(plugin) or (None, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in HEAVY_MODULES:
                why += f" ({_CHEAP})"  # torch missing where it needs none: it imported it too early
            _skipped[name], _load_errors[name] = why, exc
            warn(f"topgrad: plugin {name!r} ({ep.value}) failed to load and is skipped: {why}"
                 f"{_entry_point_advice(ep, exc)}", hook, exc, plugin)
            continue
        heavy = sorted((HEAVY_MODULES & sys.modules.keys()) - heavy_before)
        if heavy:
            warn(f"topgrad: plugin {name!r} ({ep.value}) imports {' and '.join(heavy)} when it is found, so "
                 "every topgrad program pays for that import, whichever backend it uses: "
                 f"{_CHEAP}", plugin)
        _warn_unused_hooks(plugin, name)
        _warn_no_hooks(manager, plugin, f"{name!r} ({ep.value})", "its entry point should name", plugin)
    _manager = manager


def _entry_point_advice(ep: Any, exc: BaseException) -> str:
    """What to do about entry point `ep`, whose load raised `exc`: fix its line in the package's
    pyproject.toml (and reinstall) where the module or attribute it names does not exist; install
    the module its plugin module imports where that is what is missing; else nothing."""
    module, _, attribute = str(ep.value).partition(":")
    module, attribute = module.strip(), attribute.strip()
    dist = _dist_name(ep)
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    package = f"the pyproject.toml of {dist}" if dist else "its package's pyproject.toml"
    fix = (f"fix the line {ep.name} = \"{ep.value}\" under [project.entry-points.{ENTRY_POINT_GROUP}] in "
           f"{package}, then {_REINSTALL.format(dist or 'the package')}")
    if missing and (module == missing or module.startswith(f"{missing}.")):
        return f". Its entry point names the module {module!r}, which does not exist: {fix}"
    found = sys.modules.get(module)
    if isinstance(exc, AttributeError) and attribute and found is not None \
            and not hasattr(found, attribute.split(".")[0]):
        return f". Its entry point names {attribute!r}, which the module {module!r} does not have: {fix}"
    if missing and missing.split(".")[0] not in HEAVY_MODULES:  # those get _CHEAP's advice
        provider = f"reinstall {dist}, which should have installed it as a dependency" if dist else \
            "reinstall the plugin's package"
        return (f". Its plugin module {module!r} imports the module {missing!r}, which is not installed: "
                f"install the package that provides it (often: pip install {missing.split('.')[0]}), or "
                f"{provider}")
    return ""


_REINSTALL = ("reinstall {} (pip install from its folder again, with -e for an editable install: entry "
              "points are read only when a package is installed)")


def _dist_name(ep: Any) -> str | None:
    """The name of the installed distribution entry point `ep` comes from, if it says."""
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.name)


HEAVY_MODULES = frozenset({"torch", "triton", "jax", "tensorflow", "cupy"})
"""Modules whose import takes seconds: a plugin module must not import them (the contract)."""

_CHEAP = ("a plugin module must be cheap to import: import heavy packages inside the backend's load "
          "target, which runs only when the backend is selected")


def _plugin_name(ep: Any) -> str | None:
    """The name entry point `ep` registers its plugin under: its own, or, where an entry point of
    another package took that name first, the name with its package's after it (both plugins
    stay, so two offering one backend are a conflict, not one silently lost); None for the same
    entry point listed twice (one package found on two path entries)."""
    if any(seen.value == ep.value for seen in _entries.values()):
        return None
    if ep.name not in _entries:
        return ep.name
    dist = getattr(ep, "dist", None)
    return f"{ep.name} ({dist.name if dist is not None else ep.value})"


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object in-process (a module or object with `topgrad.hookimpl` functions).
    Loaded backends are rebuilt with it on next use; the backend you selected stays selected."""
    with _lock:
        manager = plugin_manager()
        if manager.is_registered(plugin) or (name is not None and manager.has_plugin(name)):
            taken = manager.get_name(plugin) if manager.is_registered(plugin) else name
            raise ValueError(f"a plugin is already registered as {taken!r}: register each plugin once, "
                             "under a name of its own")
        _forget_loaded()
        try:
            registered = manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            why = _wrong_arguments(plugin)
            raise TypeError(f"plugin {name or plugin!r}: {why[1] if why else exc}") from exc
        if registered is None:  # pluggy refuses a name blocked with registry.plugin_manager().set_blocked
            raise ValueError(f"the plugin name {name!r} is blocked; register the plugin under another name")
        _entries.pop(registered, None)  # an entry point's name that failed to load: not its distribution's
        _warn_unused_hooks(plugin, registered)
        _warn_no_hooks(manager, plugin, repr(registered), "register", None)  # at the caller's line
        return registered


_HOOKS = frozenset(n for n in dir(hookspecs) if n.startswith("topgrad_"))


def _wrong_arguments(plugin: object) -> tuple[Any, str] | None:
    """Why pluggy refused `plugin`, where one of its hooks takes an argument the hook does not give
    (`topgrad_ops(backend_name)`): pluggy's own message names neither the right one nor the fix.
    With that hook function, for the warning to point at its `def`."""
    for hook in sorted(_HOOKS):
        function = getattr(plugin, hook, None)
        if not callable(function) or not hasattr(function, "topgrad_impl"):
            continue
        try:
            taken = [n for n in inspect.signature(function).parameters if n != "self"]
        except (TypeError, ValueError):
            continue
        given = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        unknown = [n for n in taken if n not in given]
        if unknown:
            return function, (f"its {hook}({', '.join(taken)}) asks for {', '.join(map(repr, unknown))}, "
                              f"which the hook does not give: name its arguments as in {hook}("
                              f"{', '.join(given)}) (topgrad.hookspecs)")
    return None


def _warn_no_hooks(
    manager: pluggy.PluginManager, plugin: object, named: str, fix: str, where: object
) -> None:
    """Warn where `plugin` implements no topgrad hook (a package given for its plugin module), and
    record it, so that looking up the backend it was meant to offer names it, not an install line."""
    if any(caller.name in _HOOKS for caller in manager.get_hookcallers(plugin) or ()):
        return
    name = manager.get_name(plugin)
    if name is not None:
        _skipped[name] = _NO_HOOK
    warn(f"topgrad: plugin {named} implements no topgrad hook, so it offers nothing: {fix} a module "
         "(or object) with @topgrad.hookimpl functions such as topgrad_backends (a package's plugin "
         "module, e.g. 'topgrad_mybackend.plugin')", where)


_NO_HOOK = "it implements no topgrad hook"


def _no_hook_fix(name: str) -> str:
    """What to do about plugin `name`, which implements no hook (its entry point, or register_plugin,
    given a package for its plugin module): name the module that defines the hooks instead."""
    plugin = plugin_manager().get_plugin(name)
    unused = [a for a in dir(plugin) if a.startswith("topgrad_") and callable(getattr(plugin, a, None))]
    if unused:  # it is the plugin module, with its hooks misspelt or unmarked (_warn_unused_hooks says which)
        verb = "is" if len(unused) == 1 else "are"
        return (f". Its {', '.join(unused)} {verb} never called: a hook is named as in topgrad.hookspecs "
                f"({', '.join(sorted(_HOOKS))}) and marked @topgrad.hookimpl")
    meant = _plugin_module_of(plugin)
    ep = _entries.get(name)
    if ep is None:
        example = meant or "e.g. 'topgrad_mybackend.plugin'"
        return f". Register the module (or object) that defines its @topgrad.hookimpl functions ({example})"
    dist = _dist_name(ep)
    package = f"the pyproject.toml of {dist}" if dist else "its package's pyproject.toml"
    module = meant or (f"{ep.value}.plugin" if getattr(plugin, "__path__", None) else "your_package.plugin")
    line = f"{'' if meant else 'e.g. '}{ep.name} = \"{module}\""
    return (f". Its entry point names {ep.value!r}, which defines no @topgrad.hookimpl function: name the "
            f"module that does, {line} under [project.entry-points.{ENTRY_POINT_GROUP}] in {package}, then "
            f"{_REINSTALL.format(dist or 'the package')}")


def _plugin_module_of(plugin: object) -> str | None:
    """`package.plugin` where `plugin` is a package with a `plugin` module (the guide's layout), found
    without importing it; else None."""
    path = getattr(plugin, "__path__", None) if inspect.ismodule(plugin) else None
    if not path or not any(found.name == "plugin" for found in pkgutil.iter_modules(path)):
        return None
    return f"{getattr(plugin, '__name__', '')}.plugin"


def _warn_unused_hooks(plugin: object, name: str) -> None:
    """Warn about functions that look like topgrad hooks but will never be called: a misspelled
    hook name, or a hook without `@topgrad.hookimpl` (pluggy ignores both silently)."""
    for attr in dir(plugin):
        if not attr.startswith("topgrad_") or not callable(getattr(plugin, attr, None)):
            continue
        near = difflib.get_close_matches(attr, sorted(_HOOKS), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        why = (f"is not a topgrad hook ({hint}the hooks: {', '.join(sorted(_HOOKS))})" if attr not in _HOOKS
               else "lacks @topgrad.hookimpl" if not hasattr(getattr(plugin, attr), "topgrad_impl") else "")
        if why:
            warn(f"topgrad: plugin {name!r}: {attr} {why}, so it is never called", getattr(plugin, attr))


def register_backend(spec: BackendSpec, replace: bool = False) -> None:
    """Offer a backend in-process, without packaging (tests, notebooks)."""
    global _current
    with _lock:
        if not isinstance(spec, BackendSpec):
            raise TypeError(f"register_backend takes a topgrad.BackendSpec, got {type(spec).__name__}")
        offers = _offers()
        if not replace and spec.name in offers:
            owners = ", ".join(owner for owner, _ in offers[spec.name])
            raise BackendConflictError(
                f"backend {spec.name!r} is already offered by {owners}; pass replace=True to replace it"
            )
        _in_process[spec.name] = spec
        _loaded.pop(spec.name, None)
        if _current is not None and _current.name == spec.name:
            _current = None  # the selection stays; the next use loads the replacement


def _offers() -> dict[str, list[tuple[str, BackendSpec]]]:
    """Every backend name with the plugins (by name) that offer it."""
    manager = plugin_manager()
    offers: dict[str, list[tuple[str, BackendSpec]]] = {}
    _offered_none.clear()  # as of this lookup
    for impl in reversed(manager.hook.topgrad_backends.get_hookimpls()):
        try:
            answer = _call(impl)
            specs = _backend_specs(answer)
        except Exception as exc:
            _skipped[impl.plugin_name] = f"topgrad_backends() failed: {type(exc).__name__}: {exc}"
            warn(f"topgrad: plugin {impl.plugin_name!r} failed in topgrad_backends() and is skipped: "
                 f"{type(exc).__name__}: {exc}", exc, impl.function)
            continue
        if not specs:  # allowed (a plugin may offer a backend only where it can run), or a missing return
            _offered_none[impl.plugin_name] = repr(answer)
        for spec in specs:
            offers.setdefault(spec.name, []).append((impl.plugin_name, spec))
    for name, spec in _in_process.items():
        offers[name] = [(_IN_PROCESS, spec)]  # an explicit in-process registration wins
    return offers


_NUMBERS = {2: "two", 3: "three", 4: "four"}
_NO_RETURN = "is its `return` missing? It returns a list, [topgrad.BackendSpec(name, load)]"
_EMPTY_LIST = "an empty list: it offers its backend only where it can run, or the list is empty by mistake"


def _call(impl: Any, **arguments: Any) -> Any:
    """Call a hook implementation with the arguments it asks for (pluggy lets it take fewer)."""
    return impl.function(*[arguments[name] for name in impl.argnames])


def _backend_specs(answer: Any) -> list[BackendSpec]:
    """A `topgrad_backends` answer as a list of specs; a TypeError saying what is wrong otherwise."""
    if isinstance(answer, BackendSpec):
        raise TypeError("it returned one BackendSpec; return a list of them: [BackendSpec(...)]")
    specs = list(answer or [])
    odd = [s for s in specs if not isinstance(s, BackendSpec)]
    if odd:
        raise TypeError(f"it returned {odd[0]!r} in its list, not a topgrad.BackendSpec")
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"its list names backend {twice[0]!r} twice; give each BackendSpec its own name")
    return specs


def available_backends() -> dict[str, BackendSpec]:
    """The installed backends by name, without loading (or importing) any of them."""
    return {name: found[0][1] for name, found in _offers().items()}


# ---- loading and selection -----------------------------------------------------------
def load_backend(name: str) -> Backend:
    """The loaded backend `name` (cached), with plugin ops merged into its table; not selected."""
    if not isinstance(name, str):
        raise TypeError(f"a backend is chosen by its name (a str, e.g. 'numpy'), got {type(name).__name__}")
    if name in _loaded:
        return _loaded[name]
    with _lock:  # two threads' first uses make one backend object
        return _loaded[name] if name in _loaded else _load(name)


def _load(name: str) -> Backend:
    """Load backend `name` (under the registry's lock): its plugin's spec, instantiated, with the
    plugins' ops merged into its table."""
    offers = _offers()
    if name not in offers and name in _skipped:  # installed, but its plugin could not load: unusable
        ep = _entries.get(name)
        dist = _dist_name(ep)
        how = ("registered by hand" if ep is None else  # register_plugin, or an entry point
               f"installed{f' from {dist}' if dist else ''}")
        error = _load_errors.get(name)
        advice = "" if ep is None or error is None else _entry_point_advice(ep, error)
        if _skipped[name] == _NO_HOOK:
            advice = _no_hook_fix(name)
        raise BackendUnavailableError(f"backend {name!r} cannot load: plugin {name!r}, {how}, was "
                                      f"skipped: {_skipped[name]}{advice}") from error
    if name not in offers:
        _refuse_if_its_package_failed_to_load(name)
        near = [n for n in offers if n.lower() == name.lower()]  # a name in another case, or a typo
        near = near or difflib.get_close_matches(name, list(offers), n=1)
        installed = "" if near else _installed_without_entry_point(f"topgrad-{name}", name)
        hint = f"Did you mean {near[0]!r}?" if near else installed or f"To get it: pip install topgrad-{name}"
        folder = None if near or installed else _package_folder(f"topgrad-{name}")
        if folder:
            hint += f" (from the package folder here: pip install {folder})"  # in a clone of Topgrad
        hints = [hint]
        listed = {} if near else _unexplained_skips(installed)
        if listed:  # a plugin that failed may be the one meant
            skipped = "Plugins were skipped (see the warnings): " + "; ".join(
                f"{plugin!r}: {why}{_no_hook_fix(plugin) if why == _NO_HOOK else ''}"
                for plugin, why in listed.items())
            # one named like the backend is the one meant, and installing anything would not help
            hints = [skipped] if any(_alike(name, plugin) for plugin in listed) else [*hints, skipped]
        if _offered_none and (not near or name in _offered_none):  # the classic: a hook without `return`
            hints += [f"Plugin {plugin!r} offers no backend: its topgrad_backends() returned {answer} "
                      f"({_NO_RETURN if answer == 'None' else _EMPTY_LIST})"
                      for plugin, answer in _offered_none.items()]
            hints = [h for h in hints if not h.endswith(_CHECK_THE_NAME)] or hints
        joined = ". ".join(h.rstrip(".") for h in hints)
        raise BackendNotFoundError(f"no backend named {name!r}; installed: {_describe(offers)}. {joined}")
    if len(offers[name]) > 1:
        raise BackendConflictError(_conflict(name, [owner for owner, _ in offers[name]]))
    owner, spec = offers[name][0]
    backend = _instantiate(spec, owner)
    backend.name = name  # the name users select it by, whatever its class says (error messages use it)
    own = backend.ops
    backend.ops = _merged_ops(name, backend)
    if not backend.ops.names():  # every op would fail: say so once, at load, not at the first op
        raise BackendUnavailableError(_no_ops(name, owner, own))
    _loaded[name] = backend
    return backend


def _unexplained_skips(said: str) -> dict[str, str]:
    """The skipped plugins and why, less those whose fix `said` (the hint about topgrad-NAME) gives."""
    return {plugin: why for plugin, why in _skipped.items()
            if not (why == _NO_HOOK and _no_hook_fix(plugin) in said)}


def _refuse_if_its_package_failed_to_load(name: str) -> None:
    """BackendUnavailableError where topgrad-NAME is installed but every plugin of its entry points
    failed to import (an entry point named otherwise than the backend): its topgrad_backends never
    ran, so the backend is installed and unusable here, not unknown; the error carries the cause."""
    dist_name = f"topgrad-{name}"
    found = _its_plugins(dist_name)
    plugins = found[2] if found else []
    if not plugins or not all(plugin in _load_errors for plugin in plugins):
        return  # no plugin of it, or one loaded: that one's answer is what counts
    plugin = plugins[0]
    ep, error = _entries[plugin], _load_errors[plugin]
    raise BackendUnavailableError(
        f"backend {name!r} cannot load: {dist_name} is installed, but its plugin {plugin!r} ({ep.value}) "
        f"failed to load, so it could not say which backends it offers: {_skipped[plugin]}"
        f"{_entry_point_advice(ep, error)}") from error


def _no_ops(name: str, owner: str, ops: Any) -> str:
    """Why backend `name` cannot load: its `ops` (and the plugins' topgrad_ops) give no op at all."""
    held = strays(ops)
    what = ("None" if ops is None else
            f"a {type(ops).__name__} holding no topgrad.Op subclass"
            + (f" ({'; '.join(f'{k}: {v}' for k, v in sorted(held.items()))})" if held else ""))
    return (f"backend {name!r} (from plugin {owner!r}) provides no ops: its `ops` is {what}, and no plugin "
            "adds any, so every op would fail. Set `ops` on its Backend class to a module, namespace or dict "
            "of topgrad.Op subclasses, Add, Mul, Sum, ... (docs/writing-a-backend.md, section 3)")


def _alike(backend: str, plugin: str) -> bool:
    """Whether plugin `plugin` is named like backend `backend` ('mine' and 'mine-plugin', 'topgrad_mine')."""
    a, b = backend.lower(), plugin.lower()
    return a in b or b in a or bool(difflib.get_close_matches(a, [b], n=1))


def _conflict(name: str, owners: list[str]) -> str:
    """Why backend `name` cannot load: several plugins offer it. Each is named with its distribution
    (two packages may call their entry points alike, so a plugin name alone can be ambiguous), and
    the message says what to uninstall (or stop registering) to keep one."""
    order = list(_entries)
    owners = sorted(owners, key=lambda owner: order.index(owner) if owner in order else len(order))
    *others, last = [_plugin_origin(owner) for owner in owners]
    dists = [_distribution(owner) for owner in owners]
    shared = sorted({d for d in dists if d is not None and dists.count(d) > 1})
    ways = list(dict.fromkeys(_removal(o) for o, d in zip(owners, dists) if d is None or d not in shared))
    if not shared:
        advice = (f"keep one of them: {', or '.join(ways)}" if len(ways) == 2
                  else f"keep one of them, removing the others: {'; '.join(ways)}")
    else:  # uninstalling that distribution would remove every offer it makes
        advice = (f"{' and '.join(shared)} offers it through more than one entry point, which its authors "
                  "must fix (or register_backend(spec, replace=True) picks one in-process)")
        if ways:
            advice += f"; {' and '.join(ways)} would remove the other{'s' if len(ways) > 1 else ''}"
    return (f"backend {name!r} is offered by {_NUMBERS.get(len(owners), len(owners))} plugins, "
            f"{', '.join(others)} and {last}; {advice}")


def _plugin_origin(owner: str) -> str:
    """Plugin `owner` as the user knows it: its entry-point name and the distribution it comes
    from (`'toy' (distribution toy-a 1.0)`), or that it was registered in-process."""
    ep = _entries.get(owner)
    if ep is None:
        return f"{owner!r} (registered in-process with register_plugin)"
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"{ep.name!r} (entry point {ep.value})"
    version = getattr(dist, "version", None)
    return f"{ep.name!r} (distribution {dist.name}{f' {version}' if version else ''})"


def _removal(owner: str) -> str:
    """How to stop plugin `owner` from offering its backends: uninstall its distribution, or stop
    registering it in-process."""
    ep = _entries.get(owner)
    if ep is None:
        return f"stop registering {owner!r} with register_plugin"
    dist = _distribution(owner)
    return f"pip uninstall {dist}" if dist else f"uninstall the package that provides {ep.value}"


_CHECK_THE_NAME = "check the name its topgrad_backends hook gives its BackendSpec"
"""The hint where a plugin is installed under the backend's name yet offers another name; dropped
where that plugin's hook returned nothing, which says more."""


def _installed_without_entry_point(dist_name: str, name: str) -> str:
    """When the distribution `dist_name` is installed yet offers no backend `name`, why (its plugin
    names the backend otherwise, sits in another entry-point group, or there is none), since
    "pip install" it would change nothing; else an empty string."""
    installed = _its_plugins(dist_name)
    if installed is None:
        return ""
    dist, ours, names = installed
    groups = sorted({ep.group for ep in dist.entry_points if "topgrad" in ep.group.lower()}
                    - {ENTRY_POINT_GROUP})
    if ours:
        found = f"{dist_name} is installed and registers {', '.join(repr(ep.name) for ep in ours)} in the " \
                f"{ENTRY_POINT_GROUP!r} entry-point group, but offers no backend named {name!r}"
        manager = plugin_manager()
        plugins = [p for p in map(manager.get_plugin, names) if p is not None]  # those that loaded
        hookless = [n for n in names if _skipped.get(n) == _NO_HOOK]
        if hookless and len(hookless) == len(plugins):  # a package named for its plugin module, say
            plugin = hookless[0]
            return f"{found}: its plugin {plugin!r} implements no topgrad hook{_no_hook_fix(plugin)}"
        if plugins and not any(hasattr(p, "topgrad_backends") for p in plugins):
            return (f"{found}: it offers no backend at all, only ops for other backends (topgrad_ops); "
                    "select the backend it adds ops to")
        return f"{found}: {_CHECK_THE_NAME}"
    if not groups:  # not a plugin at all (topgrad-examples), or one that declares nothing
        return (f"{dist_name} is installed, but registers no plugin in the {ENTRY_POINT_GROUP!r} "
                "entry-point group: it is not a backend package, or its pyproject.toml had no "
                f"[project.entry-points.{ENTRY_POINT_GROUP}] when it was installed: add that section, then "
                f"{_REINSTALL.format(dist_name)}")
    return (f"{dist_name} is installed, but its entry points are in {', '.join(map(repr, groups))}; "
            f"Topgrad finds plugins in the {ENTRY_POINT_GROUP!r} entry-point group: "
            f"[project.entry-points.{ENTRY_POINT_GROUP}] in its pyproject.toml, then reinstall it")


def _its_plugins(dist_name: str) -> tuple[Any, list[Any], list[str]] | None:
    """The installed distribution `dist_name`, its entry points in the topgrad group and the names of
    the plugins they made (loaded or skipped); None where it is not installed."""
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        return None
    ours = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    values = {getattr(ep, "value", None) for ep in ours}
    return dist, ours, [plugin for plugin, ep in _entries.items() if ep.value in values]


def _package_folder(package: str) -> str | None:
    """`./package` or `../package` (relative to here) where this folder or one above it holds
    that package's source (a clone of Topgrad), else None."""
    here = os.getcwd()
    folder = here
    while True:
        if os.path.isfile(os.path.join(folder, package, "pyproject.toml")):
            path = os.path.relpath(os.path.join(folder, package), here)
            return path if path.startswith("..") else f"./{path}"
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _instantiate(spec: BackendSpec, owner: str) -> Backend:
    """The Backend object `spec` loads for plugin `owner`; BackendUnavailableError with the cause and
    what to fix where its load target does not import, lacks its attribute or raises."""
    target: Any = spec.load
    module_name, _, attribute = target.partition(":") if isinstance(target, str) else ("", "", "")
    try:
        if isinstance(target, str):
            module = importlib.import_module(module_name)
            if not hasattr(module, attribute):
                raise BackendUnavailableError(_missing_attribute(spec, owner, module_name, attribute))
            target = getattr(module, attribute)
        if not isinstance(target, Backend) and not callable(target):
            raise BackendUnavailableError(_not_a_backend(spec, owner, target))
        backend = target if isinstance(target, Backend) else target()
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend {spec.name!r} (from plugin {owner!r}) is installed but failed to load: "
            f"{type(exc).__name__}: {exc}. {_load_advice(exc, module_name, owner)}"
        ) from exc
    if not isinstance(backend, Backend):
        raise BackendUnavailableError(_not_a_backend(spec, owner, target, backend, called=True))
    return backend


def _not_a_backend(spec: BackendSpec, owner: str, target: Any, made: Any = None, called: bool = False) -> str:
    """Why backend `spec` cannot load: its load target `target` (or, `called`, what calling it made:
    `made`) is no topgrad.Backend; and what a load target may be."""
    named = repr(spec.load) if isinstance(spec.load, str) else getattr(target, "__qualname__", repr(target))
    if not called:
        why = f"its load target {named} is {_kind(target)}, which is neither a topgrad.Backend nor callable"
    elif made is None:
        why = f"its load target {named} returned None (is a `return` missing?)"
    elif isinstance(target, type) and isinstance(made, target):  # the base class forgotten: the likeliest
        return (f"backend {spec.name!r} (from plugin {owner!r}) cannot load: its load target, the class "
                f"{target.__name__}, does not derive from topgrad.Backend; write class "
                f"{target.__name__}(topgrad.Backend)")
    else:
        why = f"its load target {named} returned {_kind(made)}, not a topgrad.Backend"
    return (f"backend {spec.name!r} (from plugin {owner!r}) cannot load: {why}. A load target is a subclass "
            "of topgrad.Backend (class MyBackend(topgrad.Backend)), an instance of one, or a function "
            "returning one")


def _kind(value: Any) -> str:
    """What `value` is, in a few words: 'the module ops', 'a dict'."""
    return f"the module {value.__name__}" if inspect.ismodule(value) else f"a {type(value).__name__}"


def _missing_attribute(spec: BackendSpec, owner: str, module_name: str, attribute: str) -> str:
    """Why backend `spec` cannot load: its load string names an attribute its module lacks; the
    message quotes the load string and names the plugin and distribution whose hook gives it."""
    dist = _distribution(owner)
    made_in = f"plugin {owner!r}" + (f" (distribution {dist})" if dist else "")
    return (f"backend {spec.name!r} (from {made_in}) is installed but failed to load: its BackendSpec's load "
            f"string {spec.load!r} names {attribute!r}, which the module {module_name!r} does not have: fix "
            f"the load string in the topgrad_backends hook of {made_in} (\"module:attribute\", the attribute "
            "a Backend subclass, an instance or a function returning one)")


def _load_advice(exc: Exception, module_name: str, owner: str) -> str:
    """What to do about a load that raised: fix the load string when its own module is missing,
    reinstall the distribution when something it imports is, else look at the backend's code."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing and module_name and (module_name == missing or module_name.startswith(f"{missing}.")):
        dist = _distribution(owner)
        hook = f" (the topgrad_backends hook of plugin {owner!r}{f', distribution {dist}' if dist else ''})"
        return (f"Its load target names the module {module_name!r}, which does not exist: check the "
                f"spelling in its BackendSpec{hook if owner != _IN_PROCESS else ''}, and that its package "
                "is installed.")
    if isinstance(exc, (ImportError, OSError)) and owner != _IN_PROCESS:
        dist = _distribution(owner)
        if missing:  # a module the backend imports: its package, not the backend's, is what is missing
            provider = f"{dist}, which should have installed it as a dependency" if dist else "the backend"
            return (f"It imports the module {missing!r}, which is not installed: install the package that "
                    f"provides it (often: pip install {missing.split('.')[0]}), or reinstall {provider}.")
        return f"Reinstall it with: pip install --force-reinstall {dist}" if dist else "Reinstall it."
    return "The error is in the backend's own code or its load target."


def _distribution(plugin: str) -> str | None:
    """The installed distribution whose `topgrad` entry point made the plugin `plugin`, if any."""
    return _dist_name(_entries.get(plugin))


def _merged_ops(name: str, backend: Backend) -> OpTable:
    """The backend's own ops plus what plugins give through `topgrad_ops` (`topgrad.optable`)."""
    own = own_ops(backend.ops)
    given, hooks = [], {}
    for impl in reversed(plugin_manager().hook.topgrad_ops.get_hookimpls()):
        try:
            answer = _call(impl, backend=name)
        except Exception as exc:  # a broken plugin must not break the backend
            warn(f"topgrad: plugin {impl.plugin_name!r} failed in topgrad_ops({name!r}) and its ops are "
                 f"skipped: {type(exc).__name__}: {exc}", exc, impl.function)
            continue
        if answer is not None:
            given.append((impl.plugin_name, answer))
            hooks[impl.plugin_name] = impl.function  # a warning about its answer points there
    return merge(name, own, given, strays(backend.ops), _op_clash, hooks)


def _op_clash(first: str, second: str) -> str:
    """Two plugins that claim one op, in the order they were found, each with its distribution,
    and how to keep one (an entry point's name need not be the package's)."""
    order = list(_entries)
    one, two = sorted((first, second), key=lambda owner: order.index(owner) if owner in order else len(order))
    return (f"{_plugin_origin(one)} and {_plugin_origin(two)}; keep one of them: {_removal(one)}, "
            f"or {_removal(two)}")


def set_backend(name: str) -> Backend:
    """Select the backend that new Tensors and ops use; returns it."""
    global _current, _selected
    with _lock:
        _current = load_backend(name)
        _selected = name
        return _current


def get_backend() -> Backend:
    """The selected backend; on first use, `$TOPGRAD_BACKEND`, else numpy, else the only one."""
    if _current is not None:
        return _current
    with _lock:  # threads' first uses at once: one chooses, the others take its choice
        if _current is not None:
            return _current
        name = _selected or _default_name()
        try:
            return set_backend(name)
        except BackendNotFoundError as exc:
            if name != os.environ.get("TOPGRAD_BACKEND"):
                raise
            raise BackendNotFoundError(f"{exc} (the name is $TOPGRAD_BACKEND's)") from None


def owner_of(array: Any) -> Backend | None:
    """The loaded backend, other than the current one, whose arrays `array` is of (by the type
    of its `zeros`), or None: what a Tensor made before `set_backend` switched holds."""
    current = get_backend()
    if isinstance(array, _array_type(current)):
        return None
    for backend in list(_loaded.values()):
        if backend is not current and isinstance(array, _array_type(backend)):
            return backend
    return None


def refuse_foreign_tensors(what: str, operands: Iterable[tuple[str, Any]], exc: Exception,
                           tensor_type: type[Any]) -> None:
    """After `what` (an op's forward, backward) failed: a TypeError naming the operand if a Tensor
    (of `tensor_type`) holds the arrays of another backend (made before `set_backend` switched), the
    likeliest cause of an obscure numpy or torch error there. Asked only on failure."""
    for name, a in operands:
        owner = owner_of(a.data) if isinstance(a, tensor_type) else None
        if owner is not None:
            raise TypeError(
                f"{what}: {name} belongs to backend {owner.name!r} (it holds a "
                f"{qualified_name(type(a.data))}), but the current backend is "
                f"{get_backend().name!r}: a Tensor keeps the arrays of the backend it was "
                "made under; make it again after set_backend"
            ) from exc


def backend_of(array: Any) -> Backend:
    """The backend `array` belongs to: the loaded one whose arrays it is of, else the current one
    (a Tensor made before `set_backend` switched still reads and steps through its own)."""
    return owner_of(array) or get_backend()


def _array_type(backend: Backend) -> type:
    """The type of `backend`'s arrays, asked once per backend; NoneType where its `zeros` fails
    (asked on an error path, which must not fail anew)."""
    known = _array_types.get(id(backend))
    if known is not None and known[0] is backend:
        return known[1]
    try:
        kind = type(backend.zeros((0,)))
    except Exception:
        return type(None)
    _array_types[id(backend)] = (backend, kind)
    return kind


def array_type_failure(backend: Backend) -> str:
    """Why `backend`'s zeros((0,)) fails (Topgrad learns the type of its arrays from it), for the
    error where that type was needed; empty where it does not fail."""
    try:
        made = backend.zeros((0,))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if made is not None else "no error: it returned None (is a `return` missing in zeros or full?)"


def _default_name() -> str:
    requested = os.environ.get("TOPGRAD_BACKEND")
    if requested:
        return requested
    offers = _offers()
    if "numpy" in offers:
        return "numpy"
    if len(offers) == 1:
        return next(iter(offers))
    if not offers:
        raise BackendNotFoundError(
            "no topgrad backend is installed; install one, for example: pip install topgrad-numpy"
        )
    raise BackendNotFoundError(
        f"several backends are installed ({_describe(offers)}) and none is numpy: choose one with "
        "topgrad.set_backend(NAME) or the environment variable TOPGRAD_BACKEND"
    )


def _describe(offers: dict[str, list[tuple[str, BackendSpec]]]) -> str:
    return ", ".join(sorted(offers)) or "none"


def _forget_loaded() -> None:
    global _current
    _loaded.clear()
    _array_types.clear()
    _current = None


def reset() -> None:
    """Forget every plugin, registration, loaded backend and selection (for tests)."""
    global _manager, _selected
    with _lock:
        _forget_loaded()
        _selected = None
        _in_process.clear()
        _skipped.clear()
        _load_errors.clear()
        _offered_none.clear()
        _entries.clear()
        _manager = None
