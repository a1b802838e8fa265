"""A setting is declared once: one field of a frozen config dataclass, made by `setting()`.

Its metadata (a `Setting`) says the flag and its aliases (the reference's spellings too), the
help, the values it may take and its roles. Everything else reads it: the flags of every
command (`vpr_core.arguments.add_settings`), what `--resume` restores (`restored`), the
MLflow params of a run (`RESTORED`/`LOGGED` fields), the keys a spec allows (`SPEC`), what a
sweep sets for each trial (`PER_TRIAL`), and the checks every config runs (`check`).
Only the standard library is imported here.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# ---- roles ------------------------------------------------------------------------------
RESTORED = "restored"  # `--resume` takes it from the run's flags.json unless a flag gives it
PER_TRIAL = "per_trial"  # a sweep sets it for each trial (paths, resume, workers)
LOGGED = "logged"  # an MLflow param of the runs made with it
SPEC = "spec"  # an experiment spec may set it (its `train` section, for training settings)

# ---- the groups flags are listed under in --help ----------------------------------------
DATA, MODEL, RUNTIME, TRAINING, COMPRESSION = "data", "model", "runtime", "training", \
    "compression"


@dataclass(frozen=True)
class Switch:
    """Another flag that gives the setting one value: `--fromscratch` is `--weights none`."""

    flag: str
    value: object
    help: str


@dataclass(frozen=True)
class Setting:
    """What a field says of itself besides its type and default.

    `flag`: None derives `--name-with-dashes`; "" gives no flag of its own (its switches
    only). `shown_default`: the default as help writes it, where the field's default (often
    None) does not say it. `only_with`: {other setting: value} under which alone the setting
    applies (SGD's momentum, a compression method's settings); given otherwise, it is refused.
    `minimum`: the least value allowed (`positive` excludes it).
    """

    help: str
    roles: frozenset = frozenset()
    group: str = RUNTIME
    flag: str | None = None
    aliases: tuple = ()
    switches: tuple = ()
    choices: tuple | None = None
    parse: Callable | None = None
    nargs: str | None = None
    metavar: str | None = None
    shown_default: str | None = None
    only_with: dict | None = None
    minimum: float | None = None
    positive: bool = False
    written: Callable | None = None  # how flags.json and MLflow write the value (a string)
    spec_key: str | None = None  # where an experiment spec holds it ("search.num_samples")
    formerly: tuple = ()  # names older flags.json files hold it under
    kinds: tuple | None = None  # the kinds of experiment spec it applies to (None: all)

    def flag_of(self, name: str) -> str | None:
        if self.flag == "":
            return None
        return self.flag or "--" + name.replace("_", "-")


def setting(default=dataclasses.MISSING, help: str = "", *,
            default_factory=dataclasses.MISSING, roles=(), **declared) -> dataclasses.Field:
    """A config field with its `Setting` (see there for the keyword arguments)."""
    meta = Setting(help=help, roles=frozenset(roles), **declared)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"setting": meta})


def redeclared(cls, name: str, default=dataclasses.MISSING, **changes) -> dataclasses.Field:
    """`cls`'s setting `name` for a config that needs another default, help or roles (eval's
    `arch` is the checkpoint's): one declaration, changed where it is redeclared."""
    base = field_of(cls, name)
    meta = dataclasses.replace(base.metadata["setting"], **changes)
    if default is dataclasses.MISSING:
        return dataclasses.field(default=base.default, default_factory=base.default_factory,
                                 metadata={"setting": meta})
    return dataclasses.field(default=default, metadata={"setting": meta})


# ---- reading the declarations -------------------------------------------------------------
def field_of(cls, name: str) -> dataclasses.Field:
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def declared(cls) -> Iterator[tuple[str, Setting]]:
    """(name, Setting) of every declared field of `cls`, in declaration order."""
    for item in dataclasses.fields(cls):
        if "setting" in item.metadata:
            yield item.name, item.metadata["setting"]


def setting_of(cls, name: str) -> Setting:
    return field_of(cls, name).metadata["setting"]


def names_with(cls, role: str) -> tuple[str, ...]:
    """The settings of `cls` that have `role`."""
    return tuple(name for name, meta in declared(cls) if role in meta.roles)


def default_of(cls, name: str):
    item = field_of(cls, name)
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def flag_name(cls, name: str) -> str:
    """How messages name a setting: its flag (else its first switch), with where a spec holds
    it when it is a spec's; else its name."""
    meta = setting_of(cls, name)
    flag = meta.flag_of(name)
    if flag is None and meta.switches:
        flag = meta.switches[0].flag
    if meta.spec_key:
        return f"{meta.spec_key} ({flag})" if flag else meta.spec_key
    return flag or name


