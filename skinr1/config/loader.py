"""Load typed configs from YAML with `key=value` overrides (OmegaConf structured configs).

Every config is a tree of dataclasses with a docstring per field. Unknown keys, wrong types and
out-of-range values are errors that name the offending key, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid."""


def removed_key_errors(tree: Any, removed: Mapping[str, str], prefix: str = "") -> list[str]:
    """Messages for every dotted key of `tree` (nested dicts) that `removed` names (key -> what to
    set instead). Pure: unit-tested without YAML."""
    errors = []
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            if dotted in removed:
                errors.append(f"{dotted} is no longer a setting: {removed[dotted]}")
            errors += removed_key_errors(value, removed, dotted + ".")
    return errors


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                removed: Mapping[str, str] | None = None) -> T:
    """Build `schema` from defaults, then the YAML file at `path`, then `key=value` overrides.
    `removed` maps keys of older configs to what replaced them (a clear error instead of "unknown key")."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.structured(schema)
        bad = [item for item in overrides if "=" not in item]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        # A command-line value is a literal: `${oc.env:SECRET}` or `${other.key}` would copy secrets
        # or unrelated settings into fields that are logged and served.
        interpolated = [item for item in overrides if "${" in item.partition("=")[2]]
        if interpolated:
            raise ConfigError(f"overrides must be literal values, not interpolations ('${{...}}'): {interpolated}")
        given: list[Any] = [OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))] if overrides else []
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            loaded = OmegaConf.load(path)
            given.insert(0, OmegaConf.to_container(loaded))
        errors = [e for tree in given for e in removed_key_errors(tree, removed or {})]
        if errors:
            raise ConfigError("; ".join(errors))
        if path is not None:
            merged = OmegaConf.merge(merged, loaded)
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        _check_sections(merged, "")
        return OmegaConf.to_object(merged)  # runs each dataclass's __post_init__ validation
    except OmegaConfBaseException as error:
        # OmegaConf messages carry the full key and the offending value; keep the first paragraph.
        raise ConfigError(str(error).strip().split("\n\n")[0]) from None
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from None


def qualified_message(error: ValueError, path: str) -> str:
    """The message of `error`, raised while building the section at dotted `path`, with the full
    key: a `SettingError` of a reusable section names only its field ("zero_stage"), which becomes
    "sft.deepspeed.zero_stage"; keys that already start with the path are kept. Pure."""
    from skinr1.config.checks import SettingError

    if not path:
        return str(error)
    if isinstance(error, SettingError):
        key = error.key if error.key == path or error.key.startswith(path + ".") else f"{path}.{error.key}"
        return f"{key} {error.reason}"
    message = str(error)
    return message if message.startswith(path) else f"{path}: {message}"


def _check_sections(node: Any, path: str) -> None:
    """Build every nested dataclass section of `node`, innermost first, so that a value rejected by a
    section reused in several places (DeepSpeedSettings, LoraSettings...) is reported under its full key."""
    from omegaconf import DictConfig, OmegaConf

    for key in node:
        child = node[key]
        if not isinstance(child, DictConfig) or not dataclasses.is_dataclass(OmegaConf.get_type(child)):
            continue
        child_path = f"{path}.{key}" if path else str(key)
        _check_sections(child, child_path)
        try:
            OmegaConf.to_object(child)
        except ValueError as error:
            raise ConfigError(qualified_message(error, child_path)) from None


def to_yaml(config: Any) -> str:
    """The resolved config as YAML (saved next to every run for reproducibility)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(config))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def field_docs(schema: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the dataclass source (for `--help` and docs)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(schema)))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for current, following in zip(body, body[1:]):
        if (
            isinstance(current, ast.AnnAssign)
            and isinstance(current.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[current.target.id] = following.value.value.strip()
    return docs
