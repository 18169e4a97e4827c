# Everything a fresh machine needs, from the project's own files. `make search` and `make test` are the two
# commands of the README; CI (.ci/run) runs `make test`, `make test-all` and `make cuda-check`.
PYTHON ?= python3
VENV ?= .venv
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.14.1
CUDA_HOME ?= /usr/local/cuda
DEPS = "triton>=3.6,<3.10" numpy ninja pytest pytest-xdist expecttest hypothesis tqdm matplotlib scikit-learn scipy \
	pytest-benchmark torch_geometric nas-bench-graph==1.4.0 mnist1d==0.0.2.post1
# The field's own search code, for the drop-in's tests and bench/bench_fuse.py (README, "The drop-in"): xautodl (its
# numpy pin cannot be met and its models need only torch: without its dependencies) and NNI 3.0 with the Lightning
# packages its one-shot strategies import (its own pins move filelock to < 3.12 and typeguard to < 4.1.3).
PEER_NODEPS = xautodl==1.0.0
PEER_DEPS = nni==3.0 pytorch-lightning==2.6.6 torchmetrics==1.9.0

.PHONY: all env build test test-all search search-digits compare compare-digits groundtruth rank pareto latency-table \
	compare-cells sweep morph compare-morph gnn-compare gnn-edges \
	compare-strategies-gnn nbgraph bench bench-check cuda-check clean

all: test

$(VENV)/.deps: pyproject.toml
	@echo "setting up $(VENV): torch and the test dependencies (the first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "setuptools>=70" wheel
	$(VENV)/bin/pip install --progress-bar on $(TORCH_CPU) $(DEPS) | grep -E '^(Collecting|Downloading|Installing|Successfully)' || true
	$(VENV)/bin/pip install --progress-bar on $(PEER_DEPS) | grep -E '^(Collecting|Installing|Successfully)' || true
	$(VENV)/bin/pip install --progress-bar on --no-deps $(PEER_NODEPS) | grep -E '^(Collecting|Installing|Successfully)' || true
	$(VENV)/bin/python -c "import torch, triton, hypothesis, xdist, nas_bench_graph, mnist1d, xautodl.models"  # the install above succeeded
	touch $@

env: $(VENV)/.deps

# The editable install: Python edits need no rebuild, so the extension is compiled again only when one of its
# sources (or the build files) changed.
EXT_SOURCES = setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h)
$(VENV)/.built: $(VENV)/.deps $(EXT_SOURCES)
	@echo "building the C++ extension (about a minute; only when csrc/ changed)"
	$(VENV)/bin/pip install -q -e . --no-build-isolation
	touch $@

build: $(VENV)/.built
ifeq ($(wildcard snas_fast/_C*.so),)
.PHONY: $(VENV)/.built
endif

# The suite on two workers (pytest-xdist): `make test` without the slow cases (the Triton interpreter, the property
# tests, end-to-end runs of several epochs: tests/conftest.py), `make test-all` with them. CI runs both.
TEST_WORKERS ?= 2
test: build
	$(VENV)/bin/python -m pytest -q -m "not slow" -n $(TEST_WORKERS)

# The property tests run in a process of their own, so that hypothesis draws the same examples whatever xdist does
# with the rest of the suite; then the benchmarks' own unit tests (their helpers and bench-check's decisions, no
# timing).
test-all: build
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --ignore tests/test_properties.py
	$(VENV)/bin/python -m pytest -q tests/test_properties.py
	$(VENV)/bin/python -m pytest -q bench/test_check.py bench/test_bench_helpers.py

# The main job: SNAS on the darts1d space (DARTS cells of 1-D candidates) on MNIST-1D, the short recipe
# (snas_fast.search.snas.RECIPES; README, "MNIST-1D"), ending with the convergence report. Run again, it continues
# (or reports) the run in runs/mnist1d instead of replacing it. `make search-digits`: the same on the digits.
search: build
	$(VENV)/bin/snas-fast search $(if $(wildcard runs/mnist1d/checkpoint.pt),--resume runs/mnist1d,--space darts1d \
		--out runs/mnist1d)

search-digits: build
	$(VENV)/bin/snas-fast search $(if $(wildcard runs/digits/checkpoint.pt),--resume runs/digits,--dataset digits \
		--out runs/digits)

