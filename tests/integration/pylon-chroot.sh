#!/bin/sh
# pylon-chroot.sh ROOT APPDIR CMD [ARG...]
# Runs CMD inside the cached Debian 13 root (scripts/pylon-cache.sh) in a
# private mount namespace of its own: /proc and /dev mounted, APPDIR bound
# on /srv (the working directory).  Nothing is mounted on the host: the
# mounts die with the process.  Every step execs, so the pid a caller
# started is the pid of CMD (SIGTERM reaches it directly).
# Exit 70 when a mount fails.
[ $# -ge 3 ] || { echo "usage: pylon-chroot.sh ROOT APPDIR CMD [ARG...]" >&2; exit 64; }
exec unshare -m --propagation private sh -c '
R=$1; A=$2; shift 2
mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" &&
    mount --bind "$A" "$R/srv" || { echo "pylon-chroot: mount failed in $R" >&2; exit 70; }
exec chroot "$R" /bin/sh -c "cd /srv && exec \"\$@\"" sh "$@"' sh "$@"
