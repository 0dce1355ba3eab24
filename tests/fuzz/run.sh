#!/bin/sh
# tests/fuzz/run.sh - builds and runs the libFuzzer targets (one per parser).
#
#   tests/fuzz/run.sh build        build every target into $FUZZ_BUILD
#   tests/fuzz/run.sh fuzz-smoke   build, run each a few seconds (make test)
#   tests/fuzz/run.sh fuzz         build, run each FUZZ_SECONDS (make fuzz)
#   tests/fuzz/run.sh runs N [T]   build, run each (or only T) for N
#                                  executions; prints the counts
#
# Each target is tests/fuzz/fuzz_<name>.c with seeds in
# tests/fuzz/corpus/<name>/.  The agent's library sources (all but main.c)
# are compiled with -DUNITTEST so STATIC parsers are reachable, and with
# -fsanitize=fuzzer-no-link,address,undefined.  Runs start from the
# committed seeds and write new inputs to $FUZZ_BUILD/corpus/<name>, never
# into the tree.  A finding (crash, leak, sanitizer report, timeout) is
# saved under $FUZZ_BUILD/artifacts/ and makes the script fail.
#
# Environment: FUZZ_SECONDS (default 60), FUZZ_SMOKE_SECONDS (default 5),
# FUZZ_SMOKE_SEED (default 1), FUZZ_TARGETS (space list, default all),
# FUZZ_BUILD (default build/fuzz),
# FUZZ_CC (default clang, else clang-14), FUZZ_MAX_LEN (largest input,
# default 65536).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${1:-fuzz-smoke}
B=${FUZZ_BUILD:-build/fuzz}
SECONDS_FULL=${FUZZ_SECONDS:-60}
SECONDS_SMOKE=${FUZZ_SMOKE_SECONDS:-5}

skip() {
	echo "fuzz: SKIPPED: $*" >&2
	exit 0
}

CC=${FUZZ_CC:-}
if [ -z "$CC" ]; then
	for c in clang clang-14; do
		if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
	done
fi
[ -n "$CC" ] || skip "clang not found (apt-get install clang libclang-rt-14-dev)"

mkdir -p "$B/obj" "$B/artifacts"
# Can this clang link libFuzzer with the sanitizers at all?
probe="$B/probe.c"
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' >"$probe"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe" -o "$B/probe" \
    >"$B/probe.log" 2>&1; then
	cat "$B/probe.log" >&2
	skip "$CC cannot link -fsanitize=fuzzer (libclang-rt-14-dev missing?)"
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -DUNITTEST \
 -DAGENT_GIT_REV=\"fuzz\" -Wall -Wno-unused-command-line-argument $SAN"
LIBS="-lcurl -lcjson -lyaml -lhiredis -lmicrohttpd -lssl -lcrypto -lpthread -lm"

# ---- build (incremental: a source newer than its object is rebuilt) ----
build() {
	objs=""
	for src in agent/src/*.c; do
		base=$(basename "$src" .c)
		[ "$base" = main ] && continue
		obj="$B/obj/$base.o"
		objs="$objs $obj"
		if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
		    [ -n "$(find agent/src -name '*.h' -newer "$obj" | head -1)" ]; then
			echo "  CC $src"
			# shellcheck disable=SC2086
			"$CC" $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
		fi
	done
	rm -f "$B/libagent-fuzz.a"
	# shellcheck disable=SC2086
	ar rcs "$B/libagent-fuzz.a" $objs
	for t in $TARGETS; do
		out="$B/fuzz_$t"
		echo "  LD $out"
		# shellcheck disable=SC2086
		"$CC" $CFLAGS -fsanitize=fuzzer -Iagent/src \
		    "tests/fuzz/fuzz_$t.c" "$B/libagent-fuzz.a" $LIBS -o "$out"
	done
}

if [ -n "${FUZZ_TARGETS:-}" ]; then
	TARGETS=$FUZZ_TARGETS
else
	TARGETS=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done |
	    sed 's/^fuzz_//' | tr '\n' ' ')
fi

# Runs one target; $1 name, rest extra libFuzzer flags.  Prints the line
# "fuzz: <name>: <execs> executions in <s> s, <n> corpus entries".
run_one() {
	t=$1
	shift
	work="$B/corpus/$t"
	mkdir -p "$work"
	log="$B/fuzz_$t.log"
	dict=""
	[ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
	set +e
	# close_fd_mask=2: the agent's own log lines (warnings about odd
	# input) would drown the output; libFuzzer and the sanitizers report
	# on a private copy of stderr.
	# shellcheck disable=SC2086
	ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    "$B/fuzz_$t" "$@" $dict -close_fd_mask=2 -print_final_stats=1 \
	    -rss_limit_mb=1024 -timeout=10 -max_len="${FUZZ_MAX_LEN:-65536}" \
	    -artifact_prefix="$B/artifacts/${t}-" "$work" \
	    "tests/fuzz/corpus/$t" </dev/null >"$log" 2>&1
	rc=$?
	set -e
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	secs=$(sed -n 's/^stat::.*time.*: *//p' "$log" | tail -1)
	nc=$(find "$work" "tests/fuzz/corpus/$t" -type f | wc -l)
	if [ $rc -ne 0 ]; then
		echo "fuzz: $t: FINDING (exit $rc), see $log and $B/artifacts/" >&2
		grep -E "ERROR|SUMMARY|runtime error|==[0-9]+==|Test unit written" \
		    "$log" | head -20 >&2
		return 1
	fi
	echo "fuzz: $t: ${execs:-?} executions, $nc corpus files (log $log)"
	return 0
}

case "$MODE" in
build)
	build
	;;
fuzz-smoke)
	[ "$SECONDS_SMOKE" -le 10 ] || SECONDS_SMOKE=10
	build
	fail=0
	for t in $TARGETS; do
		# A fixed seed: make test finds what it found last time, and a
		# new finding comes from a code change, not from the dice
		# (make fuzz explores with fresh seeds).
		run_one "$t" -seed="${FUZZ_SMOKE_SEED:-1}" \
		    -max_total_time="$SECONDS_SMOKE" || fail=1
	done
	[ $fail -eq 0 ] || { echo "fuzz-smoke: FAILED" >&2; exit 1; }
	echo "fuzz-smoke: $(echo $TARGETS | wc -w) targets, no finding"
	;;
fuzz)
	build
	fail=0
	for t in $TARGETS; do
		run_one "$t" -max_total_time="$SECONDS_FULL" || fail=1
	done
	[ $fail -eq 0 ] || { echo "fuzz: FAILED" >&2; exit 1; }
	;;
runs)
	n=${2:?usage: run.sh runs N [TARGET]}
	[ -n "${3:-}" ] && TARGETS=$3
	build
	for t in $TARGETS; do
		start=$(date +%s)
		run_one "$t" -runs="$n" || exit 1
		echo "fuzz: $t: wall $(( $(date +%s) - start )) s"
	done
	;;
*)
	echo "usage: $0 build|fuzz-smoke|fuzz|runs N [TARGET]" >&2
	exit 64
	;;
esac
