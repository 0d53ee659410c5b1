#!/usr/bin/env bash
# Unpacks what scripts/gpu_session.sh sent back through the device tool (session.log + out.tgz.NN parts) into DEST.
# With CKPT_DEST, unfinished runs' checkpoints move there (checkpoints/device/ckpt/, tracked by git: commit them and
# the runs resume in the next call or session; delete a run's folder once it has finished), and
# so does the compile cache (the next call's runs start without compiling what this one compiled).
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
# A run that finished in the call no longer resumes: its folder leaves the (tracked) resume checkpoints, whether or
# not its best checkpoint came back (scripts/gpu_session.sh lists every finished run under finished/).
if [ -n "$ckpt_dest" ]; then
  for run in "$dest"/finished/ckpt/*/ "$dest"/best/ckpt/*/; do
    [ -d "$run" ] && rm -rf "$ckpt_dest/ckpt/$(basename "$run")"
  done
fi
# Finished runs' best checkpoints (for python -m lra.ablate) go to checkpoints/best/ beside CKPT_DEST, not into it:
# what is there travels with every later call, and these would fill its 64 MiB.
if [ -n "$ckpt_dest" ] && [ -d "$dest/best" ]; then
  best_dest=$(dirname "$ckpt_dest")/best
  mkdir -p "$best_dest" && cp -r "$dest/best/." "$best_dest/" && rm -rf "$dest/best"
fi
# The compile cache that came back replaces the carried one (it grew from it: scripts/gpu_session.sh).
if [ -n "$ckpt_dest" ] && [ -d "$dest/compile_cache" ]; then
  mkdir -p "$ckpt_dest" && rm -rf "$ckpt_dest/compile_cache" && mv "$dest/compile_cache" "$ckpt_dest/compile_cache"
fi
find "$dest" -type f -not -path "*/compile_cache/*" | sort
