# Sourced by scripts/pylon-cache.sh and scripts/bookworm-cache.sh:
# mirror prints the Debian mirror this machine's apt uses (deb822 sources
# first, then sources.list; never the security archive), for debootstrap.
mirror() {
	m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources \
	    2>/dev/null | grep -v security | head -n 1)
	[ -n "$m" ] || m=$(sed -n 's/^deb \([^ ]*\) .*/\1/p' /etc/apt/sources.list \
	    2>/dev/null | grep -v security | head -n 1)
	echo "${m:-http://deb.debian.org/debian}"
}
