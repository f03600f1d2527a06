"""The package list, found rather than written by hand; everything else is in pyproject.toml.

The repository root is the `streamstyle` package (pyproject's package-dir), so every folder below
it with an `__init__.py` is a subpackage `streamstyle.<folder>`; `tests/` is not shipped. The
build runs this file as __main__; imported as `streamstyle.setup` (a source checkout) it does
nothing, and the wheel leaves it out. tests/test_packaging.py builds the wheel, installs it and
imports every module.
"""

if __name__ == "__main__":
    from pathlib import Path

    from setuptools import find_packages, setup

    root = Path(__file__).resolve().parent
    subpackages = find_packages(where=str(root), exclude=["tests", "tests.*"])
    # script_name: distutils leaves the setup script out of its package's modules by this path.
    setup(packages=["streamstyle", *(f"streamstyle.{name}" for name in subpackages)], script_name="setup.py")
