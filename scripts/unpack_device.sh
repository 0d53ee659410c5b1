#!/usr/bin/env bash
# Unpacks what scripts/gpu_session.sh sent back through the device tool (session.log + out.tgz.NN parts) into DEST.
# With CKPT_DEST, unfinished runs' checkpoints move there (checkpoints/device: carry it, and the runs resume).
#   bash scripts/unpack_device.sh /work/.device/N results/device_logs/session_7_call1 [checkpoints/device]
# Then scripts/merge_device.py on DEST brings its rows, curves, benchmark and throughput rows into results/.
set -euo pipefail
src=$1; dest=$2; ckpt_dest=${3:-}
mkdir -p "$dest"
[ "$(realpath "$src")" = "$(realpath "$dest")" ] || cp "$src/session.log" "$dest/" 2>/dev/null || true
if compgen -G "$src/out.tgz.*" >/dev/null; then
  cat "$src"/out.tgz.* | tar xzf - -C "$dest"
  [ "$(realpath "$src")" = "$(realpath "$dest")" ] && rm -f "$dest"/out.tgz.*
fi
if [ -n "$ckpt_dest" ] && [ -d "$dest/ckpt" ]; then
  mkdir -p "$ckpt_dest" && cp -r "$dest/ckpt/." "$ckpt_dest/" && rm -rf "$dest/ckpt"
fi
find "$dest" -type f | sort
