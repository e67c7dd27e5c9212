"""The model registry: MLflow's tracking store and Model Registry, through `MlflowClient`.

By default both live under the home: `sqlite:///$CLLM_HOME/mlflow.db`, artifacts in
`$CLLM_HOME/mlartifacts/`; `MLFLOW_TRACKING_URI` points them at a server instead.

A model version is a model version directory (engine/checkpoint.py) logged as plain artifacts
of the MLflow run that trained it and registered from there with `create_model_version`: no
MLflow model flavour, so nothing is pickled. References name a version the way MLflow does:

    cllm@champion   cllm/7   cllm/latest      (each also with a `models:/` prefix)

mlflow is imported on first use: it takes seconds, and most of `cllm` never needs it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoint import is_checkpoint, load_model
from engine.errors import UserError

CHAMPION = "champion"
ARTIFACT_PATH = "model"  # where a run keeps its model version directory
METRIC_BATCH = 1000  # MLflow takes at most 1,000 metrics in one log_batch
_REF = re.compile(r"(?:models:/)?(?P<name>[\w.-]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+|latest))")


@dataclass(frozen=True)
class Version:
    """One registered model version, as `cllm models list` shows it."""

    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict
    aliases: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def shards(self) -> list[str]:
        return json.loads(self.tags.get("shards", "[]"))


def parse_ref(ref: str, default_name: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of `name@alias`, `name/7`, `name/latest`; a bare `7`, `latest`
    or `@alias` means the configured model."""
    if re.fullmatch(r"\d+|latest", ref):
        return default_name, None, ref
    if ref.startswith("@"):
        ref = default_name + ref
    match = _REF.fullmatch(ref)
    if not match:
        raise UserError(f"model reference {ref!r} is not valid: use NAME@ALIAS, NAME/VERSION or "
                        f"NAME/latest (e.g. {default_name}@{CHAMPION}), optionally after models:/")
    return match["name"], match["alias"], match["version"]


def is_registry_ref(text: str) -> bool:
    return text.startswith("models:/")


