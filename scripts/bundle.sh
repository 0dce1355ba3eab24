#!/bin/sh
# bundle.sh BINARY OUTDIR - builds a relocatable pylon-agent bundle:
#
#   OUTDIR/pylon-agent/bin/pylon-agent   RUNPATH $ORIGIN/../lib
#   OUTDIR/pylon-agent/lib/*.so.*        every shared library the binary
#                                        needs except glibc's (RUNPATH $ORIGIN)
#   OUTDIR/pylon-agent-VERSION-linux-ARCH.tar.gz
#
# The bundle runs from any directory (an emptyDir in Pylon's pod, /opt in
# the agent image) on any glibc system at least as new as the build's
# (Debian bookworm: glibc 2.36), with no LD_LIBRARY_PATH.  glibc itself
# (libc, libm, libpthread, libdl, librt, libresolv, ld-linux...) is never
# bundled: it must match the kernel-facing loader of the image it runs in.
#
# Needs patchelf (Debian package patchelf; scripts/install-deps.sh).
# BUNDLE_STRIP=0 keeps debug symbols.
set -eu

usage() {
	echo "usage: scripts/bundle.sh BINARY OUTDIR" >&2
	exit 64
}
die() {
	echo "bundle.sh: $*" >&2
	exit 1
}

[ $# -eq 2 ] || usage
bin=$1
out=$2
[ -x "$bin" ] || die "$bin: not an executable (run make first)"
command -v patchelf >/dev/null 2>&1 ||
    die "patchelf not found: apt-get install patchelf (or make deps)"
command -v ldd >/dev/null 2>&1 || die "ldd not found (libc-bin)"

dir=$out/pylon-agent
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/lib"
cp "$bin" "$dir/bin/pylon-agent"
chmod 0755 "$dir/bin/pylon-agent"
if [ "${BUNDLE_STRIP:-1}" != 0 ] && command -v strip >/dev/null 2>&1; then
	strip --strip-unneeded "$dir/bin/pylon-agent"
fi

# glibc's libraries stay with the host/image; everything else is copied.
is_glibc() {
	case "$1" in
	linux-vdso.so*|linux-gate.so*|ld-linux*|ld64.so*|libc.so*|libm.so*|\
	libmvec.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|\
	libutil.so*|libanl.so*|libnsl.so*|libBrokenLocale.so*|libc_malloc_debug.so*|\
	libnss_*|libthread_db.so*)
		return 0 ;;
	esac
	return 1
}

# ldd lines: "\tlibfoo.so.1 => /usr/lib/x86_64-linux-gnu/libfoo.so.1 (0x...)"
ldd "$bin" > "$out/.ldd.$$" || die "ldd $bin failed"
missing=$(grep -c 'not found' "$out/.ldd.$$" || true)
[ "$missing" -eq 0 ] || { cat "$out/.ldd.$$" >&2; rm -f "$out/.ldd.$$"; \
    die "$bin has unresolved libraries"; }
n=0
while read -r name arrow path rest; do
	[ "$arrow" = "=>" ] || continue
	[ -n "$path" ] || continue
	is_glibc "$name" && continue
	cp -L "$path" "$dir/lib/$name"
	chmod 0644 "$dir/lib/$name"
	# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader
	patchelf --set-rpath '$ORIGIN' "$dir/lib/$name"
	if [ "${BUNDLE_STRIP:-1}" != 0 ] && command -v strip >/dev/null 2>&1; then
		strip --strip-unneeded "$dir/lib/$name" 2>/dev/null || true
	fi
	n=$((n + 1))
done < "$out/.ldd.$$"
rm -f "$out/.ldd.$$"
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader
patchelf --set-rpath '$ORIGIN/../lib' "$dir/bin/pylon-agent"

# Every bundled library must now resolve from the bundle.
abslib=$(cd "$dir/lib" && pwd -P)
check=$(env -u LD_LIBRARY_PATH ldd "$(cd "$dir/bin" && pwd -P)/pylon-agent")
echo "$check" | grep -q 'not found' && { echo "$check" >&2; \
    die "bundle has unresolved libraries"; }
bad=$(echo "$check" | while read -r name arrow path rest; do
	[ "$arrow" = "=>" ] || continue
	is_glibc "$name" && continue
	[ "$(dirname "$(realpath "$path")")" = "$abslib" ] || echo "$name"
done)
[ -z "$bad" ] || die "resolved outside the bundle: $bad"

ver=$("$dir/bin/pylon-agent" version 2>/dev/null | sed -n '1s/^pylon-agent \([^ ]*\).*/\1/p')
[ -n "$ver" ] || ver=unknown
arch=$(uname -m)
tarball=$out/pylon-agent-$ver-linux-$arch.tar.gz
# Reproducible: fixed owner, order and mtime.
tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime='2000-01-01 00:00Z' -cf - pylon-agent | gzip -9n > "$tarball"

size=$(du -sk "$dir" | cut -f1)
tsize=$(du -k "$tarball" | cut -f1)
echo "bundle: $dir ($n libraries, ${size} KiB unpacked)"
echo "bundle: $tarball (${tsize} KiB)"
