"""Settings are validated at cold start and name what is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from klingflow import runtime
from klingflow import settings as settings_module
from klingflow.settings import ArchiveSettings, SubmitSettings
from klingflow_dev.sandbox import template
from tests.conftest import REPO

BASE = {"JOBS_TABLE": "jobs", "BUCKET": "b", "EVENT_BUS": "bus"}


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(ValidationError, match="CALLBACK_SECRET_ARN"):
        SubmitSettings.from_env({**BASE, "PROVIDER_SECRET_ARN": "arn", "API_URL_PARAMETER": "/p"})


def test_provider_credentials_need_a_source() -> None:
    with pytest.raises(ValidationError, match="PROVIDER_SECRET_ARN"):
        ArchiveSettings.from_env(BASE)


def test_provider_credentials_can_come_from_a_file_or_the_environment_locally(tmp_path: Path) -> None:
    keys = {"kling": {"access_key": "ak", "secret_key": "sk"}}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(keys))
    from_file = ArchiveSettings.from_env({**BASE, "PROVIDER_CREDENTIALS_FILE": str(path)})
    from_env = ArchiveSettings.from_env({**BASE, "PROVIDER_CREDENTIALS": json.dumps(keys)})
    for settings in (from_file, from_env):
        lookup = runtime.provider_credentials(settings)
        assert lookup("kling") == {"access_key": "ak", "secret_key": "sk"}
        assert lookup("evolink") == {}


def test_overrides_must_be_json() -> None:
    with pytest.raises(ValidationError, match="PROVIDER_OVERRIDES"):
        ArchiveSettings.from_env({**BASE, "PROVIDER_SECRET_ARN": "arn", "PROVIDER_OVERRIDES": "{not json"})


def test_every_setting_is_in_docs_configuration_md() -> None:
    """A variable a function reads is documented (name, functions, default, meaning)."""
    documented = (REPO / "docs" / "configuration.md").read_text()
    classes = [
        cls for cls in vars(settings_module).values() if isinstance(cls, type) and issubclass(cls, BaseModel)
    ]
    names = {name.upper() for cls in classes if cls is not BaseModel for name in cls.model_fields}
    missing = sorted(names - set(re.findall(r"`([A-Z0-9_]+)`", documented)))
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_the_tools_give_the_layer_the_templates_service_name_before_importing_it() -> None:
    import klingflow_dev  # noqa: PLC0415 (the module under test)
    from klingflow.flows.accept import logger  # noqa: PLC0415

    document = template.load(REPO / "template.yaml")
    service = document["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    assert service == klingflow_dev.SERVICE_NAME
    assert logger.service == service
