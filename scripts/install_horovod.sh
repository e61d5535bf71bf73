#!/usr/bin/env bash
# Install Horovod 0.28.1 (TensorFlow + MPI + Gloo) and mpi4py into the project virtualenv.
#
#   scripts/install_horovod.sh            # uses <repo>/.venv/bin/python
#   PYTHON=/path/to/python scripts/install_horovod.sh
#
# Why this script exists: `pip install horovod==0.28.1` (the latest release, 2023) does not build
# against TensorFlow 2.21. Its horovod/tensorflow/xla_mpi_ops.cc includes XLA headers that the TF
# wheel no longer ships. That file only provides XLA custom-call ops for GPUs, so we build the
# sdist without it. Everything else (mpi_ops.cc, MPI and Gloo controllers) compiles as is.
#
# The build takes about 10 minutes on 2 cores, and pip does not cache wheels that it builds from
# a local directory. So we build a wheel once into a cache keyed on the TensorFlow version (the
# extension links against libtensorflow_framework, so a wheel built for one TF version is no
# use with another) and install from that wheel on later runs.
#
# Environment:
#   PYTHON                  interpreter of the target venv (default: <repo>/.venv/bin/python)
#   HARNESS_CACHE_DIR       cache root (default: ${XDG_CACHE_HOME:-~/.cache}/harness)
#   HOROVOD_GPU_OPERATIONS  set it yourself to force a GPU build (NCCL or MPI); by default NCCL
#                           is used only when TensorFlow is a CUDA build and nvcc/CUDA is present
#   HOROVOD_FORCE_REBUILD=1 ignore the installed Horovod and the cached wheel
set -euo pipefail

HOROVOD_VERSION=0.28.1
APT_PACKAGES=(openmpi-bin libopenmpi-dev cmake g++ make)

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

