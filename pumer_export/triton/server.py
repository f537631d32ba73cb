"""Starting and stopping a Triton Inference Server on a pumer-export model repository.

The server binary comes from ``--tritonserver PATH``, then ``tritonserver`` on the PATH (e.g. NGC's image), then
``$PUMER_TRITON_ROOT`` (an unpacked ``nvidia-pytriton`` wheel), then the installed PyPI package ``nvidia-pytriton``,
which ships a Triton 2.51 server with the Python backend (its Python package pins ``numpy<2``: install it in a
serving environment, or unpack its wheel next to this project: only its files are used, never its Python code). For that server a backend directory is assembled with the Python backend stub of the
running interpreter's version. The Python models import pumer-export from this interpreter's site-packages, passed
as ``PUMER_TRITON_SITE``; TensorRT plans get the plugin library preloaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from ..errors import MissingDependencyError, PumerExportError

INSTALL_HINT = ("install a Triton server: pip install -e \".[serve]\" (the nvidia-pytriton package ships one; it "
                "pins numpy<2, so use a serving environment, or pip install --no-deps nvidia-pytriton==0.7.0), put "
                "tritonserver on the PATH, or pass --tritonserver PATH")


#: An unpacked nvidia-pytriton wheel (the folder holding ``pytriton/``), e.g. for CI without its numpy<2 pin.
ROOT_ENV = "PUMER_TRITON_ROOT"


def _pytriton_root() -> Path | None:
    unpacked = os.environ.get(ROOT_ENV)
    if unpacked:
        root = Path(unpacked) / "pytriton" / "tritonserver"
        if not (root / "bin" / "tritonserver").is_file():
            raise MissingDependencyError(f"${ROOT_ENV}={unpacked} holds no pytriton/tritonserver/bin/tritonserver; "
                                         "point it at an unpacked nvidia-pytriton wheel")
        return root
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def find_server(explicit: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """(tritonserver binary, the pytriton tree it came from or None)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise MissingDependencyError(f"--tritonserver {path} is not an executable file")
        return path, None
    found = shutil.which("tritonserver")
    if found:
        return Path(found), None
    root = _pytriton_root()
    if root is not None:
        return root / "bin" / "tritonserver", root
    raise MissingDependencyError(f"no Triton server found: {INSTALL_HINT}")


def python_backend_dir(pytriton_root: Path, into: Path) -> Path:
    """A backend directory whose Python backend uses the stub built for this interpreter's Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError(f"the Triton server package has no Python backend stub for Python {version}")
    python = into / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (pytriton_root / "backends" / "python").iterdir():
        if source.is_file():
            (python / source.name).symlink_to(source)
    (python / stub.name).symlink_to(stub)
    return into


def stub_python_home(stub: Path) -> str | None:
    """The prefix of the Python the backend stub is linked against (its libpython), so that its embedded
    interpreter loads that Python's standard library. Without it, the interpreter looks for ``python3`` on the PATH
    and, inside an activated virtual environment of another build of the same version (pyenv, conda), takes that
    build's standard library, whose extension modules do not match the stub's libpython."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        out = subprocess.run([ldd, str(stub)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for line in out.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and f"lib{version}" in parts[0]:
            library = Path(parts[1].split("(")[0].strip()).resolve()
            for prefix in library.parents:
                if (prefix / "lib" / version / "os.py").is_file():
                    return str(prefix)
    return None


def _leave_virtual_environments(env: dict[str, str]) -> None:
    """Take activated virtual environments out of the server's PATH: the stub's embedded interpreter finds
    ``python3`` on the PATH and would adopt that environment's ``pyvenv.cfg`` home (another Python build's
    extension modules). This interpreter's packages still reach the models through ``PUMER_TRITON_SITE``."""
    env.pop("VIRTUAL_ENV", None)
    entries = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in entries if p and not (Path(p).parent / "pyvenv.cfg").is_file())


def site_dirs() -> list[str]:
    """This interpreter's site-packages (where pumer-export and its dependencies are installed)."""
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and Path(user).is_dir():
        dirs.append(user)
    return dirs


