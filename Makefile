# Makefile for the whatsapp extension (PGXS)
#
# The version lives in whatsapp.control (default_version) and nowhere else:
# it is read here and handed to the C code as WHATSAPP_VERSION.
#
#   make && make install          build and install (PG_CONFIG picks the server)
#   make installcheck             pg_regress, the isolation specs and the TAP
#                                 tests; pg_regress and the specs run against
#                                 the server at PGHOST/PGPORT, which must
#                                 preload the library (see docs/operations.md, Tests)
#   make installcheck TAP_TESTS=  the same without the TAP tests
#   make installcheck-rr          pg_regress once more at REPEATABLE READ
#   make prove_installcheck       the TAP tests alone (test/t/*.pl); each
#                                 starts its own clusters
#
# Warnings are not errors here, so that a newer compiler that warns about
# something new still builds; the test suite (test/run_tests.sh, which CI
# runs) builds with COPT=-Werror.

EXTENSION = whatsapp
EXTVERSION := $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" whatsapp.control)

MODULE_big = whatsapp
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# Install and upgrade scripts only; pg_regress inputs also live in sql/.
DATA = $(sort $(wildcard sql/whatsapp--*.sql))

# libcurl 7.85 or newer (src/http.c refuses older headers too).
CURL_CONFIG ?= curl-config
CURL_MIN_VERNUM = 075500
PG_CPPFLAGS = -DWHATSAPP_VERSION='"$(EXTVERSION)"' $(shell $(CURL_CONFIG) --cflags 2>/dev/null)
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter
SHLIB_LINK = $(shell $(CURL_CONFIG) --libs 2>/dev/null) -lssl -lcrypto

# pg_regress and the isolation specs run against a running server, as for
# every contrib module: "make install", restart the server with
# shared_preload_libraries = 'whatsapp', then "make installcheck".
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/whatsapp--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=pgcrypto

# Concurrency: isolation specs in test/isolation/specs.
ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --load-extension=pgcrypto --inputdir=test/isolation

# TAP integration tests (PostgreSQL::Test::Cluster, test/perl/WaTest.pm and
# the mock Cloud API in test/mock, which needs node).
TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

PG_PROVE_FLAGS += -I $(srcdir)/test/perl

# The worker waits on epoll (src/http.c): Linux only.  And the libcurl check
# with the version found, before anything is compiled.
$(OBJS): | build-requirements

build-requirements:
	@if [ "$(PORTNAME)" != linux ]; then \
		echo "whatsapp builds on Linux only (its worker waits on epoll); this PostgreSQL is built for $(PORTNAME)" >&2; \
		exit 1; \
	fi
	@v=$$($(CURL_CONFIG) --vernum 2>/dev/null) || { \
		echo "$(CURL_CONFIG) not found: install libcurl's development files (Debian: libcurl4-openssl-dev) or set CURL_CONFIG" >&2; \
		exit 1; \
	}; \
	if [ $$((0x$$v)) -lt $$((0x$(CURL_MIN_VERNUM))) ]; then \
		echo "whatsapp needs libcurl 7.85 or newer; $(CURL_CONFIG) reports $$($(CURL_CONFIG) --version)" >&2; \
		exit 1; \
	fi

# The same pg_regress suite once more with default_transaction_isolation =
# 'repeatable read', the level Odoo runs every transaction at, set for
# pg_regress's sessions through PGOPTIONS.
installcheck-rr: submake $(REGRESS_PREP)
	export PGOPTIONS="$${PGOPTIONS:-} -c default_transaction_isolation=repeatable\ read" && \
		$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)

# PGXS defines the recipe, not the target.
prove_installcheck:
	$(prove_installcheck)

.PHONY: build-requirements installcheck-rr prove_installcheck