# Every strategy side by side on MNIST-1D (snas-fast compare; README, "MNIST-1D"), 3 seeds: those of the darts1d
# space, the four SNAS Bag-of-Tricks ablations and MNIST-1D's four published references (150 epochs, their published
# length), every row placed in the ground truth (bench/groundtruth/); then the morphism strategies on the morph
# space's 1-D form. Every result retrained with one recipe and reported on the 1000 test sequences. The cells are
# shared out over COMPARE_PROCS processes of one thread each (torchrun). Resumable: run it again to continue.
COMPARE_PROCS ?= 2
GROUNDTRUTH = bench/groundtruth/darts1d-mnist1d.csv
# darts1d's retraining recipe (snas_fast.spaces.darts1d.space.RECIPE), given to the morph space's retrainings
MNIST1D_RECIPE = --optimizer adam --lr 0.01 --weight-decay 0 --batch-size 100 --epochs 10 --drop-path 0
COMPARE_STRATEGIES ?= snas,snas-pt,darts,random,rsws,naswot,monas,evolution,bo
COMPARE_ABLATIONS ?= snas+warmup,snas+no-bn-recal,snas+tau-exp,snas+no-arch-wd
COMPARE_SEARCH_EPOCHS ?= 10
compare: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
		$(if $(wildcard runs/compare-mnist1d/config.json),--resume runs/compare-mnist1d,--out runs/compare-mnist1d \
		--space darts1d --strategies $(COMPARE_STRATEGIES),$(COMPARE_ABLATIONS) --seeds 3 --baselines convbase,mlp,gru,logistic \
		--baseline-epochs 150 --search-epochs $(COMPARE_SEARCH_EPOCHS) --groundtruth $(GROUNDTRUTH))
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
		$(if $(wildcard runs/compare-mnist1d-morph/config.json),--resume runs/compare-mnist1d-morph,--out \
		runs/compare-mnist1d-morph --space morph --dataset mnist1d --strategies morph-bo,morph-random --seeds 3 \
		$(MNIST1D_RECIPE) --groundtruth $(GROUNDTRUTH))

# The strategies on the digits, 2 seeds (README, "Comparing strategies"): SNAS, SNAS-PT, random search, RS-WS,
# NASWOT and the four ablations. Resumable.
COMPARE_DIGITS = snas,snas-pt,random,rsws,naswot,snas+warmup,snas+no-bn-recal,snas+tau-exp,snas+no-arch-wd
compare-digits: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
		$(if $(wildcard runs/compare/config.json),--resume runs/compare,--out runs/compare --dataset digits \
		--strategies $(COMPARE_DIGITS) --seeds 2)

# The ground truth that ships in bench/groundtruth/ (README, "MNIST-1D"): 100 darts1d cells drawn uniformly, each
# trained by the retraining recipe on MNIST-1D, the first 20 at 3 seeds; two processes of one thread each.
# Resumable; the CSV is copied into the repository at the end.
groundtruth: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast groundtruth \
		$(if $(wildcard runs/groundtruth-darts1d/config.json),--resume runs/groundtruth-darts1d,--space darts1d \
		--archs 100 --seeds 3 --seeded-archs 20 --out runs/groundtruth-darts1d)
	mkdir -p bench/groundtruth && cp runs/groundtruth-darts1d/groundtruth.csv $(GROUNDTRUTH)

# Each cheap proxy (NASWOT, the RS-WS and SNAS supernets' shared weights, 2 epochs of training) against the ground
# truth: Kendall tau and Spearman rho with bootstrap intervals (snas-fast rank; README, "MNIST-1D").
rank: build
	$(VENV)/bin/snas-fast rank --space darts1d --groundtruth $(GROUNDTRUTH) --epochs 2 --out runs/rank-mnist1d \
		--overwrite

# The query-based strategies on NAS-Bench-Graph's nine tables (snas-fast benchmark; README, "NAS-Bench-Graph"):
# random, regularized evolution, MONAS's controller and BO, NBGRAPH_BUDGET queries each, NBGRAPH_SEEDS seeds, every
# pick reported by its test value against random search and the table's oracles; MONAS on latency
# as a multi-objective front. Two processes of one thread each. Resumable: run it again to continue.
NBGRAPH_DATASETS ?= cora citeseer pubmed cs physics photo computers arxiv proteins
NBGRAPH_SEEDS ?= 20
NBGRAPH_BUDGET ?= 500
nbgraph: build
	for d in $(NBGRAPH_DATASETS); do \
		if [ -f runs/nbgraph/$$d/config.json ]; then args="--resume runs/nbgraph/$$d"; \
		else args="--space nbgraph --out runs/nbgraph/$$d --dataset $$d --seeds $(NBGRAPH_SEEDS) \
			--budget $(NBGRAPH_BUDGET) --strategies random,evolution,monas,bo,monas+latency --procs 2"; fi; \
		OMP_NUM_THREADS=1 $(VENV)/bin/snas-fast benchmark $$args --quiet || exit 1; \
	done
	$(VENV)/bin/python bench/nbgraph_table.py runs/nbgraph

