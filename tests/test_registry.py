"""The plugin registry: discovery, lazy loading, selection, op tables and the errors users see.

Every test runs on a blank registry fed by synthetic entry points (`FakeEntryPoint`,
monkeypatched into `topgrad.registry.entry_points`) and in-process registrations; the
registry's previous state (the backend under test included) is put back afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import topgrad
from topgrad import (
    Backend,
    BackendConflictError,
    BackendNotFoundError,
    BackendSpec,
    BackendUnavailableError,
    Op,
    OpConflictError,
    Tensor,
    hookimpl,
    registry,
)


# ---- synthetic plugins -------------------------------------------------------------------------
class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: `load()` returns `target` or raises `error`."""

    group = "topgrad"
    dist: Any = None  # the installed distribution; set where a test needs its name

    def __init__(self, name: str, target: object = None, error: BaseException | None = None) -> None:
        self.name, self.target, self.error = name, target, error
        self.value = f"fake_{name}.plugin"

    def load(self) -> object:
        if self.error is not None:
            raise self.error
        return self.target


class BackendsPlugin:
    """A plugin offering the given backends."""

    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    @hookimpl
    def topgrad_backends(self) -> list[BackendSpec]:
        return list(self.specs)


class OpsPlugin:
    """A plugin giving `ops` to the backend named `target`."""

    def __init__(self, target: str, ops: dict[str, Any]) -> None:
        self.target, self.ops = target, ops

    @hookimpl
    def topgrad_ops(self, backend: str) -> dict[str, Any] | None:
        return self.ops if backend == self.target else None


class FailingPlugin:
    """A plugin whose hooks raise when called."""

    @hookimpl
    def topgrad_backends(self) -> list[BackendSpec]:
        raise RuntimeError("topgrad_backends exploded")

    @hookimpl
    def topgrad_ops(self, backend: str) -> dict[str, Any] | None:
        raise RuntimeError("topgrad_ops exploded")


class FakeAdd(Op):
    pass


class FakeMul(Op):
    pass


class OtherAdd(Op):
    pass


class Square(Op):
    pass


class FakeBackend(Backend):
    pass


def make_backend(name: str, made_by: str = "") -> FakeBackend:
    b = FakeBackend()
    b.name, b.made_by = name, made_by
    b.ops = SimpleNamespace(Add=FakeAdd, Mul=FakeMul)
    return b


class CountingLoader:
    """A `BackendSpec.load` callable that counts how often it runs."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def __call__(self) -> FakeBackend:
        self.calls += 1
        return make_backend(self.name)


def spec(name: str, load: str | Callable[[], Backend] | None = None) -> BackendSpec:
    return BackendSpec(name, load if load is not None else CountingLoader(name))


# ---- isolation ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _selected_backend() -> Iterator[None]:
    """Overrides conftest's: registry tests never need the backend under test."""
    yield


@pytest.fixture(autouse=True)
def blank_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty registry with no installed entry points and no TOPGRAD_BACKEND; restored after."""
    saved = (registry._manager, dict(registry._in_process), dict(registry._loaded), registry._current)
    registry.reset()
    monkeypatch.setattr(registry, "entry_points", lambda group=None: [])
    monkeypatch.delenv("TOPGRAD_BACKEND", raising=False)
    try:
        yield
    finally:
        registry.reset()
        manager, in_process, loaded, current = saved
        registry._manager, registry._current = manager, current
        registry._in_process.update(in_process)
        registry._loaded.update(loaded)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`install(ep, ...)`: these fake entry points are what the registry finds installed."""

    def _install(*eps: FakeEntryPoint) -> None:
        def entry_points(group: str | None = None) -> list[FakeEntryPoint]:
            assert group == "topgrad", f"entry points looked up in group {group!r}"
            return list(eps)

        monkeypatch.setattr(registry, "entry_points", entry_points)
        registry.reset()

    return _install


def plugin(name: str, *specs: BackendSpec) -> FakeEntryPoint:
    return FakeEntryPoint(name, BackendsPlugin(*specs))


# ---- discovery and lazy loading ---------------------------------------------------------------
def test_available_backends_lists_without_loading(install: Callable[..., None]) -> None:
    alpha, beta = spec("alpha"), spec("beta")
    install(plugin("plug-a", alpha), plugin("plug-b", beta))
    found = topgrad.available_backends()
    assert set(found) == {"alpha", "beta"}
    assert found["alpha"] is alpha
    assert alpha.load.calls == beta.load.calls == 0


def test_backend_loads_once_and_is_cached(install: Callable[..., None]) -> None:
    alpha = spec("alpha")
    install(plugin("plug-a", alpha, spec("beta")))
    first = topgrad.load_backend("alpha")
    assert first is topgrad.load_backend("alpha") is topgrad.set_backend("alpha") is topgrad.get_backend()
    assert first.name == "alpha" and alpha.load.calls == 1


