"""The config schema (workflow/schemas/config.schema.yaml): the one place settings defaults live.

The Snakefile validates the whole config with ``snakemake.utils.validate``, which fills in the
schema's defaults; every ``jamun`` command receives one section and fills it here the same way
(a ``properties`` validator that sets each missing key's ``default`` before descending), so a
partial section means the same thing to the workflow and to the CLI. Integers must be ints here
(``2.0`` is refused where Snakemake would take it), so the settings never hold a float count.

Imports only the standard library, yaml and jsonschema: every stage parses its settings with it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

__all__ = ["SCHEMA_FILE", "full_config_settings", "load_schema", "section_settings"]

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
_TYPE_NAMES = {"null": "null", "integer": "an integer", "number": "a number", "string": "a string",
               "object": "a mapping", "array": "a list", "boolean": "true or false"}
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


@functools.cache
def load_schema() -> dict:
    """The parsed schema file, cached: read it, never modify it."""
    if not SCHEMA_FILE.is_file():
        raise FileNotFoundError(
            f"config schema {SCHEMA_FILE} not found; jamun reads its settings defaults from it, so run "
            "from a checkout or an editable install (pip install -e .) of the repository"
        )
    return yaml.safe_load(SCHEMA_FILE.read_text())


def section_settings(section: str, raw: Mapping | None, source: str) -> dict:
    """One top-level config section (a mapping: md, train, ...), validated and with the schema's
    defaults filled in.

    ``raw`` is not modified (None counts as an empty section). ``source`` names where the section
    came from (a file, ``--settings``) in the error message.

    Raises
    ------
    ValueError
        One line naming the source, the key path and the problem, e.g.
        ``config.yaml: sample.steps = -1: must be an integer >= 1``.
    """
    schema = load_schema()
    sections = [name for name, sub in schema["properties"].items() if sub.get("type") == "object"]
    if section not in sections:
        raise ValueError(f"no config section {section!r}; sections: {', '.join(sections)}")
    subschema = {"$schema": schema["$schema"], "$defs": schema["$defs"], **schema["properties"][section]}
    instance = copy.deepcopy(dict(raw)) if isinstance(raw, Mapping) else ({} if raw is None else raw)
    _validate(subschema, instance, (section,), source)
    return instance


def full_config_settings(config: Mapping, source: str) -> dict:
    """The whole config, validated and with the schema's defaults filled in (``config`` is not
    modified); ValueError as :func:`section_settings`."""
    instance = copy.deepcopy(dict(config))
    _validate(load_schema(), instance, (), source)
    return instance


@functools.cache
def _filling_validator(validator_class: type) -> type:
    """``validator_class`` extended to fill in defaults as Snakemake does (each missing key of a
    mapping gets a deep copy of its ``default`` before the mapping's properties are validated), and
    to take only ints as integers."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, properties: dict, instance: Any, schema: dict) -> Iterator:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    type_checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return validators.extend(validator_class, {"properties": properties}, type_checker=type_checker)


def _validate(schema: dict, instance: Any, prefix: tuple[str, ...], source: str) -> None:
    validator = _filling_validator(validators.validator_for(schema))(schema)
    # The shallowest error: a oneOf error stays whole rather than one of its failed branches.
    error = min(validator.iter_errors(instance), key=lambda e: len(e.path), default=None)
    if error is not None:
        raise ValueError(f"{source}: {_message(error, prefix, schema['$defs'])}")


def _message(error: jsonschema.ValidationError, prefix: tuple[str, ...], defs: dict) -> str:
    path = [*prefix, *map(str, error.absolute_path)]
    where = f"{'.'.join(path)} settings" if path else "the config"
    if error.validator == "additionalProperties":
        unknown = [repr(k) for k in error.instance if k not in error.schema["properties"]]
        keys = "key" if len(unknown) == 1 else "keys"
        return f"unknown {keys} {', '.join(unknown)} in {where}; valid keys: {', '.join(error.schema['properties'])}"
    if error.validator == "required":
        return f"missing required key {error.message.split(' ')[0]} in {where}"
    return f"{'.'.join(path)} = {_short(error.instance)}: must be {_describe(error.schema, defs)}"


def _describe(schema: dict, defs: dict) -> str:
    """What values ``schema`` accepts, in words: "an integer >= 1", "null or a number > 0"."""
    if "$ref" in schema:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    if "oneOf" in schema:
        return " or ".join(_describe(branch, defs) for branch in schema["oneOf"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = _TYPE_NAMES.get(schema.get("type"), "valid")
    if schema.get("minLength"):
        kind = "a non-empty string"
    limits = [f"{op} {schema[key]}" for key, op in _BOUNDS if key in schema]
    if "pattern" in schema:
        limits.append(f"matching {schema['pattern']}")
    return " ".join([kind, " and ".join(limits)]) if limits else kind


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
