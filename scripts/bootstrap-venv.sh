#!/usr/bin/env bash
# Create the project's virtual environment from nothing but python3. Debian splits venv and
# ensurepip into python3-venv; as root we install it, otherwise we say what to install.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    exit 0
fi
rm -rf "$venv"
if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        echo "installing python${version}-venv (Debian keeps venv apart from python3)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${version}-venv" ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        "$python" -m venv "$venv"
    else
        echo "error: '$python -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
    fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
