# Skywarden: two commands on a fresh machine (Rust and the PostgreSQL server package installed,
# nothing running):
#   make demo   embedded PostgreSQL, the sample incident imported, where to look
#   make test   the whole test suite, starting what it needs
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

CARGO ?= cargo
# Queries are checked at compile time against the committed .sqlx/ data; no database needed.
export SQLX_OFFLINE := true

CACHE_DIR := .cache
GEOIP_PACKAGE := @ip-location-db/geo-whois-asn-country-mmdb
GEOIP_DB := $(CACHE_DIR)/geoip/geo-whois-asn-country.mmdb
# AS numbers and organisations (CC BY 4.0: RouteViews, DB-IP), as ip-location-db's CSV tables.
GEOIP_ASN_PACKAGE := @ip-location-db/asn
GEOIP_ASN_V4 := $(CACHE_DIR)/geoip/asn-ipv4.csv
GEOIP_ASN_V6 := $(CACHE_DIR)/geoip/asn-ipv6.csv
GEOIP_ALL := $(GEOIP_DB),$(GEOIP_ASN_V4),$(GEOIP_ASN_V6)
DEMO_DATA_DIR ?= $(if $(filter 0,$(shell id -u)),/var/lib/skywarden-demo,$(HOME)/.local/share/skywarden-demo)
TEST_PG_DIR ?= $(or $(TMPDIR),/tmp)/skywarden-make-test-$(shell id -u)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/skywarden
DEBUG_BIN := $(TARGET_DIR)/debug/skywarden
BENCH_BIN := $(TARGET_DIR)/release/skywarden-bench
BENCH_DEBUG_BIN := $(TARGET_DIR)/debug/skywarden-bench

.PHONY: demo test build geoip sqlx-prepare bench clean-test-db test-tools fuzz

# Test tools from PyPI: the AWS emulator (moto server), the API fuzzer (schemathesis) and the
# SMTP server the email tests talk to (aiosmtpd). The ones on PATH, else a private venv.
TEST_VENV := $(CACHE_DIR)/test-venv
# 5.2.2 fixes CompleteMultipartUpload's answer (getmoto/moto#10055), which the archive's
# multipart upload reads; an older moto on PATH is not used.
MOTO_SPEC := moto[server]>=5.2.2,<6
MOTO_MIN := (5, 2, 2)
SCHEMATHESIS_SPEC := schemathesis>=4.32,<5
AIOSMTPD_SPEC := aiosmtpd>=1.4,<2
# pyarrow writes and checks Parquet flow logs in the tests; cfn-lint checks the CloudFormation
# templates in deploy/.
PYARROW_SPEC := pyarrow>=17,<23
CFN_LINT_SPEC := cfn-lint>=1.20,<2
OCSF_SCHEMA_SPEC := 'ocsf-json-schema>=1.2,<2' 'jsonschema-rs>=0.20,<1'
MOTO_BIN = $(TEST_VENV)/bin/moto_server
SCHEMATHESIS_BIN = $(shell command -v schemathesis 2>/dev/null || echo $(TEST_VENV)/bin/schemathesis)
# The CloudFormation templates users deploy; cfn-lint checks each in make test.
CFN_TEMPLATES := deploy/skywarden-readonly-role.yaml deploy/skywarden-readonly-stackset.yaml deploy/skywarden-responder-role.yaml
CFN_LINT_BIN = $(shell command -v cfn-lint 2>/dev/null || echo $(TEST_VENV)/bin/cfn-lint)
SMTP_PYTHON = $(shell python3 -c 'import aiosmtpd' 2>/dev/null && command -v python3 || echo $(TEST_VENV)/bin/python)
# axe-core (from the npm registry) for the dashboard's accessibility test, which injects it into
# each page; pinned, unpacked into .cache/.
AXE_CORE_VERSION := 4.10.3
AXE_CORE_JS := $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION)/axe.min.js
FREE_PORT := python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'


build:
	$(CARGO) build --release --locked