def shown(value) -> str:
    """A value as help texts write it: 1e-4 (not 0.0001), 5 (not 5.0), a tuple as '1 32'."""
    if isinstance(value, (tuple, list)):
        return " ".join(shown(item) for item in value)
    if isinstance(value, float):
        if value and abs(value) < 1e-2:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, Path):
        return f"./{value}" if not value.is_absolute() else str(value)
    return str(value)


def default_text(cls, name: str) -> str:
    """The default of setting `name` as help writes it."""
    meta = setting_of(cls, name)
    if meta.shown_default is not None:
        return meta.shown_default
    return shown(default_of(cls, name))


# ---- building configs ---------------------------------------------------------------------
def restored(cls, flags: dict, given: dict) -> dict:
    """The values a resumed command starts from: the `RESTORED` settings of `cls` found in
    the run's `flags` (its flags.json), then `given` (what the command line says) over them.
    A restored setting that does not apply under the merged values (the SGD momentum of a run
    resumed with `--optim ADAM`) is dropped; a given one is left for `check` to refuse."""
    values = {}
    for name in names_with(cls, RESTORED):
        for key in (name, *setting_of(cls, name).formerly):
            if key in flags:
                values[name] = flags[key]
                break
    values.update(given)
    for name, meta in declared(cls):
        if name in values and name not in given and not applies(meta, values, cls):
            del values[name]
    return values


def applies(meta: Setting, values: dict, cls) -> bool:
    """Whether a setting applies under `values` (its `only_with` conditions hold)."""
    return conditions_hold(meta.only_with, values, cls)


def conditions_hold(only_with: dict | None, values: dict, cls) -> bool:
    """Whether `values` meet conditions `only_with` ({setting: wanted value or values}) of a
    setting of `cls`."""
    for other, wanted in (only_with or {}).items():
        value = values.get(other, default_of(cls, other))
        if value is None and hasattr(cls, "resolves_to"):
            value = cls.resolves_to(other, values)  # unset, it resolves by the others
        if value is None:
            continue  # not decided yet (eval: the checkpoint's aggregator)
        wanted = wanted if isinstance(wanted, tuple) else (wanted,)
        if isinstance(value, str):
            value, wanted = value.lower(), tuple(str(w).lower() for w in wanted)
        if value not in wanted:
            return False
    return True


def check(config) -> None:
    """The checks every declared setting of `config` gets: its choices, its least value, and
    that it applies (`only_with`) when it is set. Raises `UserError` naming the flag."""
    cls = type(config)
    values = {name: getattr(config, name) for name, _ in declared(cls)}
    for name, meta in declared(cls):
        value = values[name]
        if value is None:
            continue
        flag = flag_name(cls, name)
        if meta.parse is int and meta.nargs is None and (isinstance(value, bool)
                                                         or not isinstance(value, int)):
            raise UserError(f"{flag} must be an integer, got {value!r}")
        if meta.only_with and not applies(meta, values, cls):
            other, wanted = next(iter(meta.only_with.items()))
            other_flag = flag_name(cls, other)
            wanted = " or ".join(wanted) if isinstance(wanted, tuple) else wanted
            raise UserError(f"{flag} does not apply to {other_flag} {values[other]}: it applies "
                            f"to {other_flag} {wanted} only; leave it out")
        if meta.choices is not None and value not in meta.choices:
            raise UserError(f"{flag} {value!r} must be one of "
                            f"{', '.join(map(str, meta.choices))}")
        _check_bounds(flag, meta, value)


def _check_bounds(flag: str, meta: Setting, value) -> None:
    if meta.minimum is None and not meta.positive:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"{flag} must be a number, got {value!r}")
    least = meta.minimum if meta.minimum is not None else 0
    if meta.positive and not value > least:
        raise UserError(f"{flag} must be positive, got {value}")
    if meta.minimum == 0 and not isinstance(meta.minimum, int) and value < 0:
        raise UserError(f"{flag} must be 0 or more, got {value}")
    if meta.minimum is not None and value < meta.minimum:
        kind = "an integer" if isinstance(meta.minimum, int) else "a number"
        raise UserError(f"{flag} must be {kind} of at least {shown(meta.minimum)}, got "
                        f"{value!r}")
    if isinstance(meta.minimum, int) and not isinstance(value, int):
        raise UserError(f"{flag} must be an integer of at least {meta.minimum}, got {value!r}")


def plain(config) -> dict:
    """The declared settings of `config` as JSON-able values (paths as strings, tuples as
    lists): what flags.json records."""
    out = {}
    for name, meta in declared(type(config)):
        value = getattr(config, name)
        if meta.written is not None:
            value = meta.written(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out