# The accuracy-MAC front of SNAS (lambda sweep), MONAS (sweep of its reward's accuracy weight) and random sampling
# on the digits, every architecture retrained with one recipe (README, "Multi-objective search"). Resumable.
pareto: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast pareto \
		$(if $(wildcard runs/pareto/config.json),--resume runs/pareto,--out runs/pareto --dataset digits)

# The measured latency of every candidate on every edge of the digits search network (1 thread), checked on 20
# random children.
latency-table: build
	$(VENV)/bin/snas-fast latency-table --threads 1 --out runs/latency/cpu.json

# The searched cell of `make search` (runs/mnist1d) against 3 random cells, each retrained with one recipe, and
# placed in the ground truth.
compare-cells: build
	$(VENV)/bin/python bench/compare_cells.py --search runs/mnist1d --random 3 --out runs/mnist1d-cells \
		--groundtruth $(GROUNDTRUTH)

# The evidence for the short recipe's settings: a sweep of log_alpha's optimiser, rate and run length.
sweep: build
	$(VENV)/bin/python bench/sweep_digits.py --out runs/digits-sweep --jobs 2

# Auto-Keras's network-morphism search on the digits (README, "Network morphism"): 10 minutes of Bayesian
# optimisation over the edit-distance kernel, one thread. Run again, it continues (or reports) runs/morph.
morph: build
	$(VENV)/bin/snas-fast morph --threads 1 $(if $(wildcard runs/morph/history.csv),--resume runs/morph,		--dataset digits --budget 10 --out runs/morph)

# morph-bo against its ablations (morph-random, morph-bfs), 3 seeds, MORPH_BUDGET minutes of search each, every
# result trained again from scratch with the comparison's recipe. Resumable.
MORPH_BUDGET ?= 3
compare-morph: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
		$(if $(wildcard runs/compare-morph/config.json),--resume runs/compare-morph,--out runs/compare-morph \
		--space morph --dataset digits --strategies morph-bo,morph-random,morph-bfs --seeds 3 \
		--morph-budget $(MORPH_BUDGET))

# Every strategy the graph space takes, side by side on it (README, "Any strategy on any space"): digits-graph cut to
# 300 graphs per part, short budgets, 3 seeds, each result retrained 5 epochs. Resumable.
COMPARE_GNN = snas,darts,random,rsws,naswot,monas,evolution,bo
compare-strategies-gnn: build
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
		$(if $(wildcard runs/compare-gnn/config.json),--resume runs/compare-gnn,--out runs/compare-gnn --space gnn \
		--dataset digits-graph --data-limit 300 --strategies $(COMPARE_GNN) --seeds 3 --search-epochs 4 --archs 20 \
		--random-archs 4 --random-epochs 2 --epochs 5)

# EGNAS's graph space against PyG baselines (README, "Graph networks (EGNAS)"): on each of GNN_DATASETS, SNAS, first-
# order DARTS, random and evolution searches (3 seeds; random and evolution given about SNAS's search seconds), each
# result and the five PyG baselines (at GNN_BUDGET parameters, the width-16 networks') trained with one recipe and
# tested on the fixed test graphs. GNN_CHANNELS=32 GNN_BUDGET=124000 is the second budget; GNN_LAYERS=4 searches
# networks of 4 cells (the ablation's one change that helped; with GNN_CHANNELS=11 they have GNN_BUDGET's
# parameters). The recipe: GNN_DATA_LIMIT graphs per part, GNN_SEARCH_EPOCHS of search (random and evolution: 6
# architectures x GNN_RANDOM_EPOCHS), GNN_EPOCHS of retraining; a value other than the default shows in the run's
# name (-l4, -n600, ...). Resumable: run it again to continue.
GNN_DATASETS ?= sbm-cluster digits-graph
GNN_CHANNELS ?= 16
GNN_BUDGET ?= 32000
GNN_LAYERS ?= 2
GNN_DATA_LIMIT ?= 200
GNN_SEARCH_EPOCHS ?= 4
GNN_RANDOM_EPOCHS ?= 2
GNN_EPOCHS ?= 10
GNN_COMPARE = --space gnn --strategies snas,darts,random,evolution --baselines gcn,gin,gated,gat,sage --seeds 3 \
	--channels $(GNN_CHANNELS) --param-budget $(GNN_BUDGET) --data-limit $(GNN_DATA_LIMIT) \
	--search-epochs $(GNN_SEARCH_EPOCHS) --random-archs 6 --random-epochs $(GNN_RANDOM_EPOCHS) --epochs $(GNN_EPOCHS) \
	--batch-size 16 --search-batch-size 8 --search-layers $(GNN_LAYERS)
