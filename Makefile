# One command to run the service, one to test it; each installs what it needs (.venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BIND   ?= 127.0.0.1:8080
S3_BIND ?= 127.0.0.1:9000
DOWNLOADER_BIND ?= 127.0.0.1:8081
DOWNLOADER_S3_BIND ?= 127.0.0.1:9001

export STORAGE_DATA_DIR ?= $(CURDIR)/var

.PHONY: install run run-downloader test test-storage test-downloader test-sqlite lint bench bench-s3 clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The storage service on the embedded default: SQLite + a local location under var/. A development
# token secret is created under var/ on first run and an admin token is printed.
DEV_SECRET := $(STORAGE_DATA_DIR)/dev-jwt-secret
DEV_ENV = STORAGE_JWT_SECRET="$${STORAGE_JWT_SECRET:-$$(cat $(DEV_SECRET))}"

$(DEV_SECRET):
	@mkdir -p $(STORAGE_DATA_DIR)
	@umask 077; $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $(DEV_SECRET)

# An S3 access key of the admin account, created on first run (its secret is shown only once, so it is
# kept under var/, readable by its owner only).
DEV_S3_KEY := $(STORAGE_DATA_DIR)/dev-s3-access-key.json
S3_KEY_FIELD = $(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' $(DEV_S3_KEY)

run: install $(DEV_SECRET)
	@export $(DEV_ENV); \
	$(BIN)/storage-admin db upgrade && $(BIN)/storage-admin bootstrap && \
	if [ ! -s $(DEV_S3_KEY) ] || ! $(BIN)/storage-admin access-key list | grep -q "$$($(S3_KEY_FIELD) access_key_id)"; then \
	  (umask 077; $(BIN)/storage-admin access-key create --account admin --role admin --description "make run" > $(DEV_S3_KEY)); fi && \
	token=$$($(BIN)/storage-admin token issue --sub admin --role admin --ttl 86400) && \
	key=$$($(S3_KEY_FIELD) access_key_id) && secret=$$($(S3_KEY_FIELD) secret_access_key) && \
	echo && echo "storage service on http://$(BIND)  (data in $(STORAGE_DATA_DIR))" && \
	echo "  admin token (24 h):  export TOKEN=$$token" && \
	echo "  upload:    curl -H \"Authorization: Bearer \$$TOKEN\" -T somefile http://$(BIND)/api/v1/buckets/default/objects/somefile" && \
	echo "  download:  curl -o copy http://$(BIND)/api/v1/buckets/default/objects/somefile   (bucket 'default' is public-read)" && \
	echo "  API:       curl http://$(BIND)/openapi.json" && echo && \
	echo "S3 API on http://$(S3_BIND)  (region us-east-1; access key of the admin account, kept in $(DEV_S3_KEY))" && \
	echo "  export AWS_ACCESS_KEY_ID=$$key AWS_SECRET_ACCESS_KEY=$$secret AWS_DEFAULT_REGION=us-east-1" && \
	echo "  aws --endpoint-url http://$(S3_BIND) s3 cp somefile s3://default/somefile" && \
	echo "  aws --endpoint-url http://$(S3_BIND) s3 ls s3://default/" && \
	echo "  rclone --s3-provider Other --s3-endpoint http://$(S3_BIND) --s3-access-key-id $$key --s3-secret-access-key $$secret ls :s3:default" && \
	echo && \
	STORAGE_BIND=$(BIND) STORAGE_S3_BIND=$(S3_BIND) exec $(BIN)/storage-service

# The downloader profile on the same data and secret (run `make run` once first to create them).
run-downloader: install $(DEV_SECRET)
	@export $(DEV_ENV); \
	$(BIN)/storage-admin db upgrade && \
	echo "downloader on http://$(DOWNLOADER_BIND): curl -o copy http://$(DOWNLOADER_BIND)/api/v1/buckets/default/objects/somefile" && \
	echo "  S3 (GetObject, HeadObject) on http://$(DOWNLOADER_S3_BIND): aws --endpoint-url http://$(DOWNLOADER_S3_BIND) s3 cp s3://default/somefile copy" && \
	STORAGE_BIND=$(DOWNLOADER_BIND) STORAGE_S3_BIND=$(DOWNLOADER_S3_BIND) exec $(BIN)/downloader-service

# The whole suite once per profile, on PostgreSQL and moto's S3 server (both started by fixtures/CI), then the
# SQLite lane: the embedded default of `make run` under the download, range, quota, upload, CLI, health, plan and
# concurrency tests (tests marked postgresql are skipped there).
test: install test-storage test-downloader test-sqlite

SQLITE_TESTS := tests/test_downloads.py tests/test_ranges.py tests/test_quota.py tests/test_uploads.py \
	tests/test_cli.py tests/test_health.py tests/test_concurrency.py tests/test_sqlite.py tests/test_scale.py

test-storage: install
	STORAGE_PROFILES=storage $(BIN)/pytest $(PYTEST_ARGS)

test-downloader: install
	STORAGE_PROFILES=downloader $(BIN)/pytest $(PYTEST_ARGS)

test-sqlite: install
	STORAGE_TEST_DATABASE=sqlite STORAGE_PROFILES=storage $(BIN)/pytest $(SQLITE_TESTS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# the S3 API's figures alone (issue 11): GetObject vs the native path, signed vs anonymous, multipart upload
bench-s3: install
	$(BIN)/python -m bench.run --only throughput:s3-small,s3-big,s3-signed $(BENCH_ARGS)
	$(BIN)/python -m bench.run --only s3-upload $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache .ruff_cache .hypothesis
