# pylon-agent - see README.md.  `make` builds build/pylon-agent.
PREFIX	?= /usr/local
DESTDIR	?=
CC	?= cc
BUILD	?= build
VERSION	 = $(shell sed -n 's/^#define AGENT_VERSION "\(.*\)"/\1/p' agent/src/agent.h)
GIT_REV	 = $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

WARN	 = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral \
	   $(shell $(CC) -Werror -Wno-format-truncation -E -x c /dev/null \
	       >/dev/null 2>&1 && echo -Wno-format-truncation)
CSTD	 = -std=gnu11
OPT	?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -DAGENT_GIT_REV=\"$(GIT_REV)\"
CFLAGS	+= $(CSTD) $(OPT) $(WARN) -fstack-protector-strong \
	   -D_FORTIFY_SOURCE=2 -fPIE
LDFLAGS	+= -Wl,--as-needed -Wl,-z,relro -Wl,-z,now -pie
LIBS	 = -lcjson -lyaml -lhiredis \
	   -lpthread -lm

SRCS	 = $(sort $(wildcard agent/src/*.c))
LIBSRCS	 = $(filter-out agent/src/main.c,$(SRCS))
HDRS	 = $(wildcard agent/src/*.h)
OBJS	 = $(SRCS:agent/src/%.c=$(BUILD)/obj/%.o)
TOBJS	 = $(LIBSRCS:agent/src/%.c=$(BUILD)/tobj/%.o)
UNITS	 = $(sort $(wildcard tests/unit/test_*.c))
UNITBIN	 = $(UNITS:tests/unit/%.c=$(BUILD)/tests/%)

PYTEST	?= /usr/bin/python3 -m pytest


.PHONY: all clean install test unit integration deps demo asan valgrind \
	fuzz bench bench-proxy bench-slowloris bench-fleet bench-deaf bundle format \
	format-check lint chart-test podman-test

all: $(BUILD)/pylon-agent

# The files that print the git revision are rebuilt when HEAD moves: the
# stamp is rewritten only when the revision differs.
REV_STAMP := $(shell mkdir -p $(BUILD) && { echo '$(GIT_REV)' | \
	cmp -s - $(BUILD)/git-rev || echo '$(GIT_REV)' > $(BUILD)/git-rev; } && \
	echo $(BUILD)/git-rev)
$(BUILD)/obj/main.o $(BUILD)/obj/serve_render.o $(BUILD)/tobj/serve_render.o: $(REV_STAMP)

$(BUILD)/obj/%.o: agent/src/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/tobj/%.o: agent/src/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DUNITTEST $(CFLAGS) -Wno-missing-prototypes -c $< -o $@

$(BUILD)/pylon-agent: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(BUILD)/libagent-test.a: $(TOBJS)
	@rm -f $@
	ar rcs $@ $(TOBJS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libagent-test.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DUNITTEST $(CFLAGS) -Wno-missing-prototypes -Iagent/src -o $@ $< \
	    $(BUILD)/libagent-test.a $(LDFLAGS) -lcmocka $(LIBS)

# Installs the Debian packages the build and the tests need (idempotent).
deps:
	@scripts/install-deps.sh

unit: $(UNITBIN)
	@set -e; for t in $(UNITBIN); do echo "== $$t"; \
	    $(UNIT_RUNNER) $$t; done

integration: all
	PYLON_AGENT_BIN=$(abspath $(BUILD)/pylon-agent) \
	    $(PYTEST) -q tests/integration $(PYTEST_EXTRA)

test: deps
	scripts/pylon-cache.sh
	scripts/bookworm-cache.sh
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) fuzz-smoke

# The whole suite under ASan + UBSan (separate build dir).
asan: deps
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer \
	    -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" all unit integration \
	    PYTEST_EXTRA="$(ASAN_PYTEST_EXTRA)"

# The unit tests and the integration suite with the agent under valgrind.
# VALGRIND_TESTS narrows the integration part (.ci/run uses a subset).
VALGRIND_TESTS ?= tests/integration
valgrind: deps
	$(MAKE) BUILD=build/vg OPT="-O0 -g" all $(patsubst $(BUILD)/%,build/vg/%,$(UNITBIN))
	@set -e; for t in $(patsubst $(BUILD)/%,build/vg/%,$(UNITBIN)); do \
	    echo "== valgrind $$t"; valgrind -q --leak-check=full \
	    --errors-for-leak-kinds=definite --error-exitcode=99 $$t; done
	PYLON_AGENT_BIN=$(abspath build/vg/pylon-agent) \
	    PYLON_AGENT_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --trace-children=no" \
	    $(PYTEST) -q $(VALGRIND_TESTS) $(VALGRIND_PYTEST_EXTRA)

fuzz fuzz-smoke:
	@if [ -x tests/fuzz/run.sh ]; then tests/fuzz/run.sh $@; \
	    else echo "fuzz: no targets yet"; fi

bench: all
	BUILD=$(BUILD) tests/bench/run.sh
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/proxy_bench.py
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/fleet.py
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/deaf_bench.py

# The deaf-Pylon look while the count is low: CLIENT LIST ID vs whole
# lists, N = 100, 1000 other Pylons (docs/benchmarks.md).
bench-deaf: all
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/deaf_bench.py

# A simulated fleet: N = 100, 500, 1000 pods in the chart's shape against
# the fake Kubernetes API and one redis-server (docs/benchmarks.md).
# FLEET_SIZES=100,500,1000 to choose the sizes.
bench-fleet: all
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/fleet.py

# serve --bus-proxy vs stunnel4 vs a direct TLS client (docs/benchmarks.md)
bench-proxy: all
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/proxy_bench.py

# serve's /livez under 200 slowloris connections and 2,000 bursts
# (docs/hardening.md; prints figures, not a test)
bench-slowloris: all
	BUILD=$(BUILD) /usr/bin/python3 tests/bench/slowloris_bench.py

bundle: all
	scripts/bundle.sh $(BUILD)/pylon-agent $(BUILD)/bundle

# The Helm chart, manifests/, the bundle (offline renderer, schemas) and
# the monitoring objects (promtool, a real Prometheus scraping serve).
chart-test: all
	PYLON_AGENT_BIN=$(abspath $(BUILD)/pylon-agent) $(PYTEST) -q \
	    tests/integration/test_chart.py tests/integration/test_manifests.py \
	    tests/integration/test_bundle.py tests/integration/test_monitoring_chart.py \
	    tests/integration/test_monitoring_live.py \
	    tests/integration/test_networkpolicy_chart.py

# The agent's image built with podman and the chart's pods kube-played
# (docs/containers.md); part of `make test` too.
podman-test: all
	scripts/bookworm-cache.sh
	scripts/pylon-cache.sh
	PYLON_AGENT_BIN=$(abspath $(BUILD)/pylon-agent) $(PYTEST) -q \
	    tests/integration/test_podman.py

# The job a user came for, with real processes (scripts/demo.py); the
# first run also caches the Debian 13 root of the real Pylon.
demo:
	@echo "make demo: installs missing Debian packages, builds the agent, caches the real"
	@echo "Pylon (first run: a Debian 13 root and npm packages, a few minutes), runs 5 steps."
	@scripts/install-deps.sh
	@$(MAKE) -s --no-print-directory all
	@scripts/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 -s $(BUILD)/pylon-agent $(DESTDIR)$(PREFIX)/bin/pylon-agent

format:
	clang-format -i agent/src/*.c agent/src/*.h

# The tree satisfies .clang-format (CI runs this).
format-check:
	clang-format --dry-run --Werror agent/src/*.c agent/src/*.h

# Static analysis: cppcheck (Debian) over agent/src; any finding fails.
lint:
	cppcheck -q --enable=warning,portability,performance --std=c11 \
	    --error-exitcode=1 --inline-suppr -D_GNU_SOURCE -D__GNUC__ \
	    -Iagent/src agent/src

clean:
	rm -rf build
