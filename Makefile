# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU machines get this torch (a local CPU build here); a machine whose python already has a CUDA torch keeps it.
CPU_TORCH ?= torch==2.13.0

DEMO_DATA    := data/demo
DEMO_RESULTS := results/demo

.PHONY: all demo test lint report bench clean
all: test

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
	  echo "CUDA torch found: .venv will use it"; \
	  test -d $(VENV) || $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  test -d $(VENV) || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(CPU_TORCH); \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

$(DEMO_DATA)/listops-1000/basic_train.tsv: | $(STAMP)
	$(BIN)/python -m lra.data listops --out $(DEMO_DATA) --num-train 6000 --num-val 500 --num-test 1000 \
	  --max-depth 3 --min-length 4 --max-length 64 --seed 0

demo: $(STAMP) $(DEMO_DATA)/listops-1000/basic_train.tsv
	rm -f $(DEMO_RESULTS)/runs.jsonl
	$(BIN)/python run.py -m experiment=demo attention=softmax,nalaformer seed=0,1 \
	  data_dir=$(DEMO_DATA) results_dir=$(DEMO_RESULTS)
	$(BIN)/python report.py --results $(DEMO_RESULTS) --check-majority

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

report: $(STAMP)
	$(BIN)/python report.py

bench: $(STAMP)
	$(BIN)/python -m lra.bench

clean:
	rm -rf $(VENV) outputs multirun checkpoints $(DEMO_DATA) $(DEMO_RESULTS)
