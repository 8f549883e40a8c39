#!/usr/bin/env bash
# One idempotent set-up of the whole real stack. A step whose inputs have not changed since it last
# succeeded is skipped (stamp files hold a hash of those inputs), so a second run takes seconds.
#
#   system  : Debian's OpenMPI (the one MPI of this project) and the Fashion-MNIST IDX files
#   venv    : $FRAMESTREAM_CACHE/venv with the pins of pyproject.toml (+ constraints.txt);
#             mpi4py is compiled against the system OpenMPI; .venv in the repo links to it
#   jars    : Kafka broker and Spark's Kafka source from Maven Central via the poms in java/
#   horovod : optional; PyPI's sdist patched for C++17, built once into a cached wheel
#   project : framestream itself, `pip install -e .` into the venv (console scripts, no PYTHONPATH)
#
# The venv and jars live in a cache outside the checkout so that a fresh clone (CI) reuses them.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${FRAMESTREAM_CACHE:-$HOME/.cache/framestream}
py=${FRAMESTREAM_PYTHON:-python3.11}
mkdir -p "$cache/stamps"
cd "$repo"

log() { printf '[setup %s] %s\n' "$(date +%T)" "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { [ -f "$cache/stamps/$1" ] && [ "$(cat "$cache/stamps/$1")" = "$2" ]; }
stamp() { echo "$2" > "$cache/stamps/$1"; }

# --- system packages (apt) ----------------------------------------------------------------------
# chromium + chromium-driver: the status page's browser tests (Selenium drives the system browser)
apt_pkgs=(openmpi-bin libopenmpi-dev dataset-fashion-mnist maven openjdk-17-jre-headless
          chromium chromium-driver)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- python venv --------------------------------------------------------------------------------
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip==25.3"
fi
ln -sfn "$venv" "$repo/.venv"

# The pins alone decide whether pip runs (a new pytest marker in pyproject.toml must not).
mapfile -t deps < <("$venv/bin/python" - <<'PY'
import tomllib
t = tomllib.load(open("pyproject.toml", "rb"))
p = t["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"] + t["build-system"]["requires"]))
PY
)
deps_key=$(hash_of <(printf '%s\n' "${deps[@]}") constraints.txt <("$venv/bin/python" -V) \
           <(mpicc --showme:version 2>&1))
if ! fresh pip "$deps_key"; then
  log "pip install ${#deps[@]} pinned packages (already-installed ones, torch included, are kept)"
  # mpi4py from source so that it is linked against the one MPI on this machine.
  "$venv/bin/pip" install --no-binary mpi4py -c constraints.txt "${deps[@]}"
  stamp pip "$deps_key"
else
  log "python packages up to date"
fi

# --- Ray's dashboard (opt-in) --------------------------------------------------------------------
# FRAMESTREAM_SETUP_RAY_DASHBOARD=1 installs ray[default]'s packages, pinned in pyproject.toml's
# ray-dashboard extra (34 packages: aiohttp, grpcio, opentelemetry, cryptography, ...); then
# FRAMESTREAM_RAY_DASHBOARD=1 gives a private Ray instance its dashboard, and the status page
# links to it. Off by default: the stream needs none of it.
if [ "${FRAMESTREAM_SETUP_RAY_DASHBOARD:-0}" = 1 ]; then
  mapfile -t dash < <("$venv/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open(
    "pyproject.toml", "rb"))["project"]["optional-dependencies"]["ray-dashboard"]))')
  dash_key=$(hash_of <(printf '%s\n' "${dash[@]}") constraints.txt <("$venv/bin/python" -V))
  if ! fresh ray-dashboard "$dash_key"; then
    log "pip install Ray's dashboard: ${#dash[@]} pinned packages (FRAMESTREAM_SETUP_RAY_DASHBOARD=1)"
    "$venv/bin/pip" install -q -c constraints.txt "${dash[@]}"
    stamp ray-dashboard "$dash_key"
  else
    log "Ray's dashboard packages up to date"
  fi
fi

# --- jars from Maven Central ----------------------------------------------------------------------
for name in kafka-broker spark-kafka; do
  pom="java/$name/pom.xml"
  key=$(hash_of "$pom")
  out="$cache/jars/$name"
  if ! fresh "jars-$name" "$key" || [ -z "$(ls -A "$out" 2>/dev/null)" ]; then
    log "mvn copy-dependencies $pom -> $out"
    rm -rf "$out"
    mkdir -p "$cache/logs"
    # Maven prints colour resets even when quiet: keep its output in a log, show it on failure.
    if ! mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
         -DoutputDirectory="$out" > "$cache/logs/mvn-$name.log" 2>&1; then
      cat "$cache/logs/mvn-$name.log" >&2
      exit 1
    fi
    stamp "jars-$name" "$key"
  else
    log "jars $name up to date ($(ls "$out" | wc -l) jars)"
  fi
done

# spark-submit in this venv gets Spark's Kafka source (spark.jars) and the venv's Python from its
# defaults file, so `spark-submit jobs/stream_classify.py` needs no --jars and no PYSPARK_PYTHON.
spark_conf=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "conf"))')
mkdir -p "$spark_conf"
{ echo "# Written by framestream scripts/setup.sh: Spark's Kafka source (java/spark-kafka/pom.xml)"
  echo "# and this venv's Python for the driver and the Python workers."
  echo "spark.jars $(ls "$cache/jars/spark-kafka"/*.jar | paste -sd, -)"
  echo "spark.pyspark.python $venv/bin/python"
  echo "spark.pyspark.driver.python $venv/bin/python"; } > "$spark_conf/spark-defaults.conf"

