"""A run's settings as one dataclass: its command line, its presets and the config it records.

Each field says, in its metadata (`setting`), its help text, its argparse options and whether it changes
the numbers a run produces (`result`): a resumed run must match the checkpoint in exactly those. The
parser is built from the fields, and its help shows every default (and each preset's value where it
differs), so help strings say what a setting does, never its value. A preset is a named partial
override of the defaults (`PRESETS`); flags given on the command line override the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from .folders import UsageError, to_json


def setting(default: Any = None, help: str = "", *, result: bool = False, flag: bool | str = True, group: str | None = None,
            path: bool = False, **argparse_options: Any) -> Any:  # fmt: skip
    """A settings field. `result`: it changes what the run computes (resume compares it). `flag`: the
    option's name (True: `--field-name`; False: no option, a value the run derives). `path`: recorded
    as an absolute path. `argparse_options`: `choices`, `nargs`, `metavar`, `const`, ... as argparse takes them."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("setting defaults must be immutable (a tuple, not a list)")
    metadata = dict(help=help, result=result, flag=flag, group=group, path=path, argparse=argparse_options)
    return dataclasses.field(default=default, metadata=metadata)


def _value_type(hint) -> tuple[type, bool]:
    """(item type, many) of a field's annotation: `int | None` -> (int, False); `tuple[float, ...]` -> (float, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class Settings:
    """Base of a script's settings. Subclasses declare fields with `setting`, `PRESETS`, and extend
    `complete` (fill derived values, check combinations; raise `UsageError`)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    # ---- what the run records -------------------------------------------------------------------
    @classmethod
    def result_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("result"))

    def to_config(self) -> dict[str, Any]:
        """Every field as JSON holds it (tuples as lists, paths absolute): the run's recorded config."""
        config = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("path") and value is not None:
                value = str(Path(value).resolve())
            config[f.name] = value
        return json.loads(to_json(config))

    def hparams(self) -> dict[str, int | float | str | bool]:
        """The config as trackers take it: scalars, anything else as its string."""
        return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in self.to_config().items()}

    # ---- the command line -----------------------------------------------------------------------
    @classmethod
    def _options(cls) -> list[dataclasses.Field]:
        """The command-line fields (made by `setting`), the subclass's first (the shared run options after them)."""
        own = [f for f in dataclasses.fields(cls) if f.metadata.get("flag", False)]
        shared = {f.name for f in dataclasses.fields(RunSettings)} if issubclass(cls, RunSettings) else set()
        return [f for f in own if f.name not in shared] + [f for f in own if f.name in shared]

    @classmethod
    def _help(cls, f: dataclasses.Field) -> str:
        help, default = f.metadata.get("help", ""), f.default
        shown = [] if default is None or default is False else [f"default: {_shown(default)}"]
        by_value: dict[str, list[str]] = {}
        for name, preset in cls.PRESETS.items():
            if preset.get(f.name) is not None and preset[f.name] != default:  # None: the help text says
                by_value.setdefault(_shown(preset[f.name]), []).append(name)
        shown += [f"{', '.join(names)}: {value}" for value, names in by_value.items()]
        return f"{help} ({'; '.join(shown)})" if shown else help

    @classmethod
    def parser(cls, description: str | None = None) -> argparse.ArgumentParser:
        """argparse for the fields; options left out are absent from the namespace (so a preset can fill them)."""
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                         argument_default=argparse.SUPPRESS)  # fmt: skip
        hints = typing.get_type_hints(cls)
        groups: dict[str | None, Any] = {None: parser}
        for f in cls._options():
            meta = f.metadata
            flag = meta["flag"] if isinstance(meta["flag"], str) else "--" + f.name.replace("_", "-")
            options = dict(dest=f.name, help=cls._help(f).replace("%", "%%"), **meta["argparse"])
            kind, many = _value_type(hints[f.name])
            if kind is bool:
                options["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
            else:
                options["type"] = kind
                if many:
                    options.setdefault("nargs", "+")
            group = meta["group"]
            if group not in groups:
                groups[group] = parser.add_argument_group(group)
            groups[group].add_argument(flag, **options)
        return parser

    @classmethod
    def choose_preset(cls, given: dict[str, Any]) -> str | None:
        """The preset the command line asks for (None: the defaults)."""
        return given.get("preset")

    @classmethod
    def parse(cls, argv: list[str] | None = None, description: str | None = None):
        """Settings from the command line: defaults, then the chosen preset, then the flags given; then
        `complete`. A `UsageError` ends as argparse's usage error (status 2)."""
        parser = cls.parser(description)
        given = vars(parser.parse_args(argv))
        hints = typing.get_type_hints(cls)
        given = {k: (tuple(v) if isinstance(v, list) and _value_type(hints[k])[1] else v) for k, v in given.items()}
        try:
            settings = cls.from_preset(cls.choose_preset(given), given)
            settings.complete(set(given))
        except UsageError as error:
            parser.error(error.message)
        return settings

    @classmethod
    def from_preset(cls, preset: str | None, overrides: dict[str, Any] | None = None):
        """The defaults, then preset `preset`'s values (recorded in a `preset` field if there is one), then `overrides`."""
        if preset is not None and preset not in cls.PRESETS:
            raise UsageError(f"no preset {preset!r}; choose one of {', '.join(cls.PRESETS)}")
        named = {"preset": preset} if "preset" in {f.name for f in dataclasses.fields(cls)} else {}
        return cls(**{**cls.PRESETS.get(preset, {}), **named, **(overrides or {})})

    def complete(self, given: set[str]) -> None:
        """Fill what depends on other settings and check combinations; `given`: the fields on the command line."""


@dataclasses.dataclass
class RunSettings(Settings):
    """The options every run has: its folder, resume, trackers, precision, workers, seed."""

    mixed_precision: str = setting("auto", "autocast (auto: bf16 on a GPU that has it, else none)", result=True,
                                   choices=["auto", "no", "bf16", "fp16"], group="optimization")  # fmt: skip
    seed: int = setting(0, "seed of every random draw", result=True, group="optimization")
    num_workers: int | None = setting(None, "DataLoader workers per process (default: the CPUs per local process, "
                                      "at most 8)", group="data")  # fmt: skip
    output_dir: str | None = setting(None, "the run's folder", group="outputs")
    overwrite: bool = setting(False, "replace an existing run folder of this script", group="outputs")
    resume: str | None = setting(None, "'auto' (the newest checkpoint in OUTPUT_DIR) or a checkpoint folder", nargs="?",
                                 const="auto", group="outputs")  # fmt: skip
    keep_checkpoints: int = setting(1, "newest checkpoints to keep (0: all)", group="outputs")
    report_to: str = setting("auto", "accelerate tracker: auto (tensorboard if installed), none, tensorboard, wandb, ...",
                             group="outputs")  # fmt: skip
    no_progress: bool = setting(False, "no progress bar", group="outputs")

    def complete(self, given: set[str]) -> None:
        super().complete(given)
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        if self.num_workers is not None and self.num_workers < 0:
            raise UsageError("--num-workers must be >= 0")


__all__ = ["setting", "Settings", "RunSettings"]
