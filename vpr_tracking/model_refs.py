"""A registered model named as MLflow names it (`models:/NAME/VERSION`, `models:/NAME@ALIAS`)
turned into a local checkpoint file, with its flags.json beside it: what `--resume` of every
verb reads. Downloaded once into a cache folder per version, checked against the version's
sha256 tag."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vpr_core.errors import UserError
from vpr_core.fileio import sha256_of
from vpr_core.models.checkpoints import BEST_FILE

from .names import MODEL_ARTIFACTS, MODELS_SCHEME, VersionTag
from .registry import aliases_of, registered_models
from .store import Store, as_store

MODELS_CACHE = Path("cache") / "models"


def parse_reference(text: str) -> tuple[str, str | None, str | None]:
    """'models:/NAME/VERSION' -> (NAME, VERSION, None); 'models:/NAME@ALIAS' -> (NAME, None,
    ALIAS); anything else is a `UserError`."""
    body = str(text)[len(MODELS_SCHEME):].strip("/")
    name, at, alias = body.partition("@")
    if at and name and alias and "/" not in alias:
        return name, None, alias
    name, slash, version = body.rpartition("/")
    if slash and name and version.isdigit():
        return name, version, None
    raise UserError(f"{text} is not a registered model; write models:/NAME/VERSION or "
                    f"models:/NAME@ALIAS")


def model_checkpoint(reference: str, tracking_uri: str | Store | None,
                     cache: Path | None = None) -> Path:
    """The local checkpoint of `reference` (models:/NAME/VERSION or models:/NAME@ALIAS) in
    the store of `tracking_uri` (which must exist), downloaded into `cache`/NAME/VERSION
    (default ./cache/models) unless already there; flags.json lies beside it."""
    store = as_store(tracking_uri)
    return version_checkpoint(store, registered_version(store, reference), cache)


def version_checkpoint(store: Store, found, cache: Path | None = None) -> Path:
    """`model_checkpoint` of a version already found (`registered_version`)."""
    name, version = found.name, str(found.version)
    folder = Path(cache or MODELS_CACHE).absolute() / name / version
    path = folder / BEST_FILE
    if not (path.is_file() and sha256_of(path) == found.tags.get(VersionTag.CHECKPOINT_SHA256)):
        _download(store, found, folder)
    return path


def registered_version(store: Store | str | None, reference: str):
    """MLflow's `ModelVersion` that `reference` names (checked: a `UserError` naming what
    there is when the model, the alias or the version does not exist); nothing downloaded."""
    store = as_store(store)
    name, version, alias = parse_reference(reference)
    version = _version_of(store, name, version, alias)
    return store._call(f"version {version} of {name}", store.client.get_model_version, name,
                       version)


def _version_of(store: Store, name: str, version: str | None, alias: str | None) -> str:
    """The version `version` or `alias` names: a `UserError` listing what there is when the
    model, the alias or the version does not exist."""
    models = registered_models(store, name)
    if not models:
        names = ", ".join(model.name for model in registered_models(store)) or "(none)"
        raise UserError(f"no registered model {name!r} in {store.uri}; registered models: "
                        f"{names} (check the name and --tracking-uri)")
    held = aliases_of(models)
    versions = sorted((str(v.version) for v in store._call(
        f"registered model {name}", store.client.search_model_versions,
        filter_string=f"name = '{name}'")), key=int)
    if alias is not None and alias not in held:
        listed = ", ".join(f"{a} (version {v})" for a, v in sorted(held.items())) or "none"
        raise UserError(f"registered model {name} has no alias {alias!r}; its aliases: {listed}; "
                        f"its versions: {', '.join(versions)} (models:/{name}/VERSION)")
    version = held[alias] if alias is not None else version
    if str(version) not in versions:
        raise UserError(f"registered model {name} has no version {version}; its versions: "
                        f"{', '.join(versions) or 'none'}")
    return str(version)


def _download(store: Store, found, folder: Path) -> None:
    """The checkpoint and flags.json of the version `found` into `folder`, whole or not at
    all (read from where its files are: MLflow's models:/ reader would take the global
    tracking URI, not this store's)."""
    from mlflow.artifacts import download_artifacts

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as scratch:
        fetched = Path(store._call(
            f"version {found.version} of {found.name}", download_artifacts,
            artifact_uri=f"{found.source.rstrip('/')}/{MODEL_ARTIFACTS}", dst_path=scratch,
            tracking_uri=store.uri))
        shutil.rmtree(folder, ignore_errors=True)
        fetched.rename(folder)