# `.venv/bin/spark-submit` without the venv activated: pyspark's bin/find-spark-home asks the
# `python3` on PATH for pyspark, which is not this venv's. Its find_spark_home.py looks first for a
# `spark-distribution` folder beside itself (SPARK-32017), so this link makes any python3 find
# the venv's Spark, activated or not.
ln -sfn "$(dirname "$spark_conf")" "$venv/bin/spark-distribution"

# --- Horovod (optional training backend) ---------------------------------------------------------
# PyPI's latest horovod (0.28.1) is an sdist that does not compile against torch >= 2.1 (C++14 vs
# C++17); patches/horovod-0.28.1-cxx17.patch fixes that. The wheel is built once (100-220 s on 2 cores)
# and cached under $cache/wheels, keyed on the patch, torch and MPI versions, so a warm set-up only
# checks a stamp. A failed build warns and set-up goes on: training then uses torch.distributed.
# FRAMESTREAM_HOROVOD=0 skips this step.
hvd_version=0.28.1
hvd_patch="patches/horovod-$hvd_version-cxx17.patch"
hvd_build_deps=("setuptools==69.5.1" "wheel==0.45.1" "cloudpickle==3.1.2")
hvd_installed() {
  [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("horovod"))' 2>/dev/null)" \
    = "$hvd_version" ]
}
install_horovod() (
  set -euo pipefail
  "$venv/bin/pip" install -q "${hvd_build_deps[@]}"
  wheel=$(ls "$hvd_wheels"/horovod-"$hvd_version"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
      sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends cmake g++
    fi
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "horovod==$hvd_version" -d "$tmp"
    tar -xzf "$tmp/horovod-$hvd_version.tar.gz" -C "$tmp"
    patch -d "$tmp/horovod-$hvd_version" -p1 < "$repo/$hvd_patch"
    start=$SECONDS
    env HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
        HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 MAKEFLAGS="-j$(nproc)" \
        "$venv/bin/pip" wheel --no-build-isolation --no-deps --no-cache-dir -w "$tmp/dist" \
        "$tmp/horovod-$hvd_version"
    echo "horovod wheel built in $((SECONDS - start)) s"
    mkdir -p "$hvd_wheels"
    mv "$tmp"/dist/horovod-*.whl "$hvd_wheels/"
    wheel=$(ls "$hvd_wheels"/horovod-"$hvd_version"-*.whl | head -n 1)
  fi
  "$venv/bin/pip" install -q --no-deps --force-reinstall "$wheel"
  "$venv/bin/python" -c 'import horovod.torch'
  "$venv/bin/horovodrun" --check-build
)
if [ "${FRAMESTREAM_HOROVOD:-1}" = 0 ]; then
  log "horovod skipped (FRAMESTREAM_HOROVOD=0): training uses torch.distributed"
else
  torch_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')
  hvd_key=$(hash_of "$hvd_patch" <(echo "horovod $hvd_version torch $torch_version ${hvd_build_deps[*]}") \
                    <(mpicc --showme:version 2>&1))
  hvd_wheels="$cache/wheels/horovod-$hvd_key"
  if fresh horovod "$hvd_key" && hvd_installed; then
    log "horovod $hvd_version up to date"
  else
    mkdir -p "$cache/logs"
    log "horovod $hvd_version: installing (a cached wheel, else a 2-4 min build; log $cache/logs/horovod.log)"
    # Not `if install_horovod`: bash ignores `set -e` inside a function tested by `if`.
    set +e; install_horovod > "$cache/logs/horovod.log" 2>&1; hvd_rc=$?; set -e
    if [ "$hvd_rc" -eq 0 ]; then
      stamp horovod "$hvd_key"
      log "horovod $hvd_version ready ($(grep -o 'built in [0-9]* s' "$cache/logs/horovod.log" || echo 'cached wheel'))"
    else
      log "WARNING: horovod $hvd_version could not be installed; the torch.distributed backend is used."
      log "WARNING: see the last lines of $cache/logs/horovod.log:"
      tail -n 15 "$cache/logs/horovod.log" | sed 's/^/    /'
    fi
  fi
fi

# --- the project itself ----------------------------------------------------------------------
# Editable, so ranks, Spark's Python workers and the console scripts (framestream-*) import this
# checkout's packages from the venv with no PYTHONPATH. The venv is shared by every checkout (CI
# clones to a fresh path each time), so the install is re-made when it points elsewhere or
# pyproject.toml changed: a few seconds, no dependency resolution (--no-deps; the pins are above),
# no download (--no-build-isolation: the venv's pinned setuptools builds it).
installed_from() {
  "$venv/bin/python" - <<'PY' 2>/dev/null || true
import json, importlib.metadata as m, urllib.parse, urllib.request
url = json.loads(m.distribution("framestream").read_text("direct_url.json") or "{}").get("url", "")
print(urllib.request.url2pathname(urllib.parse.urlparse(url).path) if url.startswith("file:") else "")
PY
}
proj_key=$(hash_of pyproject.toml <(echo "$repo"))
if fresh project "$proj_key" && [ "$(installed_from)" = "$repo" ]; then
  log "framestream installed from $repo"
else
  log "pip install -e $repo (framestream, editable)"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$repo"
  stamp project "$proj_key"
fi

log "ready: venv $venv, jars $cache/jars"
