# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, run the whole story on the built-in synthetic data
#   make test   - create .venv, install, run the test suite (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch 2.13.0 is installed first where wanted (this machine, CI); the package itself
# only asks for torch>=2.3, so users elsewhere keep theirs.
TORCH_PIN ?= torch==2.13.0
export UNLEARNREC_DATA ?= $(abspath ../shared/data)

.PHONY: demo test test-all test-scale bench install install-scale clean serve

$(BIN)/unlearnrec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/unlearnrec

# Optional extra `scale` (TorchRec sharded tables). torchrec and fbgemm-gpu-cpu (both on PyPI) go in with
# --no-deps: their metadata asks for fbgemm-gpu / the CUDA torch; the 1.9 pair fails to load on torch 2.13.
SCALE_PINS ?= torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0
$(VENV)/.scale-installed: $(BIN)/unlearnrec
	$(BIN)/pip install -q -e '.[test,scale]' $(TORCH_PIN)
	$(BIN)/pip install -q --no-deps $(SCALE_PINS)
	$(BIN)/python -c "import torchrec.distributed.model_parallel, fbgemm_gpu"
	@touch $@

install-scale: $(VENV)/.scale-installed

test-scale: install-scale
	$(BIN)/python -m pytest -q tests/scale

demo: install
	$(BIN)/unlearnrec demo --out runs/demo

serve: install
	$(BIN)/unlearnrec serve --demo

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