class Registry:
    def __init__(self, home: Path, name: str):
        self.home = Path(home).resolve()
        self.name = name
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"
        self._client = None

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            # Fail in seconds, not minutes of back-off, when a server is down: a person waits.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # MLflow would report usage to its makers; a pipeline talks only to its registry
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            for noisy in ("mlflow", "alembic"):  # schema migrations log at INFO on first use
                logging.getLogger(noisy).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:"):
                self.home.mkdir(parents=True, exist_ok=True)
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def _call(self, method: str, *args, missing: str | None = None, **kwargs):
        """One client call; MLflow's failures become one-line errors for the user.

        `missing` is the message for a thing that does not exist; None lets it through as
        LookupError for the caller to handle.
        """
        from mlflow.exceptions import MlflowException

        try:
            return getattr(self.client, method)(*args, **kwargs)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                if missing is None:
                    raise LookupError(str(e)) from None
                raise UserError(missing) from None
            if "Max retries exceeded" in str(e) or "Failed to establish" in str(e) \
                    or "timed out" in str(e).lower():
                raise UserError(f"the model registry at {self.uri} cannot be reached: start the "
                                "MLflow server or set MLFLOW_TRACKING_URI to one that runs "
                                "(unset, it is SQLite under CLLM_HOME)") from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"the model registry at {self.uri} failed: {first[:300]}") from None

    def _experiment_id(self) -> str:
        experiment = self._call("get_experiment_by_name", self.name)
        if experiment is not None:
            return experiment.experiment_id
        # a local store keeps its artifacts under the home, not in ./mlruns of the cwd
        location = None if self.uri.startswith("http") else (self.home / "mlartifacts").as_uri()
        return self._call("create_experiment", self.name, artifact_location=location)

    def _version(self, mv, aliases: dict[str, str]) -> Version:
        return Version(name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id,
                       tags=dict(mv.tags),
                       aliases=tuple(a for a, v in aliases.items() if str(v) == str(mv.version)))

    # --- reading ----------------------------------------------------------------------------

    def exists(self) -> bool:
        try:
            self._call("get_registered_model", self.name)
            return True
        except LookupError:
            return False

    def versions(self) -> list[Version]:
        """Every version of the model, oldest first (none when it is not registered yet)."""
        found = self._call("search_model_versions", f"name = '{self.name}'")
        aliases = self.aliases()
        return sorted((self._version(mv, aliases) for mv in found), key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        try:
            model = self._call("get_registered_model", self.name)
        except LookupError:
            return {}
        return {alias: str(version) for alias, version in model.aliases.items()}

    def champion(self) -> str | None:
        return self.aliases().get(CHAMPION)

    def resolve(self, ref: str) -> Version:
        """The version a reference names; one clear error for an unknown name, alias, version."""
        name, alias, version = parse_ref(ref, self.name)
        try:
            model = self._call("get_registered_model", name)
        except LookupError:
            raise UserError(f"no registered model {name!r} in the registry at {self.uri}: "
                            f"train one with `cllm train --from-scratch` (the configured model is "
                            f"{self.name!r})") from None
        if alias is not None:
            if alias not in model.aliases:
                known = ", ".join(sorted(model.aliases)) or "none"
                raise UserError(f"model {name} has no alias {alias!r} (aliases: {known})")
            version = str(model.aliases[alias])
        elif version == "latest":
            numbers = [int(mv.version) for mv in
                       self._call("search_model_versions", f"name = '{name}'")]
            if not numbers:
                raise UserError(f"model {name} has no versions yet")
            version = str(max(numbers))
        mv = self._call("get_model_version", name, version,
                        missing=f"model {name} has no version {version}: "
                        "`cllm models list` shows the versions")
        return self._version(mv, dict(model.aliases))

    def find(self, parent_version: str, shards: list[str]) -> Version | None:
        """The version already registered for this parent and these shards, if any."""
        key = json.dumps(sorted(shards))
        for v in self.versions():
            if v.tags.get("parent_version") == parent_version and \
                    json.dumps(sorted(v.shards)) == key:
                return v
        return None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every value of a run's metric, in step order (none if absent)."""
        found = self._call("get_metric_history", run_id, key)
        return sorted((m.step, m.value) for m in found)

    def pull(self, ref: str, dest: Path | None = None) -> Path:
        """Download a version's directory and check it loads; `dest` defaults to a cache
        under the home (`registry/<name>/<version>`), reused once complete."""
        version = self.resolve(ref)
        if dest is None:
            dest = self.home / "registry" / version.name / version.version
            if is_checkpoint(dest):
                return dest  # versions never change: a complete copy stays good
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{dest} exists and is not empty: pull into a new folder")
        import mlflow.artifacts

        tmp = dest.with_name(f".{dest.name}.pull{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            try:
                local = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=version.source, dst_path=str(tmp), tracking_uri=self.uri))
            except Exception as e:  # the stores raise OSError, MlflowException, ...: all one story
                raise UserError(f"the artifacts of {version.ref} cannot be downloaded from "
                                f"{version.source} ({type(e).__name__}): they are missing; "
                                "promote or pull another version") from None
            try:
                load_model(local)
            except UserError as e:
                raise UserError(f"the artifacts of {version.ref} are damaged ({e}); promote or "
                                "pull another version") from None
            local.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    # --- writing ----------------------------------------------------------------------------

    def log_training(self, model_dir: Path, params: dict, step_losses: list[float],
                     first_step: int, history: list[dict], metrics: dict) -> tuple[str, str]:
        """One MLflow run for one training: parameters, loss per step, the evaluations, and
        the model version directory as artifacts. Returns (run id, artifact URI of the model)."""
        from mlflow.entities import Metric, Param, RunStatus

        run = self._call("create_run", self._experiment_id(), run_name=model_dir.parent.name)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        entries = [Metric("train_loss", loss, now, first_step + i + 1)
                   for i, loss in enumerate(step_losses)]
        for h in history:
            entries += [Metric(f"eval_{k}", h[k], now, h["step"]) for k in h if k != "step"
                        and h[k] is not None]
        entries += [Metric(k, v, now, first_step + len(step_losses)) for k, v in metrics.items()
                    if v is not None]
        self._call("log_batch", run_id, params=[Param(k, str(v)) for k, v in params.items()])
        for i in range(0, len(entries), METRIC_BATCH):
            self._call("log_batch", run_id, metrics=entries[i : i + METRIC_BATCH])
        self._call("log_artifacts", run_id, str(model_dir), ARTIFACT_PATH)
        self._call("set_terminated", run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id, f"{run.info.artifact_uri}/{ARTIFACT_PATH}"

    def register(self, source: str, run_id: str, tags: dict) -> Version:
        if not self.exists():
            self._call("create_registered_model", self.name,
                       description="Crystalline language model versions (cllm update)")
        mv = self._call("create_model_version", self.name, source, run_id=run_id,
                        tags={k: str(v) for k, v in tags.items()})
        return self._version(mv, {})

    def set_tag(self, version: str, key: str, value: str) -> None:
        self._call("set_model_version_tag", self.name, version, key, value)

    def set_champion(self, version: str) -> None:
        self.resolve(f"{self.name}/{version}")  # an unknown version is one clear error
        self._call("set_registered_model_alias", self.name, CHAMPION, version)

    def rollback(self) -> tuple[Version, str]:
        """Move champion back to its parent version; returns (the version it left, the parent)."""
        champion = self.resolve(f"@{CHAMPION}")
        parent = champion.tags.get("parent_version")
        if not parent:
            raise UserError(f"champion {champion.ref} has no parent version to roll back to")
        self.set_champion(parent)
        return champion, parent