def _uses_tensorrt(repo: Path) -> bool:
    return any("tensorrt_plan" in p.read_text() for p in repo.glob("*/config.pbtxt"))


def ready(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextlib.contextmanager
def running_server(repo: str | os.PathLike, *, http_port: int = 8000, grpc_port: int = 8001,
                   metrics_port: int = 8002, host: str = "127.0.0.1", tritonserver: str | None = None,
                   plugins: str | None = None, startup_timeout: float = 180.0,
                   log: str | os.PathLike | None = None) -> Iterator[subprocess.Popen]:
    """Start the server, wait until it is ready, yield the process, stop it (SIGTERM, then SIGKILL) afterwards."""
    repo = Path(repo).resolve()
    if not (repo / "pumer_vqa" / "config.pbtxt").is_file():
        raise PumerExportError(f"{repo} is not a pumer-export Triton repository (no pumer_vqa/config.pbtxt); write "
                               "one with `pumer-export triton EXPORT REPO`")
    binary, pytriton_root = find_server(tritonserver)
    if pytriton_root is not None:  # the bundled server has the Python backend only: say so before starting it
        platforms = sorted({platform for platform in ("onnxruntime_onnx", "tensorrt_plan")
                            for config in repo.glob("*/config.pbtxt") if platform in config.read_text()})
        if platforms:
            raise PumerExportError(
                f"{repo} needs Triton's {' and '.join(platforms)} backend, which the bundled server (nvidia-pytriton) "
                "lacks: serve it with a full Triton (e.g. NGC's image) through --tritonserver PATH, or write the "
                "repository with `pumer-export triton EXPORT REPO --backend python`")
    env = dict(os.environ)
    env["PUMER_TRITON_SITE"] = os.pathsep.join(site_dirs())
    if _uses_tensorrt(repo):
        from ..tensorrt.engine import find_plugins

        library = find_plugins(plugins)
        env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(library), env.get("LD_PRELOAD")]))
    with tempfile.TemporaryDirectory(prefix="pumer-triton-") as scratch:
        command = [str(binary), f"--model-repository={repo}", f"--http-port={http_port}",
                   f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}", f"--http-address={host}",
                   f"--grpc-address={host}", "--allow-metrics=true", "--exit-on-error=true"]
        if pytriton_root is not None:
            backends = python_backend_dir(pytriton_root, Path(scratch) / "backends")
            command.append(f"--backend-directory={backends}")
            home = stub_python_home(backends / "python" / "triton_python_backend_stub")
            if home:
                env["PYTHONHOME"] = home
            _leave_virtual_environments(env)
        where = f"the whole log: {log}" if log else "the whole log: --log FILE"
        log = log or Path(scratch) / "tritonserver.log"  # kept only while it runs: the reason of a failed start
        output = open(log, "ab")
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while not ready(http_port, host):
                if process.poll() is not None:
                    hint = f" ({_last_error(log).lstrip(': ') or 'no error line in its output'}; {where})"
                    raise PumerExportError(f"the Triton server exited with status {process.returncode} before it "
                                           f"was ready{hint}")
                if time.monotonic() > deadline:
                    raise PumerExportError(f"the Triton server was not ready after {startup_timeout:.0f} s")
                time.sleep(0.5)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            output.close()


def _last_error(log: str | os.PathLike) -> str:
    """``: <the log's last error line>`` (shortened), or "" when there is none."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if line.startswith("E") or "error" in line.lower()]
    return f": {errors[-1][:200]}" if errors else ""


def metrics(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """Triton's Prometheus metrics as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                continue
    return values


def average_batch_size(values: dict[str, float], model: str) -> float | None:
    """Inferences per execution of ``model`` (what the dynamic batcher formed)."""
    def total(name: str) -> float:
        return sum(v for k, v in values.items() if k.startswith(name + "{") and f'model="{model}"' in k)

    executions = total("nv_inference_exec_count")
    return total("nv_inference_count") / executions if executions else None
