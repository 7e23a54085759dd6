"""Read template.yaml the way CloudFormation does, far enough to build the sandbox from it.

The sandbox must never keep its own copy of the table's keys, the queues' redrive or the
functions' environment: it reads them here, so a change to the template is a change to the
sandbox too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_SHORT_TAGS = {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!FindInMap": "Fn::FindInMap",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Base64": "Fn::Base64",
    "!Condition": "Condition",
}


class _Loader(yaml.SafeLoader):
    pass


def _construct(tag: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    name = _SHORT_TAGS[tag]

    def build(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return build


for _tag in _SHORT_TAGS:
    _Loader.add_constructor(_tag, _construct(_tag))


def load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        document = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(document, dict)
    return document


# What `Ref: AWS::NoValue` evaluates to: the property (or list item) holding it disappears.
NO_VALUE: Any = object()


@dataclass
class Resolver:
    """Evaluates intrinsic functions against the sandbox's physical resources."""

    parameters: Mapping[str, Any]
    pseudo: Mapping[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    # The template's Conditions section, evaluated on first use.
    conditions: Mapping[str, Any] = field(default_factory=dict)
    _truth: dict[str, bool] = field(default_factory=dict)

    def condition(self, name: str) -> bool:
        if name not in self._truth:
            self._truth[name] = self._holds(self.conditions[name])
        return self._truth[name]

    def _holds(self, expression: Any) -> bool:
        ((key, argument),) = expression.items()
        if key == "Fn::Equals":
            left, right = (str(self(side)) for side in argument)
            return left == right
        if key == "Fn::Not":
            return not self._holds(argument[0])
        if key == "Fn::And":
            return all(self._holds(item) for item in argument)
        if key == "Fn::Or":
            return any(self._holds(item) for item in argument)
        if key == "Condition":
            return self.condition(str(argument))
        raise ValueError(f"the sandbox does not evaluate the condition {key}")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self(item) for item in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref" and argument == "AWS::NoValue":
                return NO_VALUE
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self(when_true if self.condition(name) else when_false)
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::GetAtt":
                logical, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
                return self._get_att(logical, attribute)
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::Join":
                separator, items = argument
                return str(separator).join(str(self(item)) for item in self(items))
            if key == "Fn::Select":
                index, items = argument
                return self(items)[int(self(index))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self(text)).split(separator)
            if key.startswith("Fn::"):
                raise ValueError(f"the sandbox does not evaluate {key}")
        return {k: v for k, v in ((k, self(v)) for k, v in value.items()) if v is not NO_VALUE}

    def _ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return str(self.parameters[name])
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"Ref {name}: not a parameter or a resource the sandbox created")

    def _get_att(self, logical: str, attribute: str) -> str:
        try:
            return self.attributes[(logical, attribute)]
        except KeyError:
            raise KeyError(f"GetAtt {logical}.{attribute}: not something the sandbox created") from None

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        resolved = {k: str(self(v)) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in resolved:
                return resolved[name]
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return self._get_att(logical, attribute)
            return self._ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, str(text))

    def references(self, value: Any) -> set[str]:
        """Logical ids a value refers to (to tell what it depends on)."""
        found: set[str] = set()
        if isinstance(value, list):
            for item in value:
                found |= self.references(item)
        elif isinstance(value, dict):
            for key, argument in value.items():
                if key == "Ref":
                    found.add(str(argument))
                elif key == "Fn::GetAtt":
                    found.add(argument[0] if isinstance(argument, list) else str(argument).split(".")[0])
                elif key == "Fn::Sub":
                    text = argument if isinstance(argument, str) else argument[0]
                    found |= {n.split(".")[0] for n in re.findall(r"\$\{([^}!]+)\}", text)}
                    if not isinstance(argument, str):
                        found |= self.references(argument[1])
                else:
                    found |= self.references(argument)
        return found


def parameter_values(declared: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter's value (defaults, then what was given), checked the way CloudFormation
    checks them before a deployment: unknown names, numbers, ranges, allowed values, lengths."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the template declares {sorted(declared)}")
    values: dict[str, str] = {}
    problems: list[str] = []
    for name, spec in declared.items():
        if name not in given and "Default" not in spec:
            problems.append(f"{name}: no value and no default")
            continue
        value = str(given.get(name, spec.get("Default")))
        values[name] = value
        problems.extend(f"{name}={value!r}: {problem}" for problem in _parameter_problems(spec, value))
    if problems:
        raise ValueError("invalid parameter values: " + "; ".join(problems))
    return values


def _parameter_problems(spec: Mapping[str, Any], value: str) -> list[str]:
    problems = []
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [str(v) for v in allowed]:
        problems.append(f"must be one of {allowed}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return [*problems, "must be a number"]
        if "MinValue" in spec and number < float(spec["MinValue"]):
            problems.append(f"must be at least {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            problems.append(f"must be at most {spec['MaxValue']}")
    else:
        if "MinLength" in spec and len(value) < int(spec["MinLength"]):
            problems.append(f"must be at least {spec['MinLength']} characters")
        if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
            problems.append(f"must be at most {spec['MaxLength']} characters")
        if "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value):
            problems.append(f"must match {spec['AllowedPattern']}")
    return problems


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`sam deploy --parameter-overrides` syntax: `Key=Value` or
    `ParameterKey=Key,ParameterValue=Value`, one pair per argument."""
    values = {}
    for pair in pairs:
        long_form = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", pair, re.DOTALL)
        if long_form:
            key, value = long_form.groups()
        elif "=" in pair:
            key, value = pair.split("=", 1)
        else:
            raise ValueError(f"{pair!r} is not Key=Value")
        values[key.strip()] = value
    return values
