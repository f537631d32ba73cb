"""``pumer-export build-plugins``: argument checks and one-line errors (no build runs here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pumer_export import cli, plugins
from pumer_export.errors import MissingDependencyError, PumerExportError


def _main(capsys, *argv):
    code = cli.main(["build-plugins", *argv])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_registered_with_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["build-plugins", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--tensorrt-root", "--cuda-arch", "--build-dir", "--jobs"):
        assert option in out


@pytest.mark.parametrize("arch", ["8.7x", "sm_abc", "87;;foo", ","])
def test_bad_cuda_arch_is_one_line_error(capsys, arch, tmp_path):
    code, err = _main(capsys, "--cuda-arch", arch, "--build-dir", str(tmp_path / "b"))
    assert code == 2
    assert "--cuda-arch" in _one_line_error(err)
    assert not (tmp_path / "b").exists()


def test_bad_jobs(capsys, tmp_path):
    code, err = _main(capsys, "--jobs", "0", "--build-dir", str(tmp_path / "b"))
    assert code == 2
    assert "--jobs" in _one_line_error(err)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("87;90", "87;90"),
        ("87,90", "87;90"),
        ("sm_87 sm_90", "87;90"),
        ("8.7, 9.0", "87;90"),
        ("90a", "90a"),
        ("87-real;90", "87-real;90"),
        ("87,87", "87"),
        ("native", "native"),
        (None, None),
    ],
)
def test_parse_cuda_archs(value, expected):
    assert plugins.parse_cuda_archs(value) == expected


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named tools (symlinked), so the others are 'missing'."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not on PATH")
        (bindir / tool).symlink_to(found)
    return str(bindir)


def test_missing_nvcc(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_with(tmp_path, "cmake"))
    monkeypatch.delenv("CUDACXX", raising=False)
    code, err = _main(capsys, "--build-dir", str(tmp_path / "b"))
    assert code == 2
    assert _one_line_error(err) == (
        "error: CUDA toolkit not found: nvcc is not on PATH; install the CUDA toolkit or set CUDACXX"
    )


def test_missing_cmake(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_with(tmp_path))
    code, err = _main(capsys, "--build-dir", str(tmp_path / "b"))
    assert code == 2
    assert "CMake not found" in _one_line_error(err)


def test_tensorrt_root_must_exist(capsys, tmp_path):
    if shutil.which("cmake") is None or plugins.find_nvcc() is None:
        pytest.skip("cmake and nvcc are checked first")
    code, err = _main(capsys, "--tensorrt-root", str(tmp_path / "nope"), "--build-dir", str(tmp_path / "b"))
    assert code == 2
    assert "--tensorrt-root" in _one_line_error(err)


def test_source_dir_is_the_checkout():
    assert (plugins.source_dir() / "CMakeLists.txt").is_file()


def test_source_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(plugins.PLUGIN_SOURCE_ENV, str(tmp_path))
    # an empty folder is skipped in favour of the checkout
    assert plugins.source_dir() == Path(plugins.__file__).resolve().parent.parent / "plugins"


def test_find_plugin_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(plugins.PLUGIN_LIBRARY_ENV, raising=False)
    with pytest.raises(MissingDependencyError, match="build-plugins"):
        plugins.find_plugin_library()
    with pytest.raises(MissingDependencyError, match="not found"):
        plugins.find_plugin_library(tmp_path / "missing.so")
    lib = tmp_path / "lib" / plugins.PLUGIN_LIBRARY_NAME
    lib.parent.mkdir()
    lib.write_bytes(b"")
    assert plugins.find_plugin_library(lib) == lib.resolve()
    assert plugins.find_plugin_library(lib.parent) == lib.resolve()
    monkeypatch.setenv(plugins.PLUGIN_LIBRARY_ENV, str(lib))
    assert plugins.find_plugin_library() == lib.resolve()
    monkeypatch.setenv(plugins.PLUGIN_LIBRARY_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(MissingDependencyError, match=plugins.PLUGIN_LIBRARY_ENV):
        plugins.find_plugin_library()
    default = tmp_path / plugins.DEFAULT_BUILD_DIR / plugins.PLUGIN_LIBRARY_NAME
    default.parent.mkdir(parents=True)
    default.write_bytes(b"")
    assert plugins.find_plugin_library() == default.resolve()


def test_library_spec_hash_errors(tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(MissingDependencyError, match="cannot load"):
        plugins.library_spec_hash(bogus)
    libc = None
    for candidate in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6"):
        if os.path.exists(candidate):
            libc = candidate
            break
    if libc:
        with pytest.raises(PumerExportError, match="not a PuMer library"):
            plugins.library_spec_hash(libc)
