"""OpenBLAS under MLX on Linux: a shim built on first use and bound before ``import mlx.core``.

The ``mlx[cpu]`` Linux wheel links a bundled reference BLAS, single-threaded and
slow. libmlx imports ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm`` by name,
so a library defining them that is loaded with ``RTLD_GLOBAL`` before libmlx takes
their place. ``scipy-openblas32`` ships OpenBLAS with ``scipy_``-prefixed symbols;
``data/blas_shim.c`` defines the plain names and forwards to it, sending one-row
products to ``sgemv``. The shim is compiled with the system C compiler once and
cached under ``$XDG_CACHE_HOME/mlxk2/blas``, keyed by the OpenBLAS version and the
shim's source.

:func:`ensure_blas` binds, imports mlx and checks the result: the symbol must
resolve to the shim (``dladdr``), MLX's matmuls must reach it (the shim counts its
calls) and agree with numpy. Any failure leaves MLX on its stock BLAS (the shim is
pointed back at it if it was already bound) and records why. ``MLXK2_BLAS=0``
turns the binding off. On macOS nothing happens: MLX uses Accelerate and Metal.

:func:`configured_blas` answers the same question without compiling, loading or
importing anything, for ``version``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_SWITCH = "MLXK2_BLAS"
OPENBLAS_DIST = "scipy-openblas32"
OPENBLAS_MODULE = "scipy_openblas32"
#: scipy-openblas prefixes every exported symbol with this.
SYMBOL_PREFIX = "scipy_"
OPENBLAS = "openblas"
STOCK = "stock"
ACCELERATE = "accelerate"
_BUILD_TIMEOUT_S = 120
#: Beside this module (package data); read as a file, since importlib.resources alone
#: would cost ``version`` more than its whole answer.
_SHIM_SOURCE = Path(__file__).with_name("data") / "blas_shim.c"


@dataclass(frozen=True)
class BlasStatus:
    """Which BLAS MLX's CPU matmuls use in this process, or would use.

    Attributes:
        backend: ``"openblas"``, ``"stock"`` (the wheel's reference BLAS) or
            ``"accelerate"`` (macOS).
        verified: True once MLX was seen calling through the shim with correct
            results; False for a configuration not checked in this process.
        library: The OpenBLAS file the symbols resolve to.
        version: The ``scipy-openblas32`` version.
        shim: The compiled shim's path (it may not exist yet before the first run).
        threads: OpenBLAS threads, once set.
        reason: Why the backend is stock (or why it is not yet verified).
    """

    backend: str
    verified: bool = False
    library: str | None = None
    version: str | None = None
    shim: str | None = None
    threads: int | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.backend == OPENBLAS and self.verified

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "verified": self.verified,
            "library": self.library,
            "version": self.version,
            "shim": self.shim,
            "threads": self.threads,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class _Setup:
    """Where OpenBLAS and its shim are, or why there is none to bind."""

    library: Path | None = None
    version: str | None = None
    shim: Path | None = None
    reason: str | None = None


class BlasBindError(RuntimeError):
    """The shim could not be built, loaded or verified; the text is the recorded reason."""


_lock = threading.Lock()
_bound: BlasStatus | None = None
_shim_lib: ctypes.CDLL | None = None
_openblas_lib: ctypes.CDLL | None = None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlxk2/blas`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlxk2" / "blas"


def _shim_source() -> bytes:
    return _SHIM_SOURCE.read_bytes()


def _setup() -> _Setup:
    """Locate OpenBLAS and name its shim, without importing or loading either."""
    if sys.platform == "darwin":
        return _Setup(reason="macOS: MLX uses Accelerate")
    if os.environ.get(ENV_SWITCH, "").strip() == "0":
        return _Setup(reason=f"turned off by {ENV_SWITCH}=0")
    spec = importlib.util.find_spec(OPENBLAS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return _Setup(reason=f"{OPENBLAS_DIST} is not installed")
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    libraries = sorted(lib_dir.glob("libscipy_openblas*.so*"))
    if not libraries:
        return _Setup(reason=f"{OPENBLAS_DIST} has no shared library in {lib_dir}")
    version = _installed_version(lib_dir.parent.parent)
    digest = hashlib.sha256(_shim_source()).hexdigest()[:12]
    shim = cache_dir() / f"blas_shim-{version}-{digest}.so"
    return _Setup(library=libraries[0], version=version, shim=shim)


def _installed_version(site: Path) -> str:
    """The version in ``scipy_openblas32-<version>.dist-info``: importlib.metadata's
    import alone would cost ``version`` more than the whole answer."""
    prefix = OPENBLAS_MODULE + "-"
    for entry in site.glob(f"{prefix}*.dist-info"):
        return entry.name[len(prefix):-len(".dist-info")]
    return "unknown"


def _record_path(shim: Path) -> Path:
    return shim.with_suffix(".json")


def configured_blas() -> BlasStatus:
    """What the next inference process will bind, and what the last one found.

    Cheap: nothing is compiled, loaded or imported. ``verified`` comes from the
    record the last binding in a process left next to the shim.
    """
    if sys.platform == "darwin":
        return BlasStatus(ACCELERATE, verified=False, reason="macOS: MLX uses Accelerate")
    setup = _setup()
    if setup.shim is None:
        return BlasStatus(STOCK, reason=setup.reason)
    status = BlasStatus(OPENBLAS, library=str(setup.library), version=setup.version,
                        shim=str(setup.shim),
                        reason=None if setup.shim.exists() else "shim is built on first run")
    try:
        record = json.loads(_record_path(setup.shim).read_text())
    except (OSError, ValueError):
        return status
    if not isinstance(record, dict):
        return status
    return BlasStatus(
        record.get("backend", OPENBLAS), verified=bool(record.get("verified")),
        library=record.get("library") or status.library, version=setup.version,
        shim=status.shim, threads=record.get("threads"), reason=record.get("reason"),
    )


def blas_status() -> BlasStatus | None:
    """The binding of this process, if :func:`ensure_blas` has run."""
    return _bound


def default_threads() -> int:
    """OpenBLAS threads when ``--threads`` is not given.

    ``OPENBLAS_NUM_THREADS`` if the user set it, else the CPUs this process may run
    on (``sched_getaffinity``: a container's or ``taskset``'s limit, not the host's).
    """
    text = os.environ.get("OPENBLAS_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def server_threads() -> int:
    """OpenBLAS threads for ``serve`` when ``--threads`` is not given: one CPU fewer.

    A server's event loop and its MLX worker's Python side (sampling, detokenising,
    streaming) run beside the BLAS threads. A BLAS thread they preempt stalls every
    thread of that call at its barrier, which on a busy machine costs more than the
    extra thread gains; ``run`` has no such neighbours and uses every CPU.
    ``OPENBLAS_NUM_THREADS`` still wins when set.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS", "").strip().isdigit():
        return default_threads()
    return max(1, default_threads() - 1)


def ensure_blas(threads: int | None = None) -> BlasStatus:
    """Bind OpenBLAS under MLX once per process, then import ``mlx.core`` and check it.

    Call it before anything imports mlx; later calls return the same status (and
    apply a new ``threads``). Never raises for a failed binding: MLX then keeps its
    stock BLAS and :attr:`BlasStatus.reason` says why.

    Args:
        threads: OpenBLAS threads (default: :func:`default_threads`).
    """
    global _bound
    with _lock:
        if _bound is None:
            _bound = _bind(threads or default_threads())
            _write_record(_bound)
        elif threads and _bound.active and threads != _bound.threads:
            _set_threads(threads)
            _bound = BlasStatus(**{**_bound.to_dict(), "threads": threads})
        return _bound


def _bind(threads: int) -> BlasStatus:
    if sys.platform == "darwin":
        return BlasStatus(ACCELERATE, reason="macOS: MLX uses Accelerate")
    setup = _setup()
    if setup.shim is None or setup.library is None:
        return BlasStatus(STOCK, reason=setup.reason)
    if "mlx.core" in sys.modules:
        return BlasStatus(STOCK, version=setup.version,
                          reason="mlx was imported before the BLAS binding")
    version, shim = setup.version, str(setup.shim)
    try:
        _load(setup)
    except BlasBindError as exc:
        return BlasStatus(STOCK, version=version, shim=shim, reason=str(exc))
    _set_threads(threads)
    try:
        library = _verify(setup)
    except BlasBindError as exc:
        return BlasStatus(STOCK, version=version, shim=shim,
                          reason=_point_back_at_stock(str(exc)))
    return BlasStatus(OPENBLAS, verified=True, library=library, version=version, shim=shim,
                      threads=threads)


def _build(shim: Path) -> None:
    """Compile the shim with the system C compiler, atomically into the cache."""
    shim.parent.mkdir(parents=True, exist_ok=True)
    source = shim.with_name(f".{shim.stem}.{os.getpid()}.c")
    partial = shim.with_name(f".{shim.stem}.{os.getpid()}.so")
    compiler = os.environ.get("CC") or "cc"
    try:
        source.write_bytes(_shim_source())
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(source)],
                       capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=True)
        os.replace(partial, shim)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        raise BlasBindError(f"cannot build the BLAS shim with {compiler}: "
                            f"{detail[0] if detail else exc}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise BlasBindError(f"cannot build the BLAS shim with {compiler}: {exc}") from exc
    finally:
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def _load(setup: _Setup) -> None:
    """Load OpenBLAS, then the shim with RTLD_GLOBAL, and point the shim at OpenBLAS.

    A cached shim that does not load (a truncated file) is rebuilt once.
    """
    global _shim_lib, _openblas_lib
    assert setup.shim is not None and setup.library is not None
    try:
        openblas = ctypes.CDLL(str(setup.library))
        targets = [_address(openblas, SYMBOL_PREFIX + name) for name in
                   ("cblas_sgemm", "cblas_sgemv", "cblas_dgemm", "cblas_cgemm")]
    except (OSError, AttributeError) as exc:
        raise BlasBindError(f"cannot load {setup.library.name}: {exc}") from exc
    if not setup.shim.exists():
        _build(setup.shim)
    try:
        shim = ctypes.CDLL(str(setup.shim), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        setup.shim.unlink(missing_ok=True)
        _build(setup.shim)
        try:
            shim = ctypes.CDLL(str(setup.shim), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise BlasBindError(f"cannot load the BLAS shim: {exc}") from exc
    try:
        shim.mlxk2_blas_shim_set.argtypes = [ctypes.c_void_p] * 4
        shim.mlxk2_blas_shim_set.restype = None
        for counter in (shim.mlxk2_blas_shim_sgemm_calls, shim.mlxk2_blas_shim_sgemv_routed):
            counter.argtypes = []
            counter.restype = ctypes.c_ulong
    except AttributeError as exc:
        raise BlasBindError(f"the BLAS shim lacks an entry point: {exc}") from exc
    shim.mlxk2_blas_shim_set(*targets)
    _shim_lib, _openblas_lib = shim, openblas


def _address(library: ctypes.CDLL, name: str) -> int:
    value = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    if not value:
        raise AttributeError(f"{name} has no address")
    return value


def _set_threads(threads: int) -> None:
    if _openblas_lib is None:
        return
    setter = getattr(_openblas_lib, SYMBOL_PREFIX + "openblas_set_num_threads", None)
    if setter is not None:
        setter.argtypes = [ctypes.c_int]
        setter.restype = None
        setter(threads)


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _defining_file(symbol: str) -> str | None:
    """The file that defines ``symbol`` in the global scope, which libmlx binds to."""
    process = ctypes.CDLL(None)
    try:
        address = _address(process, symbol)
    except AttributeError:
        return None
    info = _DlInfo()
    dladdr = process.dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(bytes(info.dli_fname).decode())


def _verify(setup: _Setup) -> str:
    """Import mlx and prove its matmuls go through the shim and match numpy.

    Returns:
        The OpenBLAS library file.

    Raises:
        BlasBindError: the symbol resolves elsewhere, MLX never calls the shim, or a
            product disagrees with numpy.
    """
    assert _shim_lib is not None and setup.shim is not None and setup.library is not None
    resolved = _defining_file("cblas_sgemm")
    if resolved != os.path.realpath(setup.shim):
        raise BlasBindError(f"cblas_sgemm resolves to {resolved}, not the shim")
    import mlx.core as mx
    import numpy as np

    calls = _shim_lib.mlxk2_blas_shim_sgemm_calls()
    routed = _shim_lib.mlxk2_blas_shim_sgemv_routed()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((33, 70), dtype=np.float32)
    b = rng.standard_normal((70, 45), dtype=np.float32)
    x = rng.standard_normal((1, 70), dtype=np.float32)
    w = rng.standard_normal((45, 70), dtype=np.float32)
    on_cpu = mx.cpu
    products = [
        (mx.matmul(mx.array(a), mx.array(b), stream=on_cpu), a @ b),
        (mx.matmul(mx.array(x), mx.array(w).T, stream=on_cpu), x @ w.T),  # decode: x @ W.T
        (mx.matmul(mx.array(x), mx.array(b), stream=on_cpu), x @ b),
    ]
    mx.eval([got for got, _ in products])
    if _shim_lib.mlxk2_blas_shim_sgemm_calls() - calls < len(products):
        raise BlasBindError("MLX's matmuls do not reach the BLAS shim")
    if _shim_lib.mlxk2_blas_shim_sgemv_routed() - routed < 2:
        raise BlasBindError("one-row products do not reach sgemv")
    for got, want in products:
        # float32 sums of 70 products of unit normals: reordering moves them by ~1e-6.
        if not np.allclose(np.array(got), want, rtol=1e-4, atol=1e-4):
            raise BlasBindError("OpenBLAS results disagree with numpy")
    return os.path.realpath(setup.library)


def _point_back_at_stock(reason: str) -> str:
    """After a failed check, send the shim's calls to the wheel's own BLAS."""
    if _shim_lib is None:
        return reason
    stock = _stock_library()
    try:
        if stock is None:
            raise OSError("the wheel's BLAS library is not found")
        library = ctypes.CDLL(str(stock))
        targets = [_address(library, name) for name in ("cblas_sgemm", "cblas_dgemm",
                                                        "cblas_cgemm")]
    except (OSError, AttributeError) as exc:
        return f"{reason}; and cannot return to the stock BLAS: {exc}"
    sgemm, dgemm, cgemm = targets
    _shim_lib.mlxk2_blas_shim_set(sgemm, None, dgemm, cgemm)
    return reason


def _stock_library() -> Path | None:
    """The reference BLAS the ``mlx[cpu]`` wheel bundles (``mlx_cpu.libs/libblas-*``)."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    found = sorted((site / "mlx_cpu.libs").glob("libblas*.so*"))
    return found[0] if found else None


def _write_record(status: BlasStatus) -> None:
    """Leave the outcome next to the shim, for ``version`` to report."""
    if status.shim is None:
        return
    # A read-only cache only costs ``version`` its "verified" field.
    with contextlib.suppress(OSError):
        _record_path(Path(status.shim)).write_text(json.dumps(status.to_dict()) + "\n")