# The default GeoIP database: CC0 country data from the npm registry.
geoip: $(GEOIP_DB)
$(GEOIP_DB):
	mkdir -p $(CACHE_DIR)/geoip/pkg
	(cd $(CACHE_DIR)/geoip && npm pack --silent $(GEOIP_PACKAGE) > package-name.txt)
	tar -xzf $(CACHE_DIR)/geoip/$$(tail -n 1 $(CACHE_DIR)/geoip/package-name.txt) -C $(CACHE_DIR)/geoip/pkg
	cp $(CACHE_DIR)/geoip/pkg/package/geo-whois-asn-country.mmdb $(GEOIP_DB)
	cp $(CACHE_DIR)/geoip/pkg/package/NRO_LICENSE $(CACHE_DIR)/geoip/

# The default ASN tables, beside the country database.
geoip: $(GEOIP_ASN_V4)
$(GEOIP_ASN_V4):
	mkdir -p $(CACHE_DIR)/geoip/asn-pkg
	(cd $(CACHE_DIR)/geoip && npm pack --silent $(GEOIP_ASN_PACKAGE) > asn-package-name.txt)
	tar -xzf $(CACHE_DIR)/geoip/$$(tail -n 1 $(CACHE_DIR)/geoip/asn-package-name.txt) -C $(CACHE_DIR)/geoip/asn-pkg
	cp $(CACHE_DIR)/geoip/asn-pkg/package/asn-ipv6.csv $(GEOIP_ASN_V6)
	cp $(CACHE_DIR)/geoip/asn-pkg/package/ROUTEVIEWS-LICENSE $(CACHE_DIR)/geoip/asn-pkg/package/DBIP-LICENSE $(CACHE_DIR)/geoip/
	cp $(CACHE_DIR)/geoip/asn-pkg/package/asn-ipv4.csv $(GEOIP_ASN_V4)

demo: build geoip
	$(BIN) --data-dir $(DEMO_DATA_DIR) demo --samples samples/incident --geoip $(GEOIP_ALL)

test-tools:
	if ! $(TEST_VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(tuple(int(p) for p in m.version("moto").split(".")[:3]) < $(MOTO_MIN))' >/dev/null 2>&1 || [ ! -x $(MOTO_BIN) ]; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet '$(MOTO_SPEC)'
	fi
	if ! command -v schemathesis >/dev/null 2>&1 && [ ! -x $(TEST_VENV)/bin/schemathesis ]; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet '$(SCHEMATHESIS_SPEC)'
	fi
	if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1 && ! $(TEST_VENV)/bin/python -c 'import aiosmtpd' >/dev/null 2>&1; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet '$(AIOSMTPD_SPEC)'
	fi
	if ! $(TEST_VENV)/bin/python -c 'import pyarrow' >/dev/null 2>&1; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet '$(PYARROW_SPEC)'
	fi
	if ! command -v cfn-lint >/dev/null 2>&1 && [ ! -x $(TEST_VENV)/bin/cfn-lint ]; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet '$(CFN_LINT_SPEC)'
	fi
	# The OCSF 1.1.0 JSON schema (generated from the schema the package ships) and a validator,
	# for the tests of OCSF webhook findings.
	if ! $(TEST_VENV)/bin/python -c 'import ocsf_json_schema, jsonschema_rs' >/dev/null 2>&1; then
		[ -x $(TEST_VENV)/bin/pip ] || python3 -m venv $(TEST_VENV)
		$(TEST_VENV)/bin/pip install --quiet $(OCSF_SCHEMA_SPEC)
	fi
	if [ ! -f $(AXE_CORE_JS) ]; then
		mkdir -p $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION)
		(cd $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION) && npm pack --silent axe-core@$(AXE_CORE_VERSION) > package-name.txt)
		tar -xzf $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION)/$$(tail -n 1 $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION)/package-name.txt) \
			-C $(CACHE_DIR)/axe-core-$(AXE_CORE_VERSION) --strip-components=1 package/axe.min.js
	fi

