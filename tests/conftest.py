"""The fixtures every test module may use (an empty home, the demo site, an empty registry),
and running the real `cllm` command line as a subprocess."""

import faulthandler
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLLM = Path(sys.executable).with_name("cllm")
TEXT = ROOT / "data" / "text"


def cllm_env(home: Path, env: dict | None = None) -> dict:
    """The environment a `cllm` process of a test runs in: this one's without its CLLM_*
    settings (OPENBLAS_CORETYPE and the like choose the kernels, and so the last bits of every
    sum), CLLM_HOME=home, then `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")}
    return full_env | {"CLLM_HOME": str(home)} | (env or {})


def run_cllm(*args, home: Path, env: dict | None = None, check: bool = True, **kwargs):
    """Run `cllm ARGS...` with CLLM_HOME=home; returns the CompletedProcess."""
    full_env = cllm_env(home, env)
    result = subprocess.run([str(CLLM), *map(str, args)], env=full_env, capture_output=True,
                            text=True, cwd=kwargs.pop("cwd", home), **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"cllm {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
    return result


def job_processes(home: Path) -> dict[int, dict]:
    """The processes running with CLLM_HOME=home in their environment (a crawl and its
    workers, an MPI launcher and its ranks, ...): pid -> environment."""
    found = {}
    marker = f"CLLM_HOME={home}".encode()
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and marker in env:
            found[int(proc.name)] = dict(e.decode(errors="replace").partition("=")[::2]
                                         for e in env if b"=" in e)
    return found


@pytest.fixture
def home(tmp_path):
    """An empty CLLM_HOME."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def site():
    """The embedded demo site (data/site/) on a free 127.0.0.1 port."""
    from crawler.site import SITE, SiteServer

    server = SiteServer([SITE])
    yield server
    server.close()


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory):
    """An MLflow SQLite store with its schema and nothing in it, for `new_home` to copy."""
    from continual_kit import empty_registry

    return empty_registry(tmp_path_factory.mktemp("registry-template"))


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(megabytes)`: a folder on a tmpfs of that size, to fill up (unmounted at the
    end); the test is skipped where mounting is not permitted."""
    mounts = []

    def make(megabytes: float) -> Path:
        path = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(megabytes * 1024)}k",
                                  "tmpfs", str(path)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)



@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of its own (pipeline/services.py) on a free port, for the session;
    skipped where PostgreSQL is not installed."""
    import tempfile

    from pipeline.services import POSTGRES_BIN, Postgres

    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL is not installed ({POSTGRES_BIN})")
    folder = Path(tempfile.mkdtemp(prefix="cllm-pg-"))
    folder.chmod(0o755)  # PostgreSQL's own user must reach it
    server = Postgres(folder / "postgres").start()
    yield server
    server.stop()
    subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """Each test that takes it runs twice: on the embedded SQLite files (""), and on a fresh
    database of the session's PostgreSQL server."""
    if request.param == "sqlite":
        return ""
    server = request.getfixturevalue("postgres")
    name = f"t{uuid.uuid4().hex[:12]}"
    server.create(name)
    return server.url(name, driver="postgresql")


GUARD_S = 240  # the hang guard: see tests/propertykit.py for why and why so long


@pytest.fixture(scope="session")
def real_stderr(pytestconfig):
    """The terminal's stderr, not pytest's capture of it (lost when the process ends)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")  # None under -p no:capture
    if capture:
        capture.suspend_global_capture()
    try:
        stream = os.fdopen(os.dup(2), "w")
    finally:
        if capture:
            capture.resume_global_capture()
    yield stream
    stream.close()


@pytest.fixture
def hang_guard(real_stderr):
    """Print every thread's stack and end the run if a test takes GUARD_S seconds. Not
    pytest-timeout: its signal and its timer thread both wait for the GIL, which a regex
    or a normalisation running in C keeps; faulthandler's watchdog is a thread of C."""
    faulthandler.dump_traceback_later(GUARD_S, exit=True, file=real_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