log() { printf '[install_horovod] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[[ -x "$PYTHON" ]] || die "no python at $PYTHON (create the venv first, e.g. 'make install', or set PYTHON)"
PIP=("$PYTHON" -m pip)

# TensorFlow prints oneDNN/absl lines on every import; keep the log readable.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Open MPI refuses to start as root unless told so; CI runs as root.
if [[ "$(id -u)" == 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# ---------------------------------------------------------------------------------------------
# 1. Already done? Import check only (a few seconds), no rebuild.
# ---------------------------------------------------------------------------------------------
horovod_ok() {
    "$PYTHON" - "$HOROVOD_VERSION" >/dev/null 2>&1 <<'EOF'
import importlib.util, sys
import horovod
import horovod.tensorflow as hvd
assert horovod.__version__ == sys.argv[1], horovod.__version__
assert hvd.gloo_built() and hvd.mpi_built()
# mpi4py is only checked for presence: importing mpi4py.MPI would call MPI_Init.
assert importlib.util.find_spec("mpi4py") is not None
EOF
}

if [[ "${HOROVOD_FORCE_REBUILD:-0}" != 1 ]] && horovod_ok; then
    log "Horovod $HOROVOD_VERSION with TensorFlow, MPI and Gloo (and mpi4py) already installed for $PYTHON; nothing to do."
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 2. System packages: Open MPI (runtime and headers) and a C++ toolchain with CMake >= 3.13.
#    Debian's cmake (3.25 on Debian 12) is recent enough, so Horovod's setup.py does not try to
#    pip-install its own CMake.
# ---------------------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [[ "$(id -u)" != 0 ]]; then
        die "missing system packages: ${missing[*]}. Install them as root:
    apt-get update && apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    fi
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
else
    log "system packages present: ${APT_PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------------------------
# 3. Python-side build requirements. We build with --no-build-isolation so that CMake sees the
#    venv's TensorFlow; that means setuptools/wheel must be in the venv, and Horovod's
#    setup_requires (cloudpickle, psutil, pyyaml, packaging) must already be satisfied, or
#    setuptools would try to fetch them itself into ./.eggs.
# ---------------------------------------------------------------------------------------------
"${PIP[@]}" install --quiet setuptools wheel cloudpickle psutil pyyaml packaging

read -r TF_VERSION TF_CUDA PY_TAG < <("$PYTHON" -c '
import sys, tensorflow as tf
print(tf.__version__, int(tf.test.is_built_with_cuda()), "cp%d%d" % sys.version_info[:2])
' 2>/dev/null) || die "cannot import tensorflow with $PYTHON; install the project first"
log "TensorFlow $TF_VERSION (CUDA build: $TF_CUDA), Python tag $PY_TAG"

# GPU collectives: only meaningful when TensorFlow itself can place tensors on a GPU. A CUDA
# toolkit alone (nvcc on PATH next to tensorflow-cpu) would make the NCCL build fail for want of
# NCCL and gain nothing, so it is not enough on its own.
if [[ -z "${HOROVOD_GPU_OPERATIONS:-}" ]]; then
    if [[ "$TF_CUDA" == 1 ]] && { command -v nvcc >/dev/null || [[ -d "${CUDA_HOME:-/usr/local/cuda}" ]]; }; then
        export HOROVOD_GPU_OPERATIONS=NCCL
    elif command -v nvcc >/dev/null; then
        log "nvcc found but TensorFlow is a CPU-only build: building without GPU operations"
    fi
fi
VARIANT="cpu"
[[ -n "${HOROVOD_GPU_OPERATIONS:-}" ]] && VARIANT="gpu-$(tr '[:upper:]' '[:lower:]' <<<"$HOROVOD_GPU_OPERATIONS")"

CACHE_ROOT="${HARNESS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/harness}"
# One directory per (Horovod, TensorFlow, variant); the Python tag is in the wheel's file name.
WHEEL_DIR="$CACHE_ROOT/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$VARIANT"
SDIST_DIR="$CACHE_ROOT/sdist"
mkdir -p "$WHEEL_DIR" "$SDIST_DIR"

find_wheel() {
    compgen -G "$WHEEL_DIR/horovod-$HOROVOD_VERSION-$PY_TAG-*.whl" | head -n 1 || true
}

wheel="$(find_wheel)"
if [[ "${HOROVOD_FORCE_REBUILD:-0}" == 1 && -n "$wheel" ]]; then
    log "HOROVOD_FORCE_REBUILD=1: discarding cached $wheel"
    rm -f "$wheel"
    wheel=""
fi

if [[ -n "$wheel" ]]; then
    log "using cached wheel $wheel"
else
    # -----------------------------------------------------------------------------------------
    # 4. Build: download the sdist, drop xla_mpi_ops.cc from the TF build, build a wheel.
    # -----------------------------------------------------------------------------------------
    build_root="$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")"
    trap 'rm -rf "$build_root"' EXIT

    log "downloading horovod==$HOROVOD_VERSION sdist"
    "${PIP[@]}" download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$SDIST_DIR"
    sdist="$SDIST_DIR/horovod-$HOROVOD_VERSION.tar.gz"
    [[ -f "$sdist" ]] || die "pip download did not produce $sdist"
    tar -xzf "$sdist" -C "$build_root"
    src="$build_root/horovod-$HOROVOD_VERSION"

    cml="$src/horovod/tensorflow/CMakeLists.txt"
    xla_line='^[[:space:]]*list\(APPEND TF_SOURCES .*xla_mpi_ops\.cc'
    grep -Eq "$xla_line" "$cml" ||
        die "no 'list(APPEND TF_SOURCES ... xla_mpi_ops.cc' line in $cml: the sdist changed, re-check the patch"
    sed -E -i "/$xla_line/d" "$cml"
    if grep -q 'xla_mpi_ops' "$cml"; then
        die "xla_mpi_ops.cc is still referenced in $cml after patching"
    fi
    log "patched $cml: xla_mpi_ops.cc removed from TF_SOURCES"

    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
    export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    # Horovod's setup.py runs 'make -j8' unless MAKEFLAGS is set; each TF-including object
    # needs ~1-2 GB of RAM, so match the job count to the cores instead.
    export MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}"

    log "building the Horovod wheel (HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS:-none}, MAKEFLAGS=$MAKEFLAGS); about 10 minutes on 2 cores"
    start=$SECONDS
    # Build into the build dir first, move into the cache only on success, so an interrupted
    # build never leaves a half-written wheel that later runs would trust.
    "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$build_root/dist" "$src"
    built="$(compgen -G "$build_root/dist/horovod-$HOROVOD_VERSION-*.whl" | head -n 1 || true)"
    [[ -n "$built" ]] || die "pip wheel produced no horovod wheel"
    mv "$built" "$WHEEL_DIR/"
    wheel="$WHEEL_DIR/$(basename "$built")"
    log "built $wheel in $((SECONDS - start)) s"
fi

# ---------------------------------------------------------------------------------------------
# 5. Install Horovod from the wheel. --force-reinstall because a horovod 0.28.1 that is already
#    installed but broken (built for another TF version) would otherwise count as satisfied;
#    --no-deps because its runtime deps were installed in step 3. Then mpi4py for the
#    benchmarks (it builds against Debian's Open MPI through mpicc; pip caches that wheel).
# ---------------------------------------------------------------------------------------------
"${PIP[@]}" install --quiet --force-reinstall --no-deps "$wheel"
"${PIP[@]}" install --quiet mpi4py

# ---------------------------------------------------------------------------------------------
# 6. Verify: the import check again, and horovodrun's own view of what was built.
# ---------------------------------------------------------------------------------------------
horovodrun="$(dirname "$PYTHON")/horovodrun"
[[ -x "$horovodrun" ]] || die "horovodrun not found next to $PYTHON"
check="$("$horovodrun" --check-build 2>&1)" || die "horovodrun --check-build failed:
$check"
for item in TensorFlow MPI Gloo; do
    grep -Eq "\[X\] $item\b" <<<"$check" || die "horovodrun --check-build does not show $item:
$check"
done
horovod_ok || die "horovod.tensorflow does not import with MPI and Gloo after installing $wheel"

mpi4py_version="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("mpi4py"))')"
echo "Horovod $HOROVOD_VERSION installed for $PYTHON: TensorFlow $TF_VERSION, MPI and Gloo" \
    "(GPU ops: ${HOROVOD_GPU_OPERATIONS:-none}); mpi4py $mpi4py_version; wheel cached in $WHEEL_DIR"
