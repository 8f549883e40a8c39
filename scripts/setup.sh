#!/usr/bin/env bash
# One idempotent set-up of the whole real stack. A step whose inputs have not changed since it last
# succeeded is skipped (stamp files hold a hash of those inputs), so a second run takes seconds.
#
#   system  : Debian's OpenMPI (the one MPI of this project) and the Fashion-MNIST IDX files
#   venv    : $FRAMESTREAM_CACHE/venv with the pins of pyproject.toml (+ constraints.txt);
#             mpi4py is compiled against the system OpenMPI; .venv in the repo links to it
#   jars    : Kafka broker and Spark's Kafka source from Maven Central via the poms in java/
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
apt_pkgs=(openmpi-bin libopenmpi-dev dataset-fashion-mnist maven openjdk-17-jre-headless)
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

deps_key=$(hash_of pyproject.toml constraints.txt <("$venv/bin/python" -V) <(mpicc --showme:version 2>&1))
if ! fresh pip "$deps_key"; then
  mapfile -t deps < <("$venv/bin/python" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))
PY
)
  log "pip install ${#deps[@]} pinned packages (already-installed ones, torch included, are kept)"
  # mpi4py from source so that it is linked against the one MPI on this machine.
  "$venv/bin/pip" install --no-binary mpi4py -c constraints.txt "${deps[@]}"
  stamp pip "$deps_key"
else
  log "python packages up to date"
fi

# --- jars from Maven Central ----------------------------------------------------------------------
for name in kafka-broker spark-kafka; do
  pom="java/$name/pom.xml"
  key=$(hash_of "$pom")
  out="$cache/jars/$name"
  if ! fresh "jars-$name" "$key" || [ -z "$(ls -A "$out" 2>/dev/null)" ]; then
    log "mvn copy-dependencies $pom -> $out"
    rm -rf "$out"
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$out"
    stamp "jars-$name" "$key"
  else
    log "jars $name up to date ($(ls "$out" | wc -l) jars)"
  fi
done

log "ready: venv $venv, jars $cache/jars"