test: test-tools
	# Style and lint gates first: they fail fast and share nothing with the test build.
	$(CARGO) fmt --all --check
	$(CFN_LINT_BIN) $(CFN_TEMPLATES)
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) build --locked --workspace --tests --bins
	# moto server on a free loopback port, for every test that talks to "AWS".
	moto_port=$$($(FREE_PORT))
	MOTO_IAM_LOAD_MANAGED_POLICIES=true $(MOTO_BIN) -H 127.0.0.1 -p $$moto_port > $(TEST_PG_DIR).moto.log 2>&1 &
	moto_pid=$$!
	serve_pid=
	export SKYWARDEN_TEST_MOTO_URL=http://127.0.0.1:$$moto_port
	# The email tests start tests/support/smtp_sink.py (aiosmtpd) with this Python.
	export SKYWARDEN_TEST_PYTHON=$(SMTP_PYTHON)
	# The Parquet tests write their files with pyarrow from the test venv.
	export SKYWARDEN_TEST_PYARROW_PYTHON=$(TEST_VENV)/bin/python
	# One embedded PostgreSQL for the whole suite, off the standard port (socket only).
	env -u DATABASE_URL $(DEBUG_BIN) --data-dir $(TEST_PG_DIR) db start > $(TEST_PG_DIR).url
	trap 'kill $$moto_pid $$serve_pid 2>/dev/null; env -u DATABASE_URL $(DEBUG_BIN) --data-dir $(TEST_PG_DIR) db stop; rm -rf $(TEST_PG_DIR) $(TEST_PG_DIR).url $(TEST_PG_DIR).moto.log $(TEST_PG_DIR).serve.log' EXIT
	# Schemathesis: requests generated from the OpenAPI document, against a server holding the
	# sample incident, must never get a server error (fixed seed: a failure is reproducible; one
	# worker: schemathesis's threaded runner hit a Python-internal error here once).
	api_db=$$(cat $(TEST_PG_DIR).url)
	DATABASE_URL=$$api_db $(DEBUG_BIN) import samples/incident > /dev/null
	api_token=$$(DATABASE_URL=$$api_db $(DEBUG_BIN) tokens create --name schemathesis --role admin 2>/dev/null)
	api_port=$$($(FREE_PORT))
	DATABASE_URL=$$api_db $(DEBUG_BIN) serve --listen 127.0.0.1:$$api_port --no-pollers > $(TEST_PG_DIR).serve.log 2>&1 &
	serve_pid=$$!
	for _ in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$$api_port) 2>/dev/null && break; sleep 0.1; done
	$(SCHEMATHESIS_BIN) run http://127.0.0.1:$$api_port/api/v1/openapi.json -H "Authorization: Bearer $$api_token" \
		--checks not_a_server_error --max-examples 50 --workers 1 --seed 20261129 \
		|| { echo "server log:"; tail -n 40 $(TEST_PG_DIR).serve.log; exit 1; }
	kill $$serve_pid
	# Free space where the cluster and the build live, before and after (a full disk fails tests
	# in ways that look like bugs).
	df -h $(TEST_PG_DIR) $(TARGET_DIR) || true
	SKYWARDEN_TEST_DATABASE_URL=$$(cat $(TEST_PG_DIR).url) $(CARGO) test --locked --workspace -- --test-threads 2 \
		|| { df -h $(TEST_PG_DIR) $(TARGET_DIR); exit 1; }
	# Every benchmark at a tiny size, so none can rot (the ratios printed mean nothing at this size).
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) import --events 2000
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) import --events 2000 --mix write-heavy
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) archive --events 2000
	$(BENCH_DEBUG_BIN) detect --events 2000 --policies policies
	$(BENCH_DEBUG_BIN) posture --resources 100
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) queries --events 20000 --samples 3
	# The audit trail in headless Chromium over the queries database (debug `skywarden serve`).
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) dashboard --events 5000 --baseline-events 500 --loads 2
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) import-memory --mib 2
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) flow-import --records 5000
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) flows --records 5000 --sample 20
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) spray --events 10000
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) latency --objects 2 --listing-interval 30
	DATABASE_URL=$$api_db $(BENCH_DEBUG_BIN) workers --accounts 6 --regions us-east-1,eu-west-1 --seconds 8 --interval 30
	if [ -d ../shared/fixtures ]; then echo "dataset tests ran over ../shared/fixtures"; \
	else echo "NOTE: ../shared/fixtures is absent: the tests over public datasets checked nothing"; fi

