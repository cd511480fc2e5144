# siam: `make` builds, `make test` runs the CPU suite, `make demo` is the main job.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build test test-asan bench reference demo clean

all: build

deps:
	@scripts/deps.sh build

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIAM_SANITIZE=ON -DSIAM_BUILD_BENCH=OFF $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

bench: build
	OMP_NUM_THREADS=$(JOBS) $(BUILD)/siam_bench --benchmark_format=json --benchmark_out=$(BUILD)/bench.json --benchmark_out_format=json
	@scripts/deps.sh reference
	BUILD=$(BUILD) bench/cpu_step_side_by_side.sh 3 $(JOBS)

reference:
	@scripts/deps.sh reference
	/usr/bin/python3 tools/reference/gen_ops.py tests/fixtures/ops
	/usr/bin/python3 tools/reference/gen_models.py tests/fixtures/models
	/usr/bin/python3 tools/reference/gen_optim.py tests/fixtures/optim
	/usr/bin/python3 tools/reference/gen_ssl_train.py tests/fixtures/ssl
	/usr/bin/python3 tools/reference/gen_eval.py tests/fixtures/eval
	/usr/bin/python3 tools/reference/make_verify_file.py tests/fixtures/verify

demo: deps
	BUILD=$(BUILD) scripts/demo.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
