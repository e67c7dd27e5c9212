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

import getpass
import json
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.files import atomic_dir, file_sha256
from core.home import Home
from engine.checkpoint import FILES, is_checkpoint, load_model
from pipeline.registry_errors import absent, mapped, retried

CHAMPION = "champion"
DIGESTS = "artifact_sha256"  # the version tag: {file: sha256} of its directory, checked on pull
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


def who() -> str:
    """Who moves an alias: the registry's user if one is named, else this machine's."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


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


def _check_digests(version: Version, folder: Path) -> None:
    """Every file pulled is the one registered (a version registered before digests were
    recorded has none to check)."""
    expected = json.loads(version.tags.get(DIGESTS, "{}"))
    for name, digest in sorted(expected.items()):
        path = folder / name
        found = file_sha256(path) if path.is_file() else "missing"
        if found != digest:
            raise UserError(f"the artifacts of {version.ref} are not the ones registered "
                            f"({name}: sha256 {found[:16]}..., registered {digest[:16]}...): "
                            "the artifact store was changed; promote or pull another version")


class Registry:
    def __init__(self, home: Path | Home, name: str, attempts: int = 5, backoff: float = 1.0):
        """`attempts` (the setting `registry_attempts`) tries of a call the registry failed for
        a passing reason (down, restarting, overloaded, locked), waiting `backoff` seconds,
        doubled each time, between them; then `Unavailable`."""
        self.home = Home(home)
        self.name = name
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home.mlflow_db}"
        self.attempts, self.backoff = attempts, backoff
        self._client = None
        self.retrying = False  # inside a call being retried (pipeline/registry_errors.py)

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            # Our own retries (`retried`) decide what to try again: not MLflow's.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # MLflow would report usage to its makers; a pipeline talks only to its registry
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            for noisy in ("mlflow", "alembic"):  # schema migrations log at INFO on first use
                logging.getLogger(noisy).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:"):
                self.home.root.mkdir(parents=True, exist_ok=True)
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def _errors(self, missing: str | None = None):
        return mapped(self.uri, self.name, missing)

    def _experiment_id(self, name: str | None = None) -> str:
        """The experiment of the model's trainings (or another of its own), made on first use."""
        name = name or self.name
        with self._errors():
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            # a local store keeps its artifacts under the home, not in ./mlruns of the cwd
            location = None if self.uri.startswith("http") else self.home.mlartifacts.as_uri()
            return self.client.create_experiment(name, artifact_location=location)

    def _version(self, mv, aliases: dict[str, str]) -> Version:
        return Version(name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id,
                       tags=dict(mv.tags),
                       aliases=tuple(a for a, v in aliases.items() if str(v) == str(mv.version)))

    def _model(self, name: str):
        """The registered model; a UserError when there is none."""
        with self._errors(missing=f"no registered model {name!r} in the registry at {self.uri}: "
                          "train one with `cllm train --from-scratch` (the configured model is "
                          f"{self.name!r})"):
            return self.client.get_registered_model(name)

    # --- reading ----------------------------------------------------------------------------

    @retried
    def versions(self) -> list[Version]:
        """Every version of the model, oldest first (none when it is not registered yet)."""
        with self._errors():
            found = self.client.search_model_versions(f"name = '{self.name}'")
        aliases = self.aliases() if found else {}
        return sorted((self._version(mv, aliases) for mv in found), key=lambda v: int(v.version))

    @retried
    def aliases(self) -> dict[str, str]:
        with self._errors():
            try:
                model = self.client.get_registered_model(self.name)
            except Exception as e:
                if absent(e):
                    return {}
                raise
        return {alias: str(version) for alias, version in model.aliases.items()}

    @retried
    def by_alias(self, alias: str, name: str | None = None) -> Version | None:
        """The version an alias names, or None when the model or the alias does not exist."""
        with self._errors():
            try:
                mv = self.client.get_model_version_by_alias(name or self.name, alias)
            except Exception as e:
                if absent(e):
                    return None
                raise
        return self._version(mv, {a: mv.version for a in mv.aliases})

    def champion(self) -> str | None:
        found = self.by_alias(CHAMPION)
        return found.version if found else None

    @retried
    def resolve(self, ref: str) -> Version:
        """The version a reference names; one clear error for an unknown name, alias, version."""
        name, alias, version = parse_ref(ref, self.name)
        if alias is not None:
            found = self.by_alias(alias, name)
            if found is None:
                known = ", ".join(sorted(self._model(name).aliases)) or "none"
                raise UserError(f"model {name} has no alias {alias!r} (aliases: {known})")
            return found
        model = self._model(name)
        if version == "latest":
            with self._errors():
                numbers = [int(mv.version) for mv in
                           self.client.search_model_versions(f"name = '{name}'")]
            if not numbers:
                raise UserError(f"model {name} has no versions yet")
            version = str(max(numbers))
        with self._errors(missing=f"model {name} has no version {version}: "
                          "`cllm models list` shows the versions"):
            mv = self.client.get_model_version(name, version)
        return self._version(mv, dict(model.aliases))

    def find(self, parent_version: str, shards: list[str]) -> Version | None:
        """The version already registered for this parent and these shards, if any."""
        key = json.dumps(sorted(shards))
        for v in self.versions():
            if v.tags.get("parent_version") == parent_version and \
                    json.dumps(sorted(v.shards)) == key:
                return v
        return None

    @retried
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every value of a run's metric, in step order (none if absent)."""
        with self._errors():
            found = self.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in found)

    @retried
    def pull(self, ref: str, dest: Path | None = None) -> Path:
        """Download a version's directory and check it loads; `dest` defaults to a cache
        under the home (`registry/<name>/<version>`), reused once complete."""
        version = self.resolve(ref)
        if dest is None:
            dest = self.home.pulled(version.name, version.version)
            if is_checkpoint(dest):
                return dest  # versions never change: a complete copy stays good
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{dest} exists and is not empty: pull into a new folder")
        import mlflow.artifacts

        with atomic_dir(dest, replace=False) as folder:  # whole, or nothing at `dest`
            try:
                local = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=version.source, dst_path=str(folder), tracking_uri=self.uri))
            except Exception as e:  # the stores raise OSError, MlflowException, ...: all one story
                raise UserError(f"the artifacts of {version.ref} cannot be downloaded from "
                                f"{version.source} ({type(e).__name__}): they are missing; "
                                "promote or pull another version") from None
            try:
                load_model(local)
            except UserError as e:
                raise UserError(f"the artifacts of {version.ref} are damaged ({e}); promote or "
                                "pull another version") from None
            _check_digests(version, local)  # one that still loads may have been changed too
            for file in local.iterdir():  # the artifacts arrive in a folder of their own
                file.rename(folder / file.name)
            local.rmdir()
        return dest

    # --- writing ----------------------------------------------------------------------------

    @retried
    def log_training(self, model_dir: Path, params: dict, step_losses: list[float],
                     first_step: int, history: list[dict], metrics: dict,
                     documents: dict[str, dict] | None = None) -> tuple[str, str]:
        """One MLflow run for one training: parameters, loss per step, the evaluations, the
        model version directory as artifacts, and `documents` (name: JSON-ready data) as JSON
        files beside it. Returns (run id, artifact URI of the model)."""
        from mlflow.entities import Metric, Param, RunStatus

        experiment = self._experiment_id()
        now = int(time.time() * 1000)
        entries = [Metric("train_loss", loss, now, first_step + i + 1)
                   for i, loss in enumerate(step_losses)]
        for h in history:
            entries += [Metric(f"eval_{k}", h[k], now, h["step"]) for k in h if k != "step"
                        and h[k] is not None]
        entries += [Metric(k, v, now, first_step + len(step_losses)) for k, v in metrics.items()
                    if v is not None]
        with self._errors():
            run = self.client.create_run(experiment, run_name=model_dir.parent.name)
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            for i in range(0, len(entries), METRIC_BATCH):
                self.client.log_batch(run_id, metrics=entries[i : i + METRIC_BATCH])
            self.client.log_artifacts(run_id, str(model_dir), ARTIFACT_PATH)
            with tempfile.TemporaryDirectory() as folder:
                for name, data in (documents or {}).items():
                    (Path(folder) / name).write_text(json.dumps(data, indent=2))
                    self.client.log_artifact(run_id, str(Path(folder) / name))
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id, f"{run.info.artifact_uri}/{ARTIFACT_PATH}"

    @retried
    def run_json(self, run_id: str, name: str) -> dict | None:
        """A JSON file logged with a run (`log_training`'s documents), or None."""
        import mlflow.artifacts

        with self._errors():
            if name not in {a.path for a in self.client.list_artifacts(run_id)}:
                return None
            with tempfile.TemporaryDirectory() as folder:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=folder, tracking_uri=self.uri)
                return json.loads(Path(path).read_text())

    @retried
    def register(self, source: str, run_id: str, tags: dict, model_dir: Path) -> Version:
        """A version of the model from a run's artifacts, with its tags and the sha256 of each
        file of `model_dir` (what `pull` checks). Once per run, retries included."""
        digests = {name: file_sha256(model_dir / name) for name in FILES}
        with self._errors():
            for mv in self.client.search_model_versions(f"run_id = '{run_id}'"):
                return self._version(mv, {})  # a retry of a call that did register it
            try:
                self.client.create_registered_model(
                    self.name, description="Crystalline language model versions (cllm update)")
            except Exception as e:
                if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
            tags = tags | {DIGESTS: json.dumps(digests, sort_keys=True)}
            mv = self.client.create_model_version(self.name, source, run_id=run_id,
                                                  tags={k: str(v) for k, v in tags.items()})
        return self._version(mv, {})

    @retried
    def move_alias(self, alias: str, version: str, reason: str) -> None:
        """Point `alias` at `version` and record the move in the history (`history`): who,
        when, from which version to which, and why (`reason`: gate, promote, rollback)."""
        self.resolve(f"{self.name}/{version}")  # an unknown version is one clear error
        left = self.by_alias(alias)
        with self._errors():
            self.client.set_registered_model_alias(self.name, alias, version)
            run = self.client.create_run(
                self._experiment_id(self._history), run_name=f"{alias} -> {version}",
                tags={"alias": alias, "from": left.version if left else "", "to": version,
                      "reason": reason, "who": who()})
            self.client.set_terminated(run.info.run_id)

    def set_champion(self, version: str, reason: str = "promote") -> None:
        self.move_alias(CHAMPION, version, reason)

    def rollback(self) -> tuple[Version, str]:
        """Move champion back to its parent version; returns (the version it left, the parent)."""
        champion = self.resolve(f"@{CHAMPION}")
        parent = champion.tags.get("parent_version")
        if not parent:
            raise UserError(f"champion {champion.ref} has no parent version to roll back to")
        self.set_champion(parent, "rollback")
        return champion, parent

    @property
    def _history(self) -> str:
        return f"{self.name}: alias moves"

    @retried
    def history(self, alias: str | None = None) -> list[dict]:
        """Every recorded move of an alias (or of all), oldest first: when (Unix seconds),
        alias, from, to, reason, who."""
        with self._errors():
            experiment = self.client.get_experiment_by_name(self._history)
            if experiment is None:
                return []
            runs = self.client.search_runs(
                [experiment.experiment_id], f"tags.alias = '{alias}'" if alias else "",
                max_results=50_000, order_by=["attributes.start_time ASC"])
        return [{"when": r.info.start_time / 1000, **{k: r.data.tags.get(k, "") for k in
                 ("alias", "from", "to", "reason", "who")}} for r in runs]
