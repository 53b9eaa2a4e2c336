#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in $VENV (default .venv), idempotently.
#
# torch is installed FIRST and pinned: a bare "torch" requirement on a machine without torch pulls
# a multi-GB CUDA build. Where the system Python already has a CUDA torch (a GPU server), the
# venv sees it through --system-site-packages instead. Every later pip call is constrained to
# the torch that is present so no dependency can silently swap it.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test}
STAMP="$VENV/.bootstrap-stamp"
want="$(sha256sum pyproject.toml scripts/bootstrap_venv.sh | sha256sum | cut -c1-16)-$EXTRAS"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import paranasal_ssl" 2>/dev/null; then
  exit 0
fi

system_cuda=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$system_cuda" = "1" ]; then
    echo "bootstrap: the system Python has a CUDA torch; the venv will use it"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0 (CPU build) first"
  "${PIP[@]}" install -q "torch==2.13.0"
fi
torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
constraints="$VENV/torch-constraint.txt"
echo "torch==$torch_version" > "$constraints"

echo "bootstrap: installing paranasal-ssl[$EXTRAS] (torch held at $torch_version)"
"${PIP[@]}" install -q -c "$constraints" -e ".[$EXTRAS]"
echo "$want" > "$STAMP"
