#!/bin/sh
# bundle.sh BINARY OUTDIR - builds a relocatable pylon-agent bundle:
#
#   OUTDIR/pylon-agent/bin/pylon-agent   RUNPATH $ORIGIN/../lib:$ORIGIN/../lib-dlopen
#   OUTDIR/pylon-agent/lib/*.so.*        the libraries the binary links,
#                                        except glibc's: all `exec` needs
#                                        (bin/ + lib/ is the "exec tree",
#                                        all the chart copies into Pylon's
#                                        container: ~0.5 MB, not ~17 MiB)
#   OUTDIR/pylon-agent/lib-dlopen/*.so.* the libraries it dlopen()s on first
#                                        use (its .note.dlopen), with their
#                                        dependencies (RUNPATH $ORIGIN)
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

# Copies the libraries of an ldd listing (file $1) into directory $2,
# skipping glibc and what is already in lib/ or lib-dlopen/.
copy_libs() {
	while read -r name arrow path rest; do
		[ "$arrow" = "=>" ] || continue
		[ -n "$path" ] || continue
		is_glibc "$name" && continue
		[ -e "$dir/lib/$name" ] || [ -e "$dir/lib-dlopen/$name" ] && continue
		cp -L "$path" "$2/$name"
		chmod 0644 "$2/$name"
		# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader
		patchelf --set-rpath '$ORIGIN:$ORIGIN/../lib' "$2/$name"
		if [ "${BUNDLE_STRIP:-1}" != 0 ] && command -v strip >/dev/null 2>&1; then
			strip --strip-unneeded "$2/$name" 2>/dev/null || true
		fi
		n=$((n + 1))
	done < "$1"
}

# lib/: what the binary links (ldd lines: "\tlibfoo.so.1 => /usr/lib/...
# (0x...)").  That is all `exec` needs: Pylon's container gets bin/ + lib/.
ldd "$bin" > "$out/.ldd.$$" || die "ldd $bin failed"
missing=$(grep -c 'not found' "$out/.ldd.$$" || true)
[ "$missing" -eq 0 ] || { cat "$out/.ldd.$$" >&2; rm -f "$out/.ldd.$$"; \
    die "$bin has unresolved libraries"; }
n=0
copy_libs "$out/.ldd.$$" "$dir/lib"
nlinked=$n

# lib-dlopen/: the libraries the agent dlopen()s on first use (libcurl,
# libmicrohttpd, OpenSSL), declared in its ELF .note.dlopen note
# (freedesktop "ELF dlopen metadata": a JSON array with "soname" lists),
# each with its own dependencies.  The binary's RUNPATH lists this
# directory after lib/, and dlopen() searches the caller's RUNPATH.
objcopy -O binary --only-section=.note.dlopen "$bin" "$out/.note.$$" ||
    die "objcopy failed reading .note.dlopen of $bin (binutils)"
sonames=$(tr -d '\000' < "$out/.note.$$" |
    grep -o '"lib[A-Za-z0-9_.+-]*\.so[.0-9]*"' | tr -d '"' | sort -u)
rm -f "$out/.note.$$"
[ -n "$sonames" ] || die "$bin has no .note.dlopen sonames"
: > "$out/.ldd.$$"
for so in $sonames; do
	p=$(ldconfig -p | awk -v s="$so" '$1 == s { print $NF; exit }')
	[ -n "$p" ] || die "$so (declared in .note.dlopen) is not installed"
	printf '\t%s => %s (dlopen)\n' "$so" "$p" >> "$out/.ldd.$$"
	ldd "$p" >> "$out/.ldd.$$" || die "ldd $p failed"
done
grep -q 'not found' "$out/.ldd.$$" && { cat "$out/.ldd.$$" >&2; \
    rm -f "$out/.ldd.$$"; die "a dlopen library has unresolved dependencies"; }
mkdir -p "$dir/lib-dlopen"
copy_libs "$out/.ldd.$$" "$dir/lib-dlopen"
rm -f "$out/.ldd.$$"
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader
patchelf --set-rpath '$ORIGIN/../lib:$ORIGIN/../lib-dlopen' "$dir/bin/pylon-agent"

# Each dlopen library must load from the bundle (no LD_LIBRARY_PATH).
for so in $sonames; do
	env -u LD_LIBRARY_PATH ldd "$dir/lib-dlopen/$so" | grep -q 'not found' &&
	    die "bundle: $so has unresolved dependencies"
done

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
# ... and lib/ holds exactly those (the exec tree carries nothing else).
want=$(echo "$check" | while read -r name arrow path rest; do
	[ "$arrow" = "=>" ] || continue
	is_glibc "$name" || echo "$name"
done | sort)
have=$(cd "$dir/lib" && for f in *; do echo "$f"; done | sort)
[ "$want" = "$have" ] ||
    die "lib/ holds $(echo "$have" | tr '\n' ' ')but the binary links $(echo "$want" | tr '\n' ' ')"

ver=$("$dir/bin/pylon-agent" version 2>/dev/null | sed -n '1s/^pylon-agent \([^ ]*\).*/\1/p')
[ -n "$ver" ] || ver=unknown
arch=$(uname -m)
tarball=$out/pylon-agent-$ver-linux-$arch.tar.gz
# Reproducible: fixed owner, order and mtime.
tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime='2000-01-01 00:00Z' -cf - pylon-agent | gzip -9n > "$tarball"

size=$(du -sk "$dir" | cut -f1)
tsize=$(du -k "$tarball" | cut -f1)
# What the chart's install container copies (cp -R bin lib): du -sb, the
# figure docs/benchmarks.md reports as "bytes copied per pod".
exec_bytes=$(du -sb --total "$dir/bin" "$dir/lib" | tail -1 | cut -f1)
echo "bundle: $dir ($n libraries: $nlinked linked, $((n - nlinked)) dlopen; ${size} KiB unpacked)"
echo "bundle: exec tree bin/ + lib/ (all exec needs, what the chart copies into Pylon's container): $exec_bytes bytes (du -sb)"
echo "bundle: $tarball (${tsize} KiB)"