# The benchmarks at full size, release build; each prints its ratio to a baseline measured in
# the same run. They work in scratch databases of the demo's embedded cluster.
bench:
	$(CARGO) build --release --locked -p skywarden-bench
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) import --events 200000
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) import --events 200000 --mix write-heavy
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) archive --events 200000
	$(BENCH_BIN) detect --events 100000 --policies policies
	$(BENCH_BIN) posture --resources 5000
	# Issue 18's size: 10M events, generated once and kept (--reuse) for the dashboard below.
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) queries --events 10000000 --reuse
	# The two below run the release `skywarden` beside the bench's: `serve` for the dashboard (over
	# the queries database, filled up to 10M events), `import` for its peak memory on a 1 GiB dump.
	$(CARGO) build --release --locked -p skywarden --bin skywarden
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) dashboard --events 10000000 --loads 7
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) import-memory --mib 1024
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) flow-import --records 1000000
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) flows --records 2000000
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) spray --events 500000
	# Object written -> alert raised, through SQS against the listing, in a moto server of its own.
	moto_port=$$($(FREE_PORT))
	$(MOTO_BIN) -H 127.0.0.1 -p $$moto_port > /dev/null 2>&1 &
	moto_pid=$$!
	trap 'kill $$moto_pid 2>/dev/null' EXIT
	for _ in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$$moto_port) 2>/dev/null && break; sleep 0.1; done
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) latency --objects 20 --listing-interval 60 \
		--moto-url http://127.0.0.1:$$moto_port
	# 300 accounts x 3 regions polled by 1, 2 and 4 `skywarden worker` processes (the release
	# binary beside the bench's), against the same moto and a LookupEvents fake of the bench's own.
	$(CARGO) build --release --locked -p skywarden --bin skywarden
	$(BENCH_BIN) --data-dir $(DEMO_DATA_DIR) workers --accounts 300 --workers 1,2,4 --seconds 180 \
		--moto-url http://127.0.0.1:$$moto_port

# Refresh .sqlx/ after changing a query. Uses the embedded cluster of an earlier debug build
# and applies the migrations with psql, since the new code cannot build before .sqlx/ is fresh.
sqlx-prepare:
	url=$$(env -u DATABASE_URL $(DEBUG_BIN) --data-dir $(TEST_PG_DIR) db start)
	trap 'env -u DATABASE_URL $(DEBUG_BIN) --data-dir $(TEST_PG_DIR) db stop' EXIT
	psql -q "$$url" -c 'DROP DATABASE IF EXISTS sqlx_prepare' -c 'CREATE DATABASE sqlx_prepare'
	prepare_url=$$(echo "$$url" | sed 's|/skywarden?host=|/sqlx_prepare?host=|')
	for f in migrations/*.sql; do psql -q -v ON_ERROR_STOP=1 "$$prepare_url" -f $$f; done
	rm -rf .sqlx && mkdir .sqlx && touch src/lib.rs
	SQLX_OFFLINE=false SQLX_OFFLINE_DIR=$(CURDIR)/.sqlx DATABASE_URL=$$prepare_url $(CARGO) build --locked

# Fuzzing (nightly toolchain and cargo-fuzz): each target for FUZZ_SECONDS over a copy of its
# corpus; `make test` replays the corpus and mutations of it on stable (tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := json_stream cloudtrail flow_logs snapshot_dump sigma_rule rego_check
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz
	for target in $(FUZZ_TARGETS); do
		mkdir -p target/corpus/$$target
		cp corpus/$$target/* target/corpus/$$target/
		$(CARGO) +nightly fuzz run $$target target/corpus/$$target -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 \
			| tee target/$$target.log | grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|ERROR|SUMMARY'
	done
