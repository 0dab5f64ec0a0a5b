"""hdh-deliver is a distribution of its own: a data controller installs it without the hub's platform."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = REPO / "packages" / "hdh-deliver"
# What a provider must never have to install: the hub's platform and its heavy dependencies.
PLATFORM_MODULES = (
    "dagster",
    "dagster_dbt",
    "duckdb",
    "pyspark",
    "great_expectations",
    "dbt",
    "splink",
    "pandas",
    "pyarrow",
    "hdh_pipelines",
    "hdh_devtools",
)

# Imports every module of hdh_deliver in a fresh interpreter and lists what got loaded.
_PROBE = """
import json, pkgutil, sys, importlib
import hdh_deliver
for module in pkgutil.walk_packages(hdh_deliver.__path__, "hdh_deliver."):
    importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_every_module_loads_nothing_of_the_platform():
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True).stdout
    )
    assert "hdh_deliver.cli" in loaded and "hdh_deliver.provider" in loaded
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & set(PLATFORM_MODULES), sorted(roots & set(PLATFORM_MODULES))


def test_declares_only_cryptography_and_paramiko():
    project = tomllib.loads((DISTRIBUTION / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in project["dependencies"]}
    assert names == {"cryptography", "paramiko"}
    assert project["scripts"] == {
        "hdh-deliver": "hdh_deliver.cli:deliver_main",
        "hdh-keys": "hdh_deliver.cli:keys_main",
    }


def test_the_platform_depends_on_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(requirement.startswith("hdh-deliver") for requirement in project["dependencies"])
    assert not {"hdh-deliver", "hdh-keys"} & set(project["scripts"])