def test_load_backend_does_not_select(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")))
    topgrad.set_backend("alpha")
    beta = topgrad.load_backend("beta")
    assert beta.name == "beta"
    assert topgrad.get_backend().name == "alpha"


@pytest.mark.parametrize("attribute", ["backend", "make_backend"])
def test_string_load_imports_the_module_only_when_selected(
    install: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attribute: str
) -> None:
    """`load="module:attribute"`: an instance or a zero-argument factory, imported lazily."""
    module = f"topgrad_fake_backend_{attribute}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from types import SimpleNamespace

            from topgrad import Backend, Op

            class Stringy(Backend):
                name = "stringy"
                ops = SimpleNamespace(Add=type("Add", (Op,), {}))

            backend = Stringy()

            def make_backend():
                return Stringy()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    install(plugin("plug", BackendSpec("stringy", f"{module}:{attribute}")))
    assert "stringy" in topgrad.available_backends()
    assert module not in sys.modules
    loaded = topgrad.load_backend("stringy")
    assert module in sys.modules
    assert type(loaded).__name__ == "Stringy"
    monkeypatch.delitem(sys.modules, module)


def test_register_backend_in_process() -> None:
    topgrad.register_backend(spec("local"))
    assert "local" in topgrad.available_backends()
    assert topgrad.set_backend("local").name == "local"


def test_register_backend_conflicts_with_an_installed_name(install: Callable[..., None]) -> None:
    install(plugin("plug-a", spec("alpha")))
    with pytest.raises(BackendConflictError, match="plug-a"):
        topgrad.register_backend(spec("alpha"))
    replacement = spec("alpha", lambda: make_backend("alpha", made_by="replacement"))
    topgrad.register_backend(replacement, replace=True)
    assert topgrad.load_backend("alpha").made_by == "replacement"


def test_a_backend_goes_by_the_name_of_its_spec(install: Callable[..., None]) -> None:
    """A class whose `name` was copied from another backend (or left empty) still reports the
    name users select it by, in its repr and in every error message."""
    copied, bare = spec("mine", lambda: make_backend("float64")), spec("bare", lambda: make_backend(""))
    install(plugin("plug", copied, bare))
    assert topgrad.load_backend("mine").name == "mine"
    assert repr(topgrad.load_backend("bare")) == "<topgrad backend 'bare'>"


# ---- errors: missing, broken, unavailable, duplicated ------------------------------------------
@pytest.mark.parametrize("call", [topgrad.load_backend, topgrad.set_backend])
def test_missing_backend(install: Callable[..., None], call: Callable[[str], Backend]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")))
    with pytest.raises(BackendNotFoundError) as info:
        call("gamma")
    message = str(info.value)
    assert isinstance(info.value, LookupError)
    assert "'gamma'" in message and "alpha" in message and "beta" in message
    assert "pip install topgrad-gamma" in message


def _distributions(monkeypatch: pytest.MonkeyPatch, dists: dict[str, SimpleNamespace]) -> None:
    """These fake distributions are what importlib.metadata finds installed (by name), and no other."""

    def distribution(name: str) -> SimpleNamespace:
        if name not in dists:
            raise registry.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(registry, "distribution", distribution)


def test_selecting_a_plugin_that_only_adds_ops_says_so(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """set_backend('softplus'), the name of a plugin that adds ops to other backends, was told to
    check the name its topgrad_backends hook gives, a hook that plugin does not have."""
    ops_only = _ops_plugin("softplus", "alpha", {"Square": Square})
    install(plugin("plug", spec("alpha")), ops_only)
    ours = SimpleNamespace(group="topgrad", name="softplus", value=ops_only.value)
    _distributions(monkeypatch, {"topgrad-softplus": SimpleNamespace(entry_points=[ours])})
    with pytest.raises(BackendNotFoundError, match=re.escape(
            "topgrad-softplus is installed and registers 'softplus' in the 'topgrad' entry-point group, but "
            "offers no backend named 'softplus': it offers no backend at all, only ops for other backends "
            "(topgrad_ops); select the backend it adds ops to")):
        topgrad.set_backend("softplus")


def test_an_unrelated_skipped_plugin_keeps_the_install_line(install: Callable[..., None]) -> None:
    """A broken plugin 'torchy' replaced set_backend('cuda')'s "pip install topgrad-cuda" with its
    own failure alone; both are said now, the install line first."""
    broken = FakeEntryPoint("torchy", error=ImportError("No module named 'torch'"))
    install(broken, plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match="torchy"), pytest.raises(BackendNotFoundError, match=re.escape(
            "To get it: pip install topgrad-cuda. Plugins were skipped (see the warnings): 'torchy': "
            "ImportError: No module named 'torch'")):
        topgrad.set_backend("cuda")


def test_a_missing_dependency_of_a_backend_names_the_module(install: Callable[..., None]) -> None:
    """A backend whose own import fails for a module it needs was told to force-reinstall itself,
    which would not bring that module (and would replace an author's editable install)."""
    missing = ModuleNotFoundError("No module named 'cupy'", name="cupy")
    entry = plugin("plug", spec("gpu", _raise(missing)))
    entry.dist = SimpleNamespace(name="acme-topgrad-gpu")
    install(entry)
    with pytest.raises(BackendUnavailableError, match=re.escape(
            "It imports the module 'cupy', which is not installed: install the package that provides it "
            "(often: pip install cupy), or reinstall acme-topgrad-gpu, which should have installed it")):
        topgrad.load_backend("gpu")


def test_an_installed_package_whose_entry_point_is_elsewhere_is_named(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin package registered under another entry-point group was told to `pip install`
    itself; the message now says it is installed and where Topgrad looks."""
    install(plugin("plug", spec("alpha")))
    entry = SimpleNamespace(group="topgrad.backends", name="gamma")
    ours = SimpleNamespace(group="topgrad", name="eps_plugin")
    _distributions(monkeypatch, {"topgrad-gamma": SimpleNamespace(entry_points=[entry]),
                                 "topgrad-delta": SimpleNamespace(entry_points=[]),
                                 "topgrad-eps": SimpleNamespace(entry_points=[ours])})
    with pytest.raises(BackendNotFoundError) as info:
        topgrad.load_backend("gamma")
    assert str(info.value).endswith(
        "topgrad-gamma is installed, but its entry points are in 'topgrad.backends'; Topgrad finds "
        "plugins in the 'topgrad' entry-point group: [project.entry-points.topgrad] in its "
        "pyproject.toml, then reinstall it"), str(info.value)
    with pytest.raises(BackendNotFoundError, match=r"topgrad-delta is installed, but registers no plugin in "
                       r"the 'topgrad' entry-point group: it is not a backend package, or its"):
        topgrad.load_backend("delta")
    with pytest.raises(BackendNotFoundError, match="registers 'eps_plugin' in the 'topgrad' entry-point "
                       "group, but offers no backend named 'eps'"):
        topgrad.load_backend("eps")
    with pytest.raises(BackendNotFoundError, match=r"To get it: pip install topgrad-zeta$"):
        topgrad.load_backend("zeta")


def test_a_package_installed_before_its_entry_point_was_added_is_told_to_reinstall(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry points are read at install time: a package installed (even editable) before its
    pyproject.toml gained [project.entry-points.topgrad] was told only that it lacks the section."""
    install(plugin("plug", spec("alpha")))
    _distributions(monkeypatch, {"topgrad-late": SimpleNamespace(entry_points=[])})
    with pytest.raises(BackendNotFoundError) as info:
        topgrad.load_backend("late")
    assert str(info.value).endswith(
        "its pyproject.toml had no [project.entry-points.topgrad] when it was installed: add that section, "
        "then reinstall topgrad-late (pip install from its folder again, with -e for an editable install: "
        "entry points are read only when a package is installed)"), str(info.value)


def test_in_a_clone_the_install_line_also_names_the_package_folder(
    install: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a clone of Topgrad (not yet on PyPI), `pip install topgrad-triton` would look on PyPI:
    where ./topgrad-NAME is a package folder, the message gives the local install too."""
    install(plugin("plug", spec("alpha")))
    (tmp_path / "topgrad-gamma").mkdir()
    (tmp_path / "topgrad-gamma" / "pyproject.toml").write_text("[project]\nname = 'topgrad-gamma'\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendNotFoundError, match=r"pip install topgrad-gamma \(from the package folder "
                       r"here: pip install \./topgrad-gamma\)"):
        topgrad.load_backend("gamma")
    with pytest.raises(BackendNotFoundError) as info:
        topgrad.load_backend("delta")  # no such folder: the PyPI line alone
    assert str(info.value).endswith("To get it: pip install topgrad-delta")
    (tmp_path / "topgrad-examples").mkdir()
    monkeypatch.chdir(tmp_path / "topgrad-examples")  # a package folder of the clone
    with pytest.raises(BackendNotFoundError, match=r"pip install \.\./topgrad-gamma\)"):
        topgrad.load_backend("gamma")


def test_broken_plugin_warns_and_the_others_work(install: Callable[..., None]) -> None:
    install(
        FakeEntryPoint("broken-plugin", error=ImportError("No module named 'missing_dependency'")),
        plugin("good", spec("alpha")),
    )
    with pytest.warns(RuntimeWarning, match="broken-plugin") as record:
        found = topgrad.available_backends()
    assert "missing_dependency" in str(record[0].message)
    assert record[0].filename == __file__, "the warning should point at the caller's line, not registry.py"
    assert set(found) == {"alpha"}
    assert topgrad.set_backend("alpha").name == "alpha"


def _entry_of(package: str, name: str, target: object, value: str = "", version: str | None = None
              ) -> FakeEntryPoint:
    entry = FakeEntryPoint(name, target)
    entry.dist = SimpleNamespace(name=package, version=version)
    entry.value = value or f"{package.replace('-', '_')}.plugin"
    return entry


def test_two_packages_with_one_entry_point_name_both_count(install: Callable[..., None]) -> None:
    """Two packages naming their entry points alike: the second was skipped without a word, so its
    backend vanished, and two offering one backend name gave no BackendConflictError."""
    install(_entry_of("topgrad-toy", "toy", BackendsPlugin(spec("toy"))),
            _entry_of("topgrad-toy2", "toy", BackendsPlugin(spec("toy2"))))
    assert set(topgrad.available_backends()) == {"toy", "toy2"}
    assert topgrad.set_backend("toy2").name == "toy2"

    install(_entry_of("topgrad-toy", "toy", BackendsPlugin(spec("toy"))),
            _entry_of("topgrad-toy-fork", "toy", BackendsPlugin(spec("toy"))))
    with pytest.raises(BackendConflictError, match=r"two plugins, .*'toy' \(distribution topgrad-toy-fork\)"):
        topgrad.set_backend("toy")


def test_a_conflict_names_the_distribution_of_each_plugin(install: Callable[..., None]) -> None:
    """Both entry points named 'toy': the message read "'toy (toy-b)' and 'toy'", so the first
    plugin's distribution, the one to uninstall perhaps, went unnamed."""
    install(_entry_of("toy-a", "toy", BackendsPlugin(spec("toy")), version="1.0"),
            _entry_of("toy-b", "toy", BackendsPlugin(spec("toy")), version="2.0"))
    with pytest.raises(BackendConflictError) as info:
        topgrad.set_backend("toy")
    assert str(info.value) == (
        "backend 'toy' is offered by two plugins, 'toy' (distribution toy-a 1.0) and 'toy' (distribution "
        "toy-b 2.0); keep one of them: pip uninstall toy-a, or pip uninstall toy-b")


def test_a_conflict_within_one_distribution_does_not_advise_uninstalling_it(
    install: Callable[..., None],
) -> None:
    """Two entry points of one distribution offered a backend: the advice, "pip uninstall toy-suite",
    would have removed both offers."""
    install(_entry_of("toy-suite", "toy_cpu", BackendsPlugin(spec("toy")), "toy_suite.cpu", "1.0"),
            _entry_of("toy-suite", "toy_gpu", BackendsPlugin(spec("toy")), "toy_suite.gpu", "1.0"))
    with pytest.raises(BackendConflictError) as info:
        topgrad.set_backend("toy")
    assert "uninstall" not in str(info.value), info.value
    assert str(info.value).endswith(
        "toy-suite offers it through more than one entry point, which its authors must fix (or "
        "register_backend(spec, replace=True) picks one in-process)"), info.value
    install(_entry_of("toy-suite", "toy_cpu", BackendsPlugin(spec("toy")), "toy_suite.cpu", "1.0"),
            _entry_of("toy-suite", "toy_gpu", BackendsPlugin(spec("toy")), "toy_suite.gpu", "1.0"),
            _entry_of("toy-other", "toy", BackendsPlugin(spec("toy")), "toy_other.plugin", "2.0"))
    with pytest.raises(BackendConflictError) as info:  # a third distribution may still be uninstalled
        topgrad.set_backend("toy")
    assert str(info.value).endswith("in-process); pip uninstall toy-other would remove the other"), info.value


def test_a_conflict_with_an_in_process_plugin_says_to_stop_registering_it(
    install: Callable[..., None],
) -> None:
    """The in-process plugin takes the name of an entry point that failed to load: it is not that
    entry point's distribution, which must not be named (nor uninstalled) for it."""
    broken = _entry_of("broken-dist", "notebook", None)
    broken.error = ImportError("No module named 'gone'")
    install(_entry_of("toy-a", "toy", BackendsPlugin(spec("toy")), version="1.0"), broken)
    with pytest.warns(RuntimeWarning, match="'notebook'"):
        topgrad.register_plugin(BackendsPlugin(spec("toy")), name="notebook")
    with pytest.raises(BackendConflictError) as info:
        topgrad.set_backend("toy")
    assert str(info.value) == (
        "backend 'toy' is offered by two plugins, 'toy' (distribution toy-a 1.0) and 'notebook' (registered "
        "in-process with register_plugin); keep one of them: pip uninstall toy-a, or stop registering "
        "'notebook' with register_plugin")


def test_one_entry_point_listed_twice_is_one_plugin(install: Callable[..., None]) -> None:
    """One package seen on two path entries lists its entry point twice: no conflict with itself."""
    install(_entry_of("topgrad-toy", "toy", BackendsPlugin(spec("toy"))),
            _entry_of("topgrad-toy", "toy", BackendsPlugin(spec("toy"))))
    assert topgrad.set_backend("toy").name == "toy"
    install(_entry_of("topgrad-toy", "toy", BackendsPlugin(spec("toy"))),  # the second package twice
            _entry_of("topgrad-toy2", "toy", BackendsPlugin(spec("toy2"))),
            _entry_of("topgrad-toy2", "toy", BackendsPlugin(spec("toy2"))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "failed to load and is skipped" for the repeat
        assert set(topgrad.available_backends()) == {"toy", "toy2"}
    assert not registry._skipped


def test_a_broken_plugin_of_the_name_asked_is_named_over_a_near_name(install: Callable[..., None]) -> None:
    """'toy' failed to import and 'toy2' works: set_backend('toy') said "Did you mean 'toy2'?". An
    installed plugin that cannot load is unavailable here (the contract), not unknown."""
    install(FakeEntryPoint("toy", error=ImportError("No module named 'toy_dependency'")),
            plugin("toy2", spec("toy2")))
    with pytest.warns(RuntimeWarning, match="toy_dependency"), pytest.raises(
            BackendUnavailableError,
            match=r"^backend 'toy' cannot load: plugin 'toy', installed, was skipped: ImportError: No module "
                  r"named 'toy_dependency'$"):
        topgrad.set_backend("toy")
    with pytest.warns(RuntimeWarning, match="implements no topgrad hook"):
        topgrad.register_plugin(SimpleNamespace(), name="nohooks")  # not installed: no "installed"
    with pytest.raises(BackendUnavailableError, match=r"^backend 'nohooks' cannot load: plugin 'nohooks', "
                       r"registered by hand, was skipped: it implements no topgrad hook. Register the module "
                       r"\(or object\) that defines its @topgrad.hookimpl functions"):
        topgrad.set_backend("nohooks")
    install(FakeEntryPoint("torchy", error=ModuleNotFoundError("No module named 'torch'", name="torch")))
    with pytest.warns(RuntimeWarning, match=r"No module named 'torch' \(a plugin module must be cheap to "
                      r"import: import heavy packages inside the backend's load target"):
        topgrad.available_backends()


def test_a_backend_whose_package_failed_to_load_under_another_entry_point_name_is_unavailable(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """set_backend('zeta'), topgrad-zeta's entry point being `zplug` and its plugin module failing to
    import, said to "check the name its topgrad_backends hook gives its BackendSpec", a hook that
    never ran. An installed plugin whose import failed is unavailable, with the cause (CONTRACT 2)."""
    error = ModuleNotFoundError("No module named 'missing_dep_abc'", name="missing_dep_abc")
    entry = _entry_of("topgrad-zeta", "zplug", None, value="zeta_impl.plugin")
    entry.error = error
    install(entry, plugin("good", spec("alpha")))
    ours = SimpleNamespace(group="topgrad", name="zplug", value="zeta_impl.plugin")
    _distributions(monkeypatch, {"topgrad-zeta": SimpleNamespace(entry_points=[ours])})
    with pytest.warns(RuntimeWarning, match="missing_dep_abc"), \
            pytest.raises(BackendUnavailableError) as info:
        topgrad.set_backend("zeta")
    assert info.value.__cause__ is error
    message = str(info.value)
    assert message.startswith(
        "backend 'zeta' cannot load: topgrad-zeta is installed, but its plugin 'zplug' (zeta_impl.plugin) "
        "failed to load, so it could not say which backends it offers: ModuleNotFoundError: No module named "
        "'missing_dep_abc'. Its plugin module 'zeta_impl.plugin' imports the module 'missing_dep_abc'"
    ), message
    assert "check the name" not in message
    assert topgrad.set_backend("alpha").name == "alpha"


def test_a_plugin_module_that_imports_a_heavy_package_is_warned_about(install: Callable[..., None]) -> None:
    """A plugin module importing torch at module level made every `import topgrad` take seconds,
    numpy-only programs too, with nothing pointing at the plugin (the contract: cheap to import)."""

    class Importing(FakeEntryPoint):
        def load(self) -> object:
            sys.modules.setdefault("cupy", ModuleType("cupy"))  # as `import cupy` would
            return super().load()

    install(Importing("gpu-plugin", BackendsPlugin(spec("gpu"))))
    sys.modules.pop("cupy", None)
    try:
        with pytest.warns(RuntimeWarning, match=r"plugin 'gpu-plugin' \(fake_gpu-plugin.plugin\) imports "
                          r"cupy when it is found, so every topgrad program pays for that import"):
            assert "gpu" in topgrad.available_backends()
    finally:
        sys.modules.pop("cupy", None)


class OpsByTheWrongName:
    """topgrad_ops(backend_name): pluggy refuses the plugin, as the hook gives `backend`."""

    @hookimpl
    def topgrad_ops(self, backend_name: str) -> None:
        return None


def test_a_hook_asking_for_an_argument_it_is_not_given_is_named_with_the_right_one(
    install: Callable[..., None],
) -> None:
    """pluggy's PluginValidationError ("Argument(s) {'backend_name'} are declared in the hookimpl
    but can not be found in the hookspec") was the whole message, installed or in-process."""
    install(FakeEntryPoint("renamed", OpsByTheWrongName()), plugin("good", spec("alpha")))
    says = (r"its topgrad_ops\(backend_name\) asks for 'backend_name', which the hook does not give: name "
            r"its arguments as in topgrad_ops\(backend\)")
    with pytest.warns(RuntimeWarning, match=rf"plugin 'renamed' .*failed to load and is skipped: {says}"):
        assert set(topgrad.available_backends()) == {"alpha"}
    with pytest.raises(TypeError, match=rf"plugin 'in-process': {says}"):
        topgrad.register_plugin(OpsByTheWrongName(), name="in-process")


def test_plugin_failing_in_topgrad_backends_warns(install: Callable[..., None]) -> None:
    install(FakeEntryPoint("exploding", FailingPlugin()), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match="exploding"):
        found = topgrad.available_backends()
    assert set(found) == {"alpha"}


def test_plugin_failing_in_topgrad_ops_warns_and_the_backend_loads(install: Callable[..., None]) -> None:
    install(FakeEntryPoint("exploding", FailingPlugin()), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match="exploding"):
        backend = topgrad.load_backend("alpha")
    assert backend.ops.Add is FakeAdd


def _raise(exc: BaseException) -> Callable[[], Backend]:
    def load() -> Backend:
        raise exc

    return load


def test_backend_load_failure_is_unavailable_with_its_cause(install: Callable[..., None]) -> None:
    cause = OSError("libcuda.so.1: cannot open shared object file")
    install(plugin("gpu-plugin", spec("gpu", _raise(cause)), spec("alpha")))
    with pytest.raises(BackendUnavailableError) as info:
        topgrad.set_backend("gpu")
    assert isinstance(info.value, RuntimeError)
    assert info.value.__cause__ is cause
    message = str(info.value)
    assert "'gpu'" in message and "libcuda.so.1" in message and "gpu-plugin" in message
    assert "Reinstall it" in message  # a fake entry point has no distribution to name
    assert topgrad.set_backend("alpha").name == "alpha", "a broken backend must not break the others"


def test_backend_with_a_missing_module(install: Callable[..., None]) -> None:
    """A load string naming a module that is not there is a typo to fix, not an install to redo."""
    install(plugin("plug", spec("ghost", "topgrad_no_such_module_anywhere.backends:backend")))
    with pytest.raises(BackendUnavailableError, match="topgrad_no_such_module_anywhere") as info:
        topgrad.load_backend("ghost")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    hook = "(the topgrad_backends hook of plugin 'plug')"
    assert f"check the spelling in its BackendSpec {hook}" in str(info.value)
    assert "reinstall" not in str(info.value).lower()


def test_an_entry_point_naming_a_module_that_does_not_exist_says_to_fix_the_pyproject(
    install: Callable[..., None],
) -> None:
    """`typo = "topgrad_typo.plugn"` said only "No module named 'topgrad_typo.plugn'": neither the
    distribution nor that the line to fix is in its pyproject.toml (and needs a reinstall)."""
    error = ModuleNotFoundError("No module named 'topgrad_typo.plugn'", name="topgrad_typo.plugn")
    entry = _entry_of("topgrad-typo", "typo", None, value="topgrad_typo.plugn")
    entry.error = error
    install(entry)
    fix = ("Its entry point names the module 'topgrad_typo.plugn', which does not exist: fix the line "
           'typo = "topgrad_typo.plugn" under [project.entry-points.topgrad] in the pyproject.toml of '
           "topgrad-typo, then reinstall topgrad-typo (pip install from its folder again, with -e for an "
           "editable install")
    with pytest.warns(RuntimeWarning, match=re.escape(fix)):
        topgrad.available_backends()
    with pytest.raises(BackendUnavailableError, match=re.escape(
            "plugin 'typo', installed from topgrad-typo, was skipped: ModuleNotFoundError: No module named "
            f"'topgrad_typo.plugn'. {fix}")) as info:
        topgrad.set_backend("typo")
    assert info.value.__cause__ is error


def test_a_plugin_module_missing_a_dependency_names_it_and_the_distribution(
    install: Callable[..., None],
) -> None:
    error = ModuleNotFoundError("No module named 'missing_lib'", name="missing_lib")
    entry = _entry_of("topgrad-broken", "broken", None)
    entry.error = error
    install(entry)
    with pytest.warns(RuntimeWarning, match=re.escape(
            "Its plugin module 'topgrad_broken.plugin' imports the module 'missing_lib', which is not "
            "installed: install the package that provides it (often: pip install missing_lib), or reinstall "
            "topgrad-broken")):
        topgrad.available_backends()


def test_a_load_string_naming_a_missing_attribute_is_quoted_with_its_distribution(
    install: Callable[..., None],
) -> None:
    """"topgrad_badload.backend:Nope" said "AttributeError: module ... has no attribute 'Nope'. The
    error is in the backend's own code or its load target", quoting neither the load string nor the
    package whose hook gives it."""
    install(_entry_of("topgrad-badload", "badload", BackendsPlugin(spec("gone", "topgrad.registry:Nope"))))
    with pytest.raises(BackendUnavailableError) as info:
        topgrad.load_backend("gone")
    assert str(info.value) == (
        "backend 'gone' (from plugin 'badload' (distribution topgrad-badload)) is installed but failed to "
        "load: its BackendSpec's load string 'topgrad.registry:Nope' names 'Nope', which the module "
        "'topgrad.registry' does not have: fix the load string in the topgrad_backends hook of plugin "
        "'badload' (distribution topgrad-badload) (\"module:attribute\", the attribute a Backend subclass, "
        "an instance or a function returning one)")


def test_a_missing_dependency_names_the_distribution_to_reinstall(install: Callable[..., None]) -> None:
    """The reinstall line names the distribution that owns the entry point, not topgrad-NAME."""
    entry = plugin("plug", spec("gpu", _raise(ImportError("libfoo.so: cannot open shared object file"))))
    entry.dist = SimpleNamespace(name="acme-topgrad-gpu")
    install(entry)
    with pytest.raises(BackendUnavailableError, match="pip install --force-reinstall acme-topgrad-gpu"):
        topgrad.load_backend("gpu")


def test_backend_raising_unavailable_itself_keeps_its_message(install: Callable[..., None]) -> None:
    """A backend that knows why it cannot run (no GPU) says so in its own words."""
    own = BackendUnavailableError("no CUDA GPU found; set TRITON_INTERPRET=1 to run on the CPU")
    install(plugin("plug", spec("gpu", _raise(own))))
    with pytest.raises(BackendUnavailableError) as info:
        topgrad.load_backend("gpu")
    assert info.value is own


def test_load_returning_something_else_than_a_backend(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("odd", lambda: "not a backend")))  # type: ignore[arg-type, return-value]
    with pytest.raises(BackendUnavailableError, match="odd"):
        topgrad.load_backend("odd")


class NotDerived:
    """A backend class whose `(topgrad.Backend)` base was forgotten."""

    ops = SimpleNamespace(Add=FakeAdd)


def _returns_nothing() -> None:
    make_backend("lost")  # no `return`


def _returns_the_ops() -> dict[str, type]:
    return {"Add": FakeAdd}  # the table, not a Backend holding it


@pytest.mark.parametrize(("load", "why"), [
    (NotDerived, "its load target, the class NotDerived, does not derive from topgrad.Backend; write class "
                 "NotDerived(topgrad.Backend)"),
    (_returns_nothing, "its load target _returns_nothing returned None (is a `return` missing?). A load "
                       "target is a subclass of topgrad.Backend (class MyBackend(topgrad.Backend)), an "
                       "instance of one, or a function returning one"),
    (_returns_the_ops, "its load target _returns_the_ops returned a dict, not a topgrad.Backend. A load "
                       "target is a subclass of topgrad.Backend"),
    ("collections:abc", "its load target 'collections:abc' is the module collections.abc, which is neither a "
                        "topgrad.Backend nor callable. A load target is a subclass of topgrad.Backend"),
])
def test_a_load_target_that_is_no_backend_says_what_it_must_be(
    install: Callable[..., None], load: Any, why: str
) -> None:
    """A load target that made no Backend was told only "loaded <...object at 0x...>, which is not a
    topgrad.Backend instance" (a module: "TypeError: 'module' object is not callable"), not what to do."""
    install(plugin("plug", spec("odd", load)))
    with pytest.raises(BackendUnavailableError) as info:
        topgrad.load_backend("odd")
    message = str(info.value)
    assert message.startswith(f"backend 'odd' (from plugin 'plug') cannot load: {why}"), message


class SpecMakingPlugin:
    """A plugin whose topgrad_backends builds its specs when called (a bad one raises there)."""

    def __init__(self, *specs: tuple[Any, Any]) -> None:
        self.specs = specs

    @hookimpl
    def topgrad_backends(self) -> list[BackendSpec]:
        return [BackendSpec(name, load) for name, load in self.specs]


@pytest.mark.parametrize(("name", "load", "why"), [
    (None, "m:B", r"name must be a non-empty str, .*got None"),
    ("", "m:B", r"name must be a non-empty str, .*got ''"),
    (123, "m:B", r"name must be a non-empty str, .*got 123"),
    ("toy", None, r"BackendSpec 'toy': load must be a 'module:attribute' string, a callable .*, or a "),
    ("toy", "fake.backend", r"load must be a 'module:attribute' string, .*got 'fake\.backend'"),  # no colon
    ("toy", "fake.backend:", r"load must be a 'module:attribute' string, .*got 'fake\.backend:'"),
    ("toy", ":backend", r"load must be a 'module:attribute' string, .*got ':backend'"),
])
def test_a_spec_that_cannot_be_selected_is_refused_where_the_plugin_makes_it(
    install: Callable[..., None], name: Any, load: Any, why: str
) -> None:
    """A name that is not a string was listed and then broke every lookup of another name
    (AttributeError in the did-you-mean search) and the kit's --list (sorting None with str);
    load=None failed only when selected, as "'NoneType' object is not callable", and a load string
    without its colon ('pkg.module.Class') was listed, failing only when selected."""
    with pytest.raises(TypeError, match=why):
        BackendSpec(name, load)
    install(FakeEntryPoint("bad", SpecMakingPlugin((name, load))), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match=r"plugin 'bad' failed in topgrad_backends\(\) and is skipped: "
                      rf"TypeError: .*{why}"):
        assert set(topgrad.available_backends()) == {"alpha"}
    with pytest.warns(RuntimeWarning, match="plugin 'bad'"), pytest.raises(
            BackendNotFoundError, match=r"no backend named 'alpah'.*Did you mean 'alpha'"):
        topgrad.load_backend("alpah")


def test_a_spec_may_hold_the_backend_object_itself() -> None:
    """BackendSpec("mine", MyBackend()) was refused while "module:INSTANCE" was taken."""
    made = make_backend("made")
    topgrad.register_backend(BackendSpec("mine", made))
    assert topgrad.load_backend("mine") is made and made.name == "mine"


def test_one_plugin_naming_a_backend_twice_is_told_so(install: Callable[..., None]) -> None:
    """It was blamed on "two plugins, 'toy2' and 'toy2'; uninstall one of them"."""
    install(plugin("toy2", spec("toyb"), spec("toyb")), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match=r"plugin 'toy2' .*its list names backend 'toyb' twice"):
        assert set(topgrad.available_backends()) == {"alpha"}


def test_three_plugins_offering_one_name_are_all_named(install: Callable[..., None]) -> None:
    install(plugin("p-a", spec("dup")), plugin("p-b", spec("dup")), plugin("p-c", spec("dup")))
    with pytest.raises(BackendConflictError,
                       match=r"by three plugins, 'p-a' .*, 'p-b' .* and 'p-c' .*; keep one"):
        topgrad.load_backend("dup")


def test_duplicate_backend_names(install: Callable[..., None]) -> None:
    install(
        plugin("plugin-one", spec("dup")), plugin("plugin-two", spec("dup")), plugin("other", spec("alpha"))
    )
    with pytest.raises(BackendConflictError) as info:
        topgrad.load_backend("dup")
    message = str(info.value)
    assert "'dup'" in message and "plugin-one" in message and "plugin-two" in message
    assert topgrad.load_backend("alpha").name == "alpha"


# ---- op tables: topgrad_ops, override, conflicts ---------------------------------------------
def _ops_plugin(name: str, target: str, ops: dict[str, Any]) -> FakeEntryPoint:
    return FakeEntryPoint(name, OpsPlugin(target, ops))


def test_plugin_adds_an_op(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")), _ops_plugin("extra", "alpha", {"Square": Square}))
    ops = topgrad.load_backend("alpha").ops
    assert ops.Square is Square
    assert ops.Add is FakeAdd and ops.Mul is FakeMul
    assert ops.origins() == {"Square": "added by plugin 'extra'"}
    with pytest.raises(AttributeError, match="Square"):
        _ = topgrad.load_backend("beta").ops.Square


def test_plugin_registered_in_process_adds_an_op(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")))
    topgrad.register_plugin(OpsPlugin("alpha", {"Square": Square}), name="notebook-ops")
    assert topgrad.load_backend("alpha").ops.Square is Square


def test_a_selected_backend_stays_selected_when_a_plugin_is_added(install: Callable[..., None]) -> None:
    """register_plugin rebuilds the loaded backends (to merge its ops) but keeps the choice."""
    install(plugin("plug", spec("numpy"), spec("alpha")))
    topgrad.set_backend("alpha")
    topgrad.register_plugin(OpsPlugin("alpha", {"Square": Square}), name="notebook-ops")
    assert topgrad.get_backend().name == "alpha" and topgrad.get_backend().ops.Square is Square


def test_a_backend_instance_reloads_with_its_plugin_ops(install: Callable[..., None]) -> None:
    """A load target that is an existing Backend object kept the merged table on it: reloaded (a
    plugin added later rebuilds loaded backends), the ops a plugin had added counted as the
    backend's own, and the same plugin's answer was an OpConflictError against itself."""
    instance = make_backend("alpha")
    install(plugin("plug", BackendSpec("alpha", lambda: instance)),
            _ops_plugin("extra", "alpha", {"Square": Square}))
    topgrad.set_backend("alpha")
    topgrad.register_plugin(OpsPlugin("beta", {}), name="unrelated")
    ops = topgrad.get_backend().ops
    assert ops.Square is Square and ops.Add is FakeAdd
    assert ops.origins() == {"Square": "added by plugin 'extra'"}


def test_a_wrapper_given_a_merged_table_takes_the_backends_own_ops(install: Callable[..., None]) -> None:
    """A backend that wraps another (its ops copied from load_backend(...).ops) met every op a
    plugin gives to all backends as one it already had."""

    class ToAll:
        @hookimpl
        def topgrad_ops(self) -> dict[str, Any]:
            return {"Square": Square}

    def wrapper() -> Backend:
        made = make_backend("wrapped")
        made.ops = topgrad.load_backend("alpha").ops
        return made

    install(plugin("plug", spec("alpha"), BackendSpec("wrapped", wrapper)))
    topgrad.register_plugin(ToAll(), name="to-all")
    ops = topgrad.load_backend("wrapped").ops
    assert ops.Square is Square and ops.Mul is FakeMul
    assert ops.origins() == {"Square": "added by plugin 'to-all'"}


def test_a_plugin_registered_twice_is_a_clear_error(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")))
    ops = OpsPlugin("alpha", {"Square": Square})
    topgrad.register_plugin(ops, name="notebook-ops")
    with pytest.raises(ValueError, match="already registered as 'notebook-ops'"):
        topgrad.register_plugin(ops)
    with pytest.raises(ValueError, match="already registered as 'notebook-ops'"):
        topgrad.register_plugin(OpsPlugin("alpha", {}), name="notebook-ops")


def test_a_blocked_plugin_name_is_a_clear_error(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")))
    registry.plugin_manager().set_blocked("notebook-ops")  # this test's own manager (blank_registry)
    with pytest.raises(ValueError, match="'notebook-ops' is blocked"):
        topgrad.register_plugin(OpsPlugin("alpha", {"Square": Square}), name="notebook-ops")


def test_hooks_that_would_never_be_called_are_warned_about(install: Callable[..., None]) -> None:
    """pluggy silently ignores a misspelled hook and a hook without @hookimpl; topgrad says so."""
    install(plugin("plug", spec("alpha")))

    class Careless:
        def topgrad_backend(self) -> list[BackendSpec]:  # misspelled: topgrad_backends
            return [spec("beta")]

        def topgrad_ops(self, backend: str) -> None:  # no @hookimpl
            return None

    with pytest.warns(RuntimeWarning) as caught:
        topgrad.register_plugin(Careless(), name="careless")
    messages = " | ".join(str(w.message) for w in caught)
    assert "topgrad_backend is not a topgrad hook (did you mean topgrad_backends? the hooks:" in messages, (
        messages)
    assert "topgrad_ops lacks @topgrad.hookimpl" in messages, messages


class Misspelt:
    @hookimpl
    def topgrad_backend(self) -> list[BackendSpec]:  # topgrad_backends
        return [spec("mine")]


class OneSpec:
    @hookimpl
    def topgrad_backends(self) -> BackendSpec:  # a spec, not a list of them
        return spec("mine")


@pytest.mark.parametrize(("wrong", "why"), [
    (FakeBackend, "implements no topgrad hook"),  # the entry point aimed at a class
    (Misspelt(), "implements no topgrad hook"),
    (OneSpec(), "return a list of them"),
], ids=["aimed wrong", "misspelt hook", "one spec, no list"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # warned on every lookup; checked once below
def test_a_backend_lost_to_a_plugin_mistake_is_not_called_uninstalled(
    install: Callable[..., None], wrong: object, why: str
) -> None:
    """The plugin is installed but offers nothing usable: the lookup points at it (and the
    warning says why) instead of telling the user to pip install what is there."""
    install(FakeEntryPoint("mine-plugin", wrong), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match=f"'mine-plugin'.*{why}"):
        topgrad.available_backends()
    with pytest.raises(BackendNotFoundError, match=r"skipped.*'mine-plugin'") as info:
        topgrad.set_backend("mine")
    assert "pip install topgrad-mine" not in str(info.value)


@pytest.fixture
def package_for_its_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The package topgrad_pkgep (the guide's layout: its hooks are in topgrad_pkgep.plugin), imported."""
    package = tmp_path / "topgrad_pkgep"
    package.mkdir()
    (package / "__init__.py").write_text('"""The package: no hooks here."""\n')
    (package / "plugin.py").write_text(textwrap.dedent("""\
        import topgrad


        @topgrad.hookimpl
        def topgrad_backends():
            return [topgrad.BackendSpec("pkgep", "topgrad_pkgep.backend:B")]
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield __import__("topgrad_pkgep")
    monkeypatch.delitem(sys.modules, "topgrad_pkgep", raising=False)


_POINT_IT = ("Its entry point names 'topgrad_pkgep', which defines no @topgrad.hookimpl function: name the "
             "module that does, {} = \"topgrad_pkgep.plugin\" under [project.entry-points.topgrad] in the "
             "pyproject.toml of topgrad-pkgep, then reinstall topgrad-pkgep (pip install from its folder")


@pytest.mark.parametrize("entry", ["pkgep", "pkgep-plugin"])
def test_an_entry_point_naming_the_package_says_to_name_its_plugin_module(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch, package_for_its_plugin: ModuleType,
    entry: str,
) -> None:
    """An entry point naming the package instead of its plugin module ended in "was skipped: it
    implements no topgrad hook" with no fix (entry point named as the backend), or in "it offers no
    backend at all, only ops for other backends" (named otherwise), which it does not either."""
    ep = FakeEntryPoint(entry, package_for_its_plugin)
    ep.value, ep.dist = "topgrad_pkgep", SimpleNamespace(name="topgrad-pkgep")
    install(ep, plugin("good", spec("alpha")))
    ours = SimpleNamespace(group="topgrad", name=entry, value=ep.value)
    _distributions(monkeypatch, {"topgrad-pkgep": SimpleNamespace(entry_points=[ours])})
    with pytest.warns(RuntimeWarning, match="implements no topgrad hook"), \
            pytest.raises((BackendUnavailableError, BackendNotFoundError)) as info:
        topgrad.set_backend("pkgep")
    message = str(info.value)
    assert _POINT_IT.format(entry) in message and message.endswith("installed)"), message
    assert "only ops" not in message and message.count("implements no topgrad hook") == 1, message


def test_a_plugin_registered_in_process_with_no_hook_is_named_as_on_install(
    install: Callable[..., None],
) -> None:
    """`register_plugin(package)` (or the kit's `--plugin package`) given the package instead of its
    plugin module was accepted without a word, and the lookup then said to pip install it."""
    install(plugin("good", spec("alpha")))
    package = ModuleType("topgrad_mine")  # the package; its hooks live in topgrad_mine.plugin
    with pytest.warns(RuntimeWarning, match=r"plugin 'topgrad_mine' implements no topgrad hook, so it "
                      r"offers nothing: register a module \(or object\) with @topgrad.hookimpl"):
        topgrad.register_plugin(package, name="topgrad_mine")
    with pytest.raises(BackendNotFoundError, match=r"skipped.*'topgrad_mine': it implements no topgrad "
                       "hook") as info:
        topgrad.set_backend("mine")
    assert "pip install" not in str(info.value)


def test_register_backend_takes_a_spec() -> None:
    with pytest.raises(TypeError, match="BackendSpec"):
        topgrad.register_backend("numpy")  # type: ignore[arg-type]


def test_two_plugins_giving_one_op(install: Callable[..., None]) -> None:
    install(
        plugin("plug", spec("alpha")),
        _ops_plugin("squares-one", "alpha", {"Square": Square}),
        _ops_plugin("squares-two", "alpha", {"Square": Square}),
    )
    with pytest.raises(OpConflictError) as info:
        topgrad.load_backend("alpha")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "Square" in message and "squares-one" in message and "squares-two" in message
    # each plugin as its entry point, and what removes it (an entry point's name need not be a package's)
    assert "is given by two plugins, 'squares-one' (entry point fake_squares-one.plugin) and" in message
    assert "keep one of them: uninstall the package that provides fake_squares-one.plugin, or" in message


def test_two_plugins_giving_one_op_name_their_distributions(install: Callable[..., None]) -> None:
    one, two = (_ops_plugin(name, "alpha", {"Square": Square}) for name in ("softplus", "softplus2"))
    one.dist = SimpleNamespace(name="topgrad-softplus", version="1.0")
    two.dist = SimpleNamespace(name="topgrad-dupop")
    install(plugin("plug", spec("alpha")), one, two)
    with pytest.raises(OpConflictError, match=re.escape(
            "op 'Square' of backend 'alpha' is given by two plugins, 'softplus' (distribution "
            "topgrad-softplus 1.0) and 'softplus2' (distribution topgrad-dupop); keep one of them: "
            "pip uninstall topgrad-softplus, or pip uninstall topgrad-dupop")):
        topgrad.load_backend("alpha")


def test_override_replaces_the_backend_op(install: Callable[..., None]) -> None:
    install(
        plugin("plug", spec("alpha")), _ops_plugin("fast-add", "alpha", {"Add": topgrad.override(OtherAdd)})
    )
    ops = topgrad.load_backend("alpha").ops
    assert ops.Add is OtherAdd
    assert ops.Mul is FakeMul
    assert ops.origins() == {"Add": "plugin 'fast-add' replaces the backend's"}  # the kit's header


def test_two_overrides_of_one_op(install: Callable[..., None]) -> None:
    install(
        plugin("plug", spec("alpha")),
        _ops_plugin("fast-add-one", "alpha", {"Add": topgrad.override(OtherAdd)}),
        _ops_plugin("fast-add-two", "alpha", {"Add": topgrad.override(FakeAdd)}),
    )
    with pytest.raises(OpConflictError) as info:
        topgrad.load_backend("alpha")
    message = str(info.value)
    assert "Add" in message and "fast-add-one" in message and "fast-add-two" in message


def test_existing_op_without_override(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")), _ops_plugin("sneaky", "alpha", {"Add": OtherAdd}))
    with pytest.raises(OpConflictError, match="override") as info:
        topgrad.load_backend("alpha")
    assert "sneaky" in str(info.value) and "Add" in str(info.value)


def test_missing_op_names_the_op_and_the_backend(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")))
    ops = topgrad.load_backend("alpha").ops
    with pytest.raises(AttributeError) as info:
        _ = ops.Conv2d
    message = str(info.value)
    assert "Conv2d" in message and "alpha" in message


class AnswerPlugin:
    """A plugin whose hooks return `backends` and `ops` as given, right or wrong."""

    def __init__(self, backends: Any = None, ops: Any = None) -> None:
        self.backends, self.ops = backends, ops

    @hookimpl
    def topgrad_backends(self) -> Any:
        return self.backends

    @hookimpl
    def topgrad_ops(self, backend: str) -> Any:
        return self.ops


class AddInstance(Op):
    pass


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (BackendSpec("single", "m:b"), "return a list of them"),
        (["numpy"], "'numpy' in its list, not a topgrad.BackendSpec"),
        (3, "TypeError"),
    ],
)
def test_a_malformed_topgrad_backends_answer_skips_that_plugin_only(
    install: Callable[..., None], answer: Any, why: str
) -> None:
    """CONTRACT: a broken plugin never breaks the other backends."""
    install(FakeEntryPoint("odd", AnswerPlugin(backends=answer)), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match="'odd'") as caught:  # at every lookup: set_backend too
        assert set(topgrad.available_backends()) == {"alpha"}
        assert topgrad.set_backend("alpha").name == "alpha"
    assert why in str(caught[0].message)
    assert {w.filename for w in caught} == {__file__}, "warnings point at the caller's lines"


@pytest.mark.parametrize("answer", [None, []])
def test_a_plugin_whose_topgrad_backends_answers_nothing_is_named_when_its_backend_is_missing(
    install: Callable[..., None], answer: Any
) -> None:
    """A topgrad_backends without `return` offers nothing: allowed (a plugin may offer a backend only
    where it runs), so no warning, but asking for the backend said only "pip install topgrad-mine"."""
    install(FakeEntryPoint("mine", AnswerPlugin(backends=answer)), plugin("good", spec("alpha")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(topgrad.available_backends()) == {"alpha"}
    hint = "is its .return. missing" if answer is None else "an empty list"
    with pytest.raises(topgrad.BackendNotFoundError,
                       match=rf"Plugin 'mine' offers no backend: its topgrad_backends\(\) returned "
                             rf"{re.escape(repr(answer))} \({hint}"):
        topgrad.set_backend("mine")
    with pytest.raises(topgrad.BackendNotFoundError) as near:  # a near name of another: about that one
        topgrad.set_backend("alpah")
    assert "Did you mean 'alpha'?" in str(near.value) and "offers no backend" not in str(near.value)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ([FakeAdd], "returned a list, not a dict"),
        ({"Square": AddInstance()}, "not an Op subclass"),
        ({"Square": len}, "not an Op subclass"),
        ({3: Square}, "not an op name"),
    ],
)
def test_a_malformed_topgrad_ops_answer_is_skipped_with_a_warning(
    install: Callable[..., None], answer: Any, why: str
) -> None:
    install(plugin("plug", spec("alpha")), FakeEntryPoint("odd", AnswerPlugin(ops=answer)))
    with pytest.warns(RuntimeWarning, match="plugin 'odd'") as caught:
        ops = topgrad.load_backend("alpha").ops
    assert why in str(caught[0].message)
    assert caught[0].filename == __file__, "the warning should point at the caller's line"
    assert ops.names() == ["Add", "Mul"]


def test_override_takes_an_op_class() -> None:
    with pytest.raises(TypeError, match="Op subclass"):
        topgrad.override(AddInstance())  # type: ignore[arg-type]


@pytest.mark.parametrize("order", [1, -1])
def test_a_plain_entry_for_an_existing_op_conflicts_whatever_the_plugin_order(
    install: Callable[..., None], order: int
) -> None:
    """A plain entry never replaces an op, even one another plugin overrides."""
    plugins = [_ops_plugin("overrides", "alpha", {"Add": topgrad.override(OtherAdd)}),
               _ops_plugin("plain", "alpha", {"Add": Square})]
    install(plugin("plug", spec("alpha")), *plugins[::order])
    with pytest.raises(OpConflictError, match="plugin 'plain' gives op 'Add'"):
        topgrad.load_backend("alpha")


def test_an_override_of_an_op_the_backend_lacks_is_skipped_with_a_hint(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")), _ops_plugin("typo", "alpha", {"Ad": topgrad.override(OtherAdd)}))
    with pytest.warns(RuntimeWarning, match="did you mean 'Add'"):
        ops = topgrad.load_backend("alpha").ops
    assert ops.names() == ["Add", "Mul"] and ops.Add is FakeAdd


def test_an_override_of_an_op_in_another_case_gets_the_hint(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")), _ops_plugin("typo", "alpha", {"mUL": topgrad.override(OtherAdd)}))
    with pytest.warns(RuntimeWarning, match="did you mean 'Mul'"):
        topgrad.load_backend("alpha")


def test_an_override_may_replace_an_op_another_plugin_added(install: Callable[..., None]) -> None:
    install(
        plugin("plug", spec("alpha")),
        _ops_plugin("better-square", "alpha", {"Square": topgrad.override(OtherAdd)}),
        _ops_plugin("square", "alpha", {"Square": Square}),
    )
    assert topgrad.load_backend("alpha").ops.Square is OtherAdd


def test_a_hook_may_take_fewer_arguments_than_its_spec(install: Callable[..., None]) -> None:
    """pluggy allows `def topgrad_ops():`; the registry calls it with what it asks for."""

    class NoArgument:
        @hookimpl
        def topgrad_ops(self) -> dict[str, Any]:
            return {"Square": Square}

    install(plugin("plug", spec("alpha")), FakeEntryPoint("bare", NoArgument()))
    assert topgrad.load_backend("alpha").ops.Square is Square


def test_a_helper_the_backend_lacks_is_named() -> None:
    with pytest.raises(NotImplementedError, match=r"<topgrad backend 'alpha'> does not implement the array "
                       r"helper randn\(\)"):
        make_backend("alpha").randn((2, 3))


def test_a_backend_may_give_its_ops_as_a_dict(install: Callable[..., None]) -> None:
    def load() -> Backend:
        b = make_backend("alpha")
        b.ops = {"Add": FakeAdd, "helper": len}
        return b

    install(plugin("plug", spec("alpha", load)))
    assert topgrad.load_backend("alpha").ops.names() == ["Add"]


def test_an_ops_module_lists_its_public_ops_only(install: Callable[..., None]) -> None:
    """With `ops = <module>`, a base class the ops share (`class BoxOp(Op)`) was listed as an op in the
    table's repr and its "it has: ..." lists. An ops module's ops are its public names, as `from ops
    import *` takes them: its `__all__` where it has one, else the names not starting with "_"."""
    class BoxOp(Op):
        """A shared base: forward and backward that call fwd and bwd."""

    class Add(BoxOp):
        pass

    listed = ModuleType("listed_ops")
    listed.__dict__.update(Op=Op, BoxOp=BoxOp, Add=Add, Mul=FakeMul, __all__=["Add", "Mul"])
    private = ModuleType("private_ops")
    private.__dict__.update(Op=Op, _BoxOp=BoxOp, Add=Add, Mul=FakeMul)

    def load(ops: ModuleType) -> Callable[[], Backend]:
        def made() -> Backend:
            b = make_backend(ops.__name__)
            b.ops = ops
            return b

        return made

    install(plugin("plug", spec("listed", load(listed)), spec("private", load(private))))
    for name in ("listed", "private"):
        table = topgrad.load_backend(name).ops
        assert table.names() == ["Add", "Mul"], table
        assert repr(table) == f"OpTable({name!r}: Add, Mul)"
        with pytest.raises(AttributeError, match=r"has no op 'BoxOp'; it has: Add, Mul\."):
            _ = table.BoxOp
    assert not hasattr(topgrad.load_backend("private").ops, "_BoxOp")


def test_a_backend_without_ops_says_so(install: Callable[..., None]) -> None:
    def load() -> Backend:
        b = make_backend("alpha")
        b.ops = None
        return b

    install(plugin("plug", spec("alpha", load)))
    with pytest.raises(BackendUnavailableError, match=re.escape(
            "backend 'alpha' (from plugin 'plug') provides no ops: its `ops` is None, and no plugin adds "
            "any, so every op would fail. Set `ops` on its Backend class to a module, namespace or dict of "
            "topgrad.Op subclasses")):
        topgrad.load_backend("alpha")


def test_a_backend_whose_ops_hold_no_op_class_is_refused_at_load(install: Callable[..., None]) -> None:
    """ops of no Op subclass loaded silently, an empty table that only the first op complained about;
    what the table held instead (a class without the Op base) is named."""
    def load() -> Backend:
        b = make_backend("alpha")
        b.ops = SimpleNamespace(Add=AddWithoutBase)
        return b

    install(plugin("plug", spec("alpha", load)))
    with pytest.raises(BackendUnavailableError, match=re.escape(
            "provides no ops: its `ops` is a SimpleNamespace holding no topgrad.Op subclass (Add: the class "
            "AddWithoutBase, which does not derive from topgrad.Op)")):
        topgrad.load_backend("alpha")


def test_a_backend_whose_ops_all_come_from_plugins_loads(install: Callable[..., None]) -> None:
    def load() -> Backend:
        b = make_backend("alpha")
        b.ops = None
        return b

    install(plugin("plug", spec("alpha", load)), _ops_plugin("adds", "alpha", {"Add": FakeAdd}))
    assert topgrad.load_backend("alpha").ops.names() == ["Add"]


class AddWithoutBase:
    """An op whose author forgot `(Op)`."""

    def forward(self, a: object, b: object) -> None: ...

    def backward(self, grad: object) -> None: ...


@pytest.mark.parametrize("ops, asked, says", [
    ({"Add": AddWithoutBase, "Mul": FakeMul}, "Add",
     r"its `ops` holds the class AddWithoutBase, which does not derive from topgrad\.Op"),
    (SimpleNamespace(Add=AddWithoutBase, Mul=FakeMul), "Add", "does not derive from topgrad.Op"),
    ({"Add": FakeAdd(), "Mul": FakeMul}, "Add", r"an instance of FakeAdd \(give the class itself\)"),
    ({"Lineer": FakeAdd, "Mul": FakeMul}, "Linear", r"has no op 'Linear' \(it has 'Lineer': is that name "
     r"misspelled\?\); it has: Lineer, Mul\. Use a backend"),
])
def test_a_missing_op_names_what_the_backend_holds_instead(
    install: Callable[..., None], ops: object, asked: str, says: str
) -> None:
    """A table entry that is not an Op subclass was dropped without a word, so the error said
    only "has no op 'Add'"; a misspelled class name got no hint either."""
    def load() -> Backend:
        b = make_backend("alpha")
        b.ops = ops
        return b

    install(plugin("plug", spec("alpha", load)))
    with pytest.raises(AttributeError, match=says):
        getattr(topgrad.load_backend("alpha").ops, asked)


def test_replacing_the_selected_backend_takes_effect(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")))
    topgrad.set_backend("alpha")
    replacement = spec("alpha", lambda: make_backend("alpha", made_by="replacement"))
    topgrad.register_backend(replacement, replace=True)
    assert topgrad.get_backend().made_by == "replacement"


def test_a_bug_in_the_backend_gets_no_reinstall_advice(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha", _raise(TypeError("__init__() missing 1 required argument")))))
    with pytest.raises(BackendUnavailableError, match="missing 1 required") as info:
        topgrad.load_backend("alpha")
    assert "reinstall" not in str(info.value).lower()


# ---- selection --------------------------------------------------------------------------------
def test_environment_variable_selects(install: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    install(plugin("plug", spec("numpy"), spec("beta")))
    monkeypatch.setenv("TOPGRAD_BACKEND", "beta")
    assert topgrad.get_backend().name == "beta"


def test_environment_variable_naming_a_missing_backend(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install(plugin("plug", spec("numpy")))
    monkeypatch.setenv("TOPGRAD_BACKEND", "nonesuch")
    with pytest.raises(BackendNotFoundError, match="pip install topgrad-nonesuch") as info:
        topgrad.get_backend()
    assert "TOPGRAD_BACKEND" in str(info.value)


@pytest.mark.parametrize(("typed", "meant"), [("numpyy", "numpy"), ("NumPy", "numpy"), ("tritn", "triton")])
def test_a_near_backend_name_gets_a_suggestion_not_an_install_line(
    install: Callable[..., None], typed: str, meant: str
) -> None:
    install(plugin("plug", spec("numpy"), spec("triton")))
    with pytest.raises(BackendNotFoundError, match=f"Did you mean '{meant}'") as info:
        topgrad.set_backend(typed)
    assert "pip install" not in str(info.value)


@pytest.mark.parametrize("name", [None, 3])
def test_a_backend_name_must_be_a_string(name: object) -> None:
    with pytest.raises(TypeError, match="backend is chosen by its name"):
        topgrad.set_backend(name)  # type: ignore[arg-type]


def test_default_is_numpy_among_several(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("numpy"), spec("zeta")))
    assert topgrad.get_backend().name == "numpy"


def test_default_is_the_only_backend(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha")))
    assert topgrad.get_backend().name == "alpha"


def test_default_with_several_and_no_numpy(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")))
    with pytest.raises(BackendNotFoundError) as info:
        topgrad.get_backend()
    message = str(info.value)
    assert "alpha" in message and "beta" in message and "TOPGRAD_BACKEND" in message


def test_default_with_no_backend_at_all() -> None:
    with pytest.raises(BackendNotFoundError, match="pip install topgrad-numpy"):
        topgrad.get_backend()


def test_set_backend_switches(install: Callable[..., None]) -> None:
    install(plugin("plug", spec("alpha"), spec("beta")))
    assert topgrad.set_backend("alpha") is topgrad.get_backend()
    assert topgrad.set_backend("beta") is topgrad.get_backend()
    assert topgrad.get_backend().name == "beta"


# ---- the real installation -------------------------------------------------------------------
def test_listing_backends_imports_no_heavy_library(backend_name: str) -> None:
    """`import topgrad` and `available_backends()` import neither numpy, torch nor triton."""
    script = textwrap.dedent(
        """
        import sys
        import topgrad
        heavy = ("numpy", "torch", "triton")
        assert not [m for m in heavy if m in sys.modules], ("import topgrad", sorted(sys.modules))
        names = topgrad.available_backends()
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, f"available_backends() imported {loaded}"
        print(",".join(sorted(names)))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert backend_name in done.stdout.strip().split(","), done.stdout


def test_warnings_name_a_sibling_package_as_outside_topgrad() -> None:
    """Installed side by side, site-packages/topgrad_numpy/ starts with site-packages/topgrad: its
    frames are a caller outside topgrad, and a warning issued through them names their line."""
    import os

    from topgrad import warning_location

    sibling = warning_location.TOPGRAD_DIR.rstrip(os.sep) + "_numpy" + os.sep + "plugin.py"
    namespace = {"warn": warning_location.warn}
    exec(compile("def call():\n    warn('from a plugin')\n", sibling, "exec"), namespace)
    with pytest.warns(RuntimeWarning, match="from a plugin") as caught:
        namespace["call"]()
    assert caught[0].filename == sibling


_PLUGIN_MISTAKES = {  # a plugin module's source; `# here` marks the line its warning should name
    "misspelt hook": """
        from topgrad import hookimpl

        @hookimpl  # here
        def topgrad_backend():
            return []
        """,
    "hook without hookimpl": """
        def topgrad_ops(backend):  # here
            return None
        """,
    "no hook": """\
        '''A plugin module with no hook at all.'''  # here
        """,
    "import fails": """
        import os
        import missing_dependency_of_the_plugin  # here
        """,
    "hook raises": """
        from topgrad import hookimpl

        @hookimpl
        def topgrad_backends():
            return [1 / 0]  # here
        """,
    "hook pluggy refuses": """\
        from topgrad import hookimpl  # here: the module (pluggy's own frames are no place to fix)

        @hookimpl(wrapper=True)
        def topgrad_backends():
            return []
        """,
    "hook asks for a wrong argument": """
        from topgrad import hookimpl

        @hookimpl  # here
        def topgrad_ops(backend_name):
            return None
        """,
}


@pytest.mark.parametrize("mistake", list(_PLUGIN_MISTAKES))
def test_a_plugin_warning_points_at_the_plugin_line_to_fix(
    install: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mistake: str
) -> None:
    """The warning named the caller's line (under `python -m topgrad.testing`, `<frozen runpy>`), not
    the plugin's line that needs the fix, though the hook function (or the traceback) knows it."""
    from importlib.metadata import EntryPoint

    module = f"topgrad_mistaken_{mistake.replace(' ', '_')}"
    source = textwrap.dedent(_PLUGIN_MISTAKES[mistake])
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    install(EntryPoint("careless", module, "topgrad"), plugin("good", spec("alpha")))
    with pytest.warns(RuntimeWarning, match="plugin 'careless'") as caught:
        assert set(topgrad.available_backends()) == {"alpha"}
    here = next(n for n, line in enumerate(source.splitlines(), 1) if "# here" in line)
    ours = [(w.filename, w.lineno) for w in caught if "'careless'" in str(w.message)]
    assert ours[0] == (str(tmp_path / f"{module}.py"), here), [str(w.message) for w in caught]
    monkeypatch.delitem(sys.modules, module, raising=False)


_OPS_MISTAKES = {  # a topgrad_ops hook whose answer is skipped with a warning; `# here`: its line
    "override of a misspelt op": """
        import topgrad
        from topgrad import Op

        class MaskReLU(Op):
            pass

        @topgrad.hookimpl  # here
        def topgrad_ops(backend):
            return {"Ad": topgrad.override(MaskReLU)}
        """,
    "answer not a dict": """
        import topgrad

        @topgrad.hookimpl  # here
        def topgrad_ops():
            return []
        """,
}


@pytest.mark.parametrize("mistake", list(_OPS_MISTAKES))
def test_a_skipped_topgrad_ops_answer_is_warned_about_at_the_hook(
    install: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mistake: str
) -> None:
    """The warning pointed at the line that loaded the backend (under `python -m topgrad.testing`,
    inside topgrad/testing/__main__.py), not at the plugin's hook whose answer needs the fix."""
    from importlib.metadata import EntryPoint

    module = f"topgrad_ops_mistake_{mistake.replace(' ', '_')}"
    source = textwrap.dedent(_OPS_MISTAKES[mistake])
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    install(plugin("good", spec("alpha")), EntryPoint("careless", module, "topgrad"))
    with pytest.warns(RuntimeWarning, match="plugin 'careless'") as caught:
        assert topgrad.load_backend("alpha").ops.names() == ["Add", "Mul"]
    here = next(n for n, line in enumerate(source.splitlines(), 1) if "# here" in line)
    ours = [(w.filename, w.lineno) for w in caught if "'careless'" in str(w.message)]
    assert ours == [(str(tmp_path / f"{module}.py"), here)], [str(w.message) for w in caught]
    monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.mark.parametrize("launch", ["-c", "script", "-m app", "-m topgrad.testing"])
def test_plugin_warnings_never_point_at_runpy(tmp_path: Path, launch: str) -> None:
    """Under `python -m topgrad.testing` every frame below runpy is topgrad's, so the warnings read
    `<frozen runpy>:88`. A plugin's mistake is now shown at its line; a plugin that cannot be
    imported at all at the user's line, else at the program's own (`topgrad/testing/__main__.py`)."""
    for dist, entry in [("careless_dist", "careless = careless_plugin"),
                        ("broken_dist", "broken = no_such_module_of_topgrad_tests")]:
        info = tmp_path / f"{dist}-0.1.dist-info"  # an installed distribution, as pip leaves it
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[topgrad]\n{entry}\n")
    (tmp_path / "careless_plugin.py").write_text("def topgrad_backend():\n    return []\n")
    program = "import topgrad\ntopgrad.available_backends()\n"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(program)
    (tmp_path / "prog.py").write_text(program)
    argv, at = {
        "-c": (["-c", program], "<string>:2"),
        "script": (["prog.py"], "prog.py:2"),
        "-m app": (["-m", "app"], f"{tmp_path / 'app' / '__main__.py'}:2"),
        "-m topgrad.testing": (["-m", "topgrad.testing", "--list"],
                               os.path.join("topgrad", "testing", "__main__.py") + ":"),
    }[launch]
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    where = {plugin: place for place, plugin in re.findall(
        r"^(.*?:\d+): RuntimeWarning: topgrad: plugin '(\w+)'", done.stderr, re.M)}
    assert "<frozen" not in done.stderr, done.stderr
    assert where["careless"] == f"{tmp_path / 'careless_plugin.py'}:1", done.stderr
    assert at in where["broken"], done.stderr


# ---- Tensors of another backend ---------------------------------------------------------------
class Arrays:
    """Arrays of a made-up library (shape and dtype are all the engine reads)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype = tuple(shape), "float32"


class Flat(Arrays):
    """The arrays of backend "flat"."""


class Boxed(Arrays):
    """The arrays of backend "boxed": not Flats."""


def array_backend(name: str, array: type) -> Backend:
    """A backend whose arrays are of type `array` and whose Add fails on any other, as numpy's
    code fails obscurely on a torch tensor ('Tensor' object has no attribute 'flags')."""

    class OfArrays(Backend):
        def zeros(self, shape: tuple[int, ...]) -> Any:
            return array(shape)

        def asarray(self, obj: Any, dtype: str = "float32") -> Any:
            if not isinstance(obj, array):
                raise TypeError(f"backend {self.name!r} makes arrays only of its own")
            return obj

        def to_numpy(self, a: Any) -> Any:
            return ("values read by", self.name, a.shape)

    class Add(Op):
        def forward(self, a: Any, b: Any) -> Any:
            for x in (a, b):
                if not isinstance(x, array):
                    raise AttributeError(f"'{type(x).__name__}' object has no attribute 'flags'")
            if a.shape != b.shape:
                raise ValueError(f"Add: shapes {a.shape} and {b.shape} differ")
            return array(a.shape)

    backend = OfArrays()
    backend.name, backend.ops = name, SimpleNamespace(Add=Add)
    return backend


def _flat_and_boxed() -> None:
    """Register the backends "flat" and "boxed", whose arrays are of two types, in-process."""
    topgrad.register_backend(BackendSpec("flat", lambda: array_backend("flat", Flat)))
    topgrad.register_backend(BackendSpec("boxed", lambda: array_backend("boxed", Boxed)))


def test_a_backend_without_full_is_told_so_at_its_first_tensor() -> None:
    """zeros() defaults to full(); a backend without full made Tensor(...) say "its asarray and copy
    must return those (builtins.NoneType)", blaming two helpers that worked."""
    import numpy as np

    class NoFull(Backend):
        ops = SimpleNamespace(Add=FakeAdd)

        def asarray(self, obj: Any, dtype: str = "float32") -> Any:
            return np.asarray(obj, dtype=dtype)

        def copy(self, a: Any) -> Any:
            return np.array(a)

    class FullWithoutReturn(NoFull):
        def full(self, shape: tuple[int, ...], value: float) -> Any:
            np.full(shape, value, np.float32)  # the `return` forgotten

    topgrad.register_backend(BackendSpec("no-return", FullWithoutReturn))
    topgrad.set_backend("no-return")
    with pytest.raises(TypeError, match=r"failed with no error: it returned None \(is a `return` missing"):
        topgrad.Tensor([1.0, 2.0])
    topgrad.register_backend(BackendSpec("no-full", NoFull))
    topgrad.set_backend("no-full")
    with pytest.raises(TypeError, match=r"backend 'no-full' cannot tell what its arrays are: its "
                       r"zeros\(\(0,\)\), which says so, failed with NotImplementedError: .* does not "
                       r"implement the array helper full\(\)"):
        topgrad.Tensor([1.0, 2.0])


def test_a_tensor_of_another_backend_is_named_when_an_op_fails() -> None:
    """Tensors keep their backend's arrays: one made before set_backend switched reaches the new
    backend's ops, which fail in their own words; the engine names the operand and its backend."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    old = Tensor.zeros(3)
    topgrad.set_backend("boxed")
    new = Tensor.zeros(3)
    with pytest.raises(TypeError, match=r"Add: operand 1 belongs to backend 'flat' \(it holds a "
                                        r"test_registry\.Flat\), but the current backend is 'boxed'") as info:
        new + old
    assert isinstance(info.value.__cause__, AttributeError)  # the op's own error, kept as the cause
    with pytest.raises(ValueError, match="shapes"):  # no foreign Tensor: the op's error as it was
        new + Tensor.zeros(4)


def test_a_step_after_set_backend_names_the_backend_the_parameters_belong_to() -> None:
    """backward made w.grad under 'flat'; after set_backend('boxed') the step said "parameter 0's
    .grad must be an array of the backend 'boxed', got Flat", as if the gradient were wrong."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    w = Tensor.zeros(3)
    opt = topgrad.optim.SGD([w], lr=0.1)
    w.grad = Flat((3,))
    topgrad.set_backend("boxed")
    with pytest.raises(TypeError, match=r"SGD.step: parameter 0's .grad is an array of backend 'flat', and "
                       r"the selected backend is 'boxed'.*set_backend\('boxed'\), or select 'flat' again"):
        opt.step()
    opt.zero_grad(set_to_none=False)  # zeros of w's backend, not of the selected one
    assert type(w.grad) is Flat and w.grad.shape == (3,)


def test_a_backend_without_zeros_does_not_hide_the_owner_of_a_tensor() -> None:
    """The engine asks each loaded backend for its array type only after an op failed; one whose
    zeros() fails (a bare backend, loaded first here) is passed over, not raised from."""
    topgrad.register_backend(spec("bare"))  # FakeBackend: no zeros
    _flat_and_boxed()
    topgrad.load_backend("bare")
    topgrad.set_backend("flat")
    old = Tensor.zeros(3)
    topgrad.set_backend("boxed")
    with pytest.raises(TypeError, match="operand 0 belongs to backend 'flat'"):
        old + Tensor.zeros(3)


def test_backward_through_a_graph_of_another_backend_names_it() -> None:
    """A loss computed under one backend, backward called after set_backend switched: the seed and
    the ops' backward would mix the two libraries' arrays; the error says so."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    x = Tensor.zeros(3)
    loss = x + x
    topgrad.set_backend("boxed")
    with pytest.raises(TypeError, match="backward: the tensor belongs to backend 'flat'"):
        loss.backward()
    topgrad.set_backend("flat")
    # the same backend: the error as it was (no full(), which the default ones() of the seed calls),
    # not the other backend's name
    with pytest.raises(NotImplementedError, match=r"^<topgrad backend 'flat'> does not implement the array "
                       r"helper full\(\)") as info:
        loss.backward()
    assert "belongs to" not in str(info.value)


class _ShiftedBy(Op):
    """x + a Tensor given by keyword, as BatchNorm takes its running statistics."""

    def forward(self, x: Any, *, shift: Tensor) -> Any:
        return topgrad.get_backend().ops.Add().forward(x, shift.data)


def test_a_keyword_tensor_of_another_backend_is_named_when_an_op_fails() -> None:
    """Only positional operands were asked about: BatchNorm's running statistics of the other
    backend failed with "'Tensor' object has no attribute 'astype'"."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    shift = Tensor.zeros(3)
    topgrad.set_backend("boxed")
    with pytest.raises(TypeError, match="_ShiftedBy: shift belongs to backend 'flat'"):
        _ShiftedBy.apply(Tensor.zeros(3), shift=shift)


def test_a_backward_seed_of_another_backend_is_named() -> None:
    """backward(seed) with a seed Tensor made under the other backend failed inside an op's
    backward with that library's own error (triton: "only 0-dimensional arrays ...")."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    seed = Tensor.zeros(3)
    topgrad.set_backend("boxed")
    x = Tensor.zeros(3)
    with pytest.raises(TypeError, match="backward: grad belongs to backend 'flat'"):
        (x + x).backward(seed)


def test_a_tensor_of_another_backend_reads_out_through_its_own() -> None:
    """numpy() (and so item(), repr) of a Tensor made before set_backend switched asks the backend
    that made it, so values from two backends can be compared side by side."""
    _flat_and_boxed()
    topgrad.set_backend("flat")
    old = Tensor.zeros(3)
    topgrad.set_backend("boxed")
    assert old.numpy() == ("values read by", "flat", (3,))
    assert Tensor.zeros(2).numpy() == ("values read by", "boxed", (2,))


def test_profile_loads_the_backend_on_entry_and_leaves_a_load_error_to_the_first_op(
    install: Callable[..., None],
) -> None:
    """profile() loads the backend before its clock starts; with none installed the block still
    runs, and the first op raises the registry's error, as it would without a profile."""
    alpha = spec("alpha")
    install(plugin("plug", alpha))
    with topgrad.profile():
        assert alpha.load.calls == 1
    install()
    entered = False
    with pytest.raises(BackendNotFoundError, match="no topgrad backend is installed"), topgrad.profile():
        entered = True
        topgrad.Tensor.zeros(1)
    assert entered


# ---- threads -----------------------------------------------------------------------------------
def test_threads_first_using_topgrad_at_once_share_one_registry(install: Callable[..., None]) -> None:
    """Each thread built a plugin manager of its own over the shared entry-point table, so all but
    one found no plugins: one picked the wrong default backend or none ("no topgrad backend is
    installed"), and the last manager built, often empty, stayed for the process."""
    import sys
    import threading

    numpy_spec, other = spec("numpy"), spec("other")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            install(plugin("plug-a", numpy_spec), plugin("plug-b", other))
            start, got, errors = threading.Barrier(6), [], []

            def first_use(start: threading.Barrier, got: list[Backend], errors: list[Exception]) -> None:
                start.wait()
                try:
                    got.append(topgrad.get_backend())
                except Exception as exc:  # reported below
                    errors.append(exc)

            workers = [threading.Thread(target=first_use, args=(start, got, errors)) for _ in range(6)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert not errors, errors
            assert len({id(b) for b in got}) == 1 and got[0].name == "numpy"
            assert set(topgrad.available_backends()) == {"numpy", "other"}
    finally:
        sys.setswitchinterval(interval)
