# Makefile for the whatsapp extension (PGXS)
#
# The version lives in whatsapp.control (default_version) and nowhere else:
# it is read here and handed to the C code as WHATSAPP_VERSION.

EXTENSION = whatsapp
EXTVERSION := $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" whatsapp.control)

MODULE_big = whatsapp
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# Install and upgrade scripts only; pg_regress inputs also live in sql/.
DATA = $(sort $(wildcard sql/whatsapp--*.sql))

CURL_CONFIG ?= curl-config
PG_CPPFLAGS = -DWHATSAPP_VERSION='"$(EXTVERSION)"' $(shell $(CURL_CONFIG) --cflags)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter
SHLIB_LINK = $(shell $(CURL_CONFIG) --libs) -lssl -lcrypto

# pg_regress runs against a temporary instance that preloads the library
# (pg_cron's way): "make installcheck" starts its own server from the
# installed binaries, so it needs "make install" first, not a running one.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/whatsapp--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf \
	--load-extension=pgcrypto

# Concurrency: isolation specs in test/isolation/specs.
ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --temp-instance=tmp_check_iso --temp-config=test/regress.conf \
	--load-extension=pgcrypto --inputdir=test/isolation

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The same pg_regress suite once more with default_transaction_isolation =
# 'repeatable read', the level Odoo runs every transaction at.
installcheck-rr:
	$(pg_regress_installcheck) --temp-instance=tmp_check_rr \
		--temp-config=test/regress.conf --temp-config=test/regress-rr.conf \
		--load-extension=pgcrypto --dbname=$(CONTRIB_TESTDB) $(REGRESS)

.PHONY: installcheck-rr
