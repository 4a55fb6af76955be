# `make demo` and `make test` create/refresh the virtualenv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
DEMO_DIR ?= demo_out
# the training image (Dockerfile) that deploy/k8s/tfjob.yaml runs
IMAGE ?= sdmtcnn-tf:0.1.0

.PHONY: venv demo test test-fast bench image clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# label table of the official CityScapes release; --no-deps keeps matplotlib & co. out
	$(PY) -m pip install --quiet --no-deps cityscapesscripts==2.3.0
	touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m sdmtcnn_tf.demo --out_dir=$(DEMO_DIR)

# pytest-xdist: TEST_WORKERS processes (the tiny test models leave a core idle in one process);
# tests sharing a fixture they modify stay in one worker (tests/conftest.py SEQUENTIAL_FIXTURES)
TEST_WORKERS ?= 2
PYTEST := TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist=loadgroup

test: $(STAMP)
	$(PYTEST) --durations=15 tests

# the inner loop: everything but the end-to-end training runs marked `slow` (a few minutes)
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" --durations=10 tests

bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m sdmtcnn_tf.bench $(BENCH_ARGS)

image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
