# Object-store emulators for the test suite, on 127.0.0.1. Sourced by test.sh.
#
#   start_emulators   install (into a cache directory) and start what is needed,
#                     export the variables the conformance tests read
#   stop_emulators    stop them and remove their data (run from an EXIT trap)
#
# S3 uses moto_server (PyPI), Azure Blob uses azurite-blob (npm); buckets and
# containers are created with boto3 and azure-storage-blob. A backend whose URL
# is already set (ROCKUP_TEST_S3, ROCKUP_TEST_AZURE: e.g. MinIO and Azurite from
# `docker compose up -d`) or that is listed in ROCKUP_TEST_SKIP gets no emulator.
# GCS has none that speaks object_store's XML API: ROCKUP_TEST_GCS selects a
# real bucket, otherwise the GCS test is reported as ignored.

ROCKUP_TOOLS_DIR="${ROCKUP_TOOLS_DIR:-$HOME/.cache/rockup-test-tools}"
VENV_REQUIREMENTS=("moto[server]>=5.1,<6" "azure-storage-blob>=12.19,<13" "prometheus_client>=0.20,<1")
AZURITE_PACKAGE="azurite@3"
EMULATOR_PIDS=()
EMULATOR_DIR=""

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "rockup test: installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

install_python_tools() {
  local venv="$ROCKUP_TOOLS_DIR/venv" stamp="$ROCKUP_TOOLS_DIR/venv/.rockup-requirements"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${VENV_REQUIREMENTS[*]}" ]; then
    return
  fi
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3 python3-venv python3-pip
  echo "rockup test: installing ${VENV_REQUIREMENTS[*]} into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${VENV_REQUIREMENTS[@]}"
  echo "${VENV_REQUIREMENTS[*]}" >"$stamp"
}

install_azurite() {
  local prefix="$ROCKUP_TOOLS_DIR/npm"
  [ -x "$prefix/node_modules/.bin/azurite-blob" ] && return
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  echo "rockup test: installing $AZURITE_PACKAGE into $prefix" >&2
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "$AZURITE_PACKAGE" >/dev/null
}

free_port() {
  "$ROCKUP_TOOLS_DIR/venv/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port NAME PORT LOG: up to 60 s for a listener, else show the log and fail.
wait_for_port() {
  local name="$1" port="$2" log="$3"
  for _ in $(seq 600); do
    if "$ROCKUP_TOOLS_DIR/venv/bin/python" -c \
      "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "rockup test: $name did not start on 127.0.0.1:$port; its log:" >&2
  tail -n 30 "$log" >&2
  return 1
}

skipped() { [[ ",${ROCKUP_TEST_SKIP:-}," == *",$1,"* ]]; }

start_moto() {
  local port log="$EMULATOR_DIR/moto.log"
  port="$(free_port)"
  "$ROCKUP_TOOLS_DIR/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_port moto "$port" "$log"
  export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=rockup-test AWS_SECRET_ACCESS_KEY=rockup-test
  unset AWS_SESSION_TOKEN AWS_PROFILE
  "$ROCKUP_TOOLS_DIR/venv/bin/python" -c '
import boto3, os
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"], region_name="us-east-1").create_bucket(Bucket="rockup-test")'
  export ROCKUP_TEST_S3="s3://rockup-test"
  echo "rockup test: S3 = moto_server on 127.0.0.1:$port, bucket rockup-test" >&2
}

start_azurite() {
  local port log="$EMULATOR_DIR/azurite.log"
  port="$(free_port)"
  "$ROCKUP_TOOLS_DIR/npm/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$EMULATOR_DIR/azurite" --skipApiVersionCheck >"$log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_port azurite "$port" "$log"
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port"
  "$ROCKUP_TOOLS_DIR/venv/bin/python" -c '
import os
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
url = os.environ["AZURITE_BLOB_STORAGE_URL"] + "/devstoreaccount1"
BlobServiceClient(url, credential={"account_name": "devstoreaccount1", "account_key": key}).create_container("rockup-test")'
  export ROCKUP_TEST_AZURE="az://rockup-test"
  echo "rockup test: Azure = azurite-blob on 127.0.0.1:$port, container rockup-test" >&2
}

start_emulators() {
  EMULATOR_DIR="$(mktemp -d "${TMPDIR:-/tmp}/rockup-emulators.XXXXXX")"
  local want_s3=0 want_azure=0
  if [ -n "${ROCKUP_TEST_S3:-}" ]; then
    echo "rockup test: S3 = $ROCKUP_TEST_S3 with endpoint ${AWS_ENDPOINT:-(AWS default)}, from the environment; no emulator started" >&2
  elif skipped s3; then
    echo "rockup test: S3 SKIPPED (ROCKUP_TEST_SKIP=$ROCKUP_TEST_SKIP)" >&2
  else
    want_s3=1
  fi
  if [ -n "${ROCKUP_TEST_AZURE:-}" ]; then
    echo "rockup test: Azure = $ROCKUP_TEST_AZURE, from the environment; no emulator started" >&2
  elif skipped azure; then
    echo "rockup test: Azure SKIPPED (ROCKUP_TEST_SKIP=$ROCKUP_TEST_SKIP)" >&2
  else
    want_azure=1
  fi
  # The venv also provides the port helper, the bucket/container clients and
  # the Prometheus text parser the metrics tests check files with.
  install_python_tools
  export ROCKUP_TEST_PYTHON="$ROCKUP_TOOLS_DIR/venv/bin/python"
  if [ $want_s3 = 1 ]; then start_moto; fi
  if [ $want_azure = 1 ]; then
    install_azurite
    start_azurite
  fi
  if [ -n "${ROCKUP_TEST_GCS:-}" ]; then
    echo "rockup test: GCS = $ROCKUP_TEST_GCS, from the environment" >&2
  else
    echo "rockup test: GCS SKIPPED: no emulator reachable here speaks object_store's XML API;" \
      "set ROCKUP_TEST_GCS=gs://bucket/prefix and GOOGLE_SERVICE_ACCOUNT to run it against a real bucket" >&2
  fi
}

stop_emulators() {
  local pid
  for pid in "${EMULATOR_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${EMULATOR_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  EMULATOR_PIDS=()
  [ -n "$EMULATOR_DIR" ] && rm -rf "$EMULATOR_DIR"
  EMULATOR_DIR=""
}