GNN_RUN = $(GNN_CHANNELS)$(if $(filter-out 2,$(GNN_LAYERS)),-l$(GNN_LAYERS))$(if $(filter-out 200,\
	$(GNN_DATA_LIMIT)),-n$(GNN_DATA_LIMIT))$(if $(filter-out 4,$(GNN_SEARCH_EPOCHS)),-s$(GNN_SEARCH_EPOCHS))$(if \
	$(filter-out 2,$(GNN_RANDOM_EPOCHS)),-r$(GNN_RANDOM_EPOCHS))$(if $(filter-out 10,$(GNN_EPOCHS)),-e$(GNN_EPOCHS))
gnn-compare: build
	for d in $(GNN_DATASETS); do out=runs/gnn-compare-$$d-$(GNN_RUN); \
		if [ -f $$out/config.json ]; then args="--resume $$out"; \
		else args="--out $$out --dataset $$d $(GNN_COMPARE)"; fi; \
		OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(COMPARE_PROCS) -m snas_fast compare \
			$$args || exit 1; done

# The datasets whose labels depend on the edge features (README, "Graph networks (EGNAS)"): on each of
# EDGE_DATASETS, an SNAS search (runs/gnn-edges-<dataset>; 10 epochs, 30 on sbm-keyed, whose supernet begins to
# decode its edges only after 12), then its genotype against the same genotype with random edge operations, 3 seeds
# x EDGE_DRAWS draws (bench/gnn_edges.py, runs/gnn-edges-<dataset>-control). Resumable.
EDGE_DATASETS ?= sbm-edges sbm-keyed
EDGE_DRAWS ?= 3
gnn-edges: build
	for d in $(EDGE_DATASETS); do out=runs/gnn-edges-$$d; \
		if [ -f $$out/checkpoint.pt ]; then args="--resume $$out"; \
		else case $$d in sbm-keyed) epochs=30;; *) epochs=10;; esac; \
			args="--space gnn --dataset $$d --channels 16 --epochs $$epochs --data-limit 200 --batch-size 8 \
				--out $$out"; fi; \
		$(VENV)/bin/snas-fast search --threads 1 --quiet $$args || exit 1; \
		$(VENV)/bin/python bench/gnn_edges.py --search $$out --seeds 3 \
			--draws $(EDGE_DRAWS) --data-limit 200 || exit 1; done

# The CPU suite, quick settings (each script under 3 minutes on 2 idle cores); the full runs drop --quick.
bench: build
	rm -f bench/results.csv
	$(VENV)/bin/python bench/bench_mixed_op.py --quick --csv bench/results.csv
	$(VENV)/bin/python bench/bench_search_step.py --quick --csv bench/results.csv
	$(VENV)/bin/python bench/bench_fuse.py --quick --csv bench/results.csv
	$(VENV)/bin/python bench/plot.py bench/results.csv --out bench/plots

# The speed guard (issue 31): the op and search-step benchmarks on the configs of bench/RESULTS.md's "Guard figures"
# table; fails when a ratio is worse than recorded there by more than the noise band the same run measures
# (bench/check.py). A benchmark, not a timed test: CI (.ci/run) does not run it. 2 min 3-8 s on 2 idle cores
# (2026-12-07: 3 op configs x 40 repetitions, the step at C = 16, 8 cells, 32x32, batch 16 x 10 repetitions).
bench-check: build
	$(VENV)/bin/python bench/check.py

# Compile-only check of the CUDA kernels: a CUDA build of torch in its own environment, the extension built
# against it into build/cuda-check, loaded, and its ops asked for CUDA kernels. No GPU needed.
.venv-cuda/.deps:
	$(PYTHON) -m venv .venv-cuda
	.venv-cuda/bin/pip install -q --upgrade "setuptools>=70" wheel
	.venv-cuda/bin/pip install -q --no-compile $(TORCH_CUDA) numpy ninja  # no .pyc: it only compiles and loads once
	touch $@

cuda-check: .venv-cuda/.deps
	CUDA_HOME=$(CUDA_HOME) TORCH_CUDA_ARCH_LIST=9.0 SNAS_FAST_CUDA=1 \
		.venv-cuda/bin/python setup.py -q build_ext --build-lib build/cuda-check/lib --build-temp build/cuda-check/tmp
	.venv-cuda/bin/python tools/check_cuda_build.py build/cuda-check/lib

clean:
	rm -rf build *.egg-info snas_fast/_C*.so $(VENV)/.built
