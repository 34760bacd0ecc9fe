# Thin wrapper over CMake and the scripts; the scripts are the real interface.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all asan test run clean fuzz bench demo

all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFENCE_SANITIZE=OFF
	cmake --build build -j$(JOBS)

asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFENCE_SANITIZE=ON
	cmake --build build-asan -j$(JOBS)

test:
	./scripts/test.sh

run:
	./scripts/run.sh

demo:
	./scripts/demo.sh

# Build trees only; run/ holds the data and token store of scripts/run.sh.
clean:
	rm -rf build build-asan

fuzz:
	@if [ -x tests/fuzz/run.sh ]; then tests/fuzz/run.sh; \
	else echo "make fuzz: tests/fuzz/run.sh does not exist" >&2; exit 1; fi

bench:
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	else echo "make bench: bench/run.sh does not exist" >&2; exit 1; fi
