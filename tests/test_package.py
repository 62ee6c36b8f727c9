"""The package's public surface."""
import lalic_core


def test_all_lists_every_lazy_export():
    assert set(lalic_core.__all__) == set(lalic_core._EXPORTS) | {"__version__"}


def test_submodules_import():
    for name in sorted(lalic_core._SUBMODULES):
        assert getattr(lalic_core, name).__name__ == f"lalic_core.{name}"
