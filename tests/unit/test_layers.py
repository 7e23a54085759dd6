"""The two ways the functions get their code: the bundled layer, or the slim one beside the
AWS-managed Powertools layer (PowertoolsLayerArn). Both must ship the same klingflow."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from klingflow_dev.bench import size
from klingflow_dev.sandbox import template
from tests.conftest import REPO

LAYERS = REPO / "layers"
# What the AWS-managed Powertools v3 layer brings, so the slim layer leaves them out.
MANAGED = {"aws-lambda-powertools", "pydantic"}


def _requirements(path: str) -> dict[str, str]:
    found = {}
    for raw in (LAYERS / path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower()
            found[name] = line
    return found


def test_the_slim_layer_ships_the_same_package_as_the_bundled_one() -> None:
    slim = LAYERS / "klingflow-slim" / "klingflow"
    assert slim.is_symlink() and slim.resolve() == (LAYERS / "klingflow" / "klingflow").resolve()


def test_both_layers_bundle_the_same_botocore_the_models_are_trimmed_from() -> None:
    # botocore is installed on its own (without the dependencies the runtime has), by both
    slim = LAYERS / "klingflow-slim" / "botocore.txt"
    assert slim.is_symlink() and slim.resolve() == (LAYERS / "klingflow" / "botocore.txt").resolve()
    assert set(_requirements("klingflow/botocore.txt")) == {"botocore"}
    assert "botocore" not in _requirements("klingflow/requirements.txt")


def test_the_slim_layer_needs_everything_but_what_the_managed_layer_brings() -> None:
    bundled, slim = (
        _requirements("klingflow/requirements.txt"),
        _requirements("klingflow-slim/requirements.txt"),
    )
    assert set(bundled) >= MANAGED
    assert slim == {name: pin for name, pin in bundled.items() if name not in MANAGED}


def test_every_function_gets_exactly_one_klingflow_layer_whichever_is_chosen() -> None:
    document = template.load(REPO / "template.yaml")
    layers = document["Globals"]["Function"]["Layers"]
    resources = document["Resources"]
    # given the two conditions, exactly one of the two layer resources exists
    assert resources["KlingflowLayer"]["Condition"] == "BundledPowertools"
    assert resources["KlingflowSlimLayer"]["Condition"] == "ManagedPowertools"
    assert resources["KlingflowSlimLayer"]["Properties"]["ContentUri"] == "layers/klingflow-slim/"
    # and the functions name the managed layer with the slim one, or the bundled one alone
    assert layers == [
        {"Fn::If": ["ManagedPowertools", {"Ref": "PowertoolsLayerArn"}, {"Ref": "KlingflowLayer"}]},
        {"Fn::If": ["ManagedPowertools", {"Ref": "KlingflowSlimLayer"}, {"Ref": "AWS::NoValue"}]},
    ]


def test_both_layers_are_built_by_one_makefile_that_ships_unchecked_bytecode(tmp_path: Path) -> None:
    # Given the template and the layers' Makefiles
    resources = template.load(REPO / "template.yaml")["Resources"]
    for logical in ("KlingflowLayer", "KlingflowSlimLayer"):
        assert resources[logical]["Metadata"]["BuildMethod"] == "makefile"
    slim = LAYERS / "klingflow-slim" / "Makefile"
    assert slim.is_symlink() and slim.resolve() == (LAYERS / "klingflow" / "Makefile").resolve()
    # When the Makefile builds the slim layer's package (its requirements need the package
    # index, which make bench's full build uses)
    built = size.build_layer(LAYERS / "klingflow-slim", tmp_path, dependencies=False)
    # Then every module has bytecode that Python uses without looking at the source's timestamp
    sources = sorted((LAYERS / "klingflow" / "klingflow").rglob("*.py"))
    tag = sys.implementation.cache_tag
    for source in sources:
        relative = source.relative_to(LAYERS / "klingflow")
        compiled = built / relative.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, relative  # hash-based, source not checked
    assert not (built / "klingflow").is_symlink()  # the package itself, not a link out of the zip
