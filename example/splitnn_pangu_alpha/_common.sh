# Sourced by the run_pangu_train_*.sh scripts: run from the example folder with the repo's venv.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"
if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="${PYTHON:-python3}"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ssl_positional ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT: the original's
# positional TLS arguments. The passwords are handed to Python through the environment
# (MSF_SERVER_PASSWORD / MSF_CLIENT_PASSWORD), not its command line; empty ones are left to
# MSF_CERT_PASSWORD or --server_password_file / --client_password_file.
ssl_positional() {
  ARGS+=(--enable_ssl "$1" --server_cert_path "$4" --client_cert_path "$5" --ca_cert_path "$6")
  if [ -n "$2" ]; then export MSF_SERVER_PASSWORD="$2"; fi
  if [ -n "$3" ]; then export MSF_CLIENT_PASSWORD="$3"; fi
  if [ -n "$2$3" ]; then
    echo "warning: passwords given as arguments are visible to every local user (ps); prefer" \
         "MSF_CERT_PASSWORD in the environment or --server_password_file/--client_password_file" >&2
  fi
}
