# Thin wrapper over CMake. `make test` and `make demo` install missing packages first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all build asan deps install deb fresh-check test test-release test-asan demo bench lint format fuzz fuzz-smoke soak retention valgrind clean

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSOCKTAP_SANITIZE=ON $(CMAKE_ARGS)

asan: $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# socktap, capture2pcap, socktap-trace into $(PREFIX)/bin; socktap-extcap into Wireshark's
# extcap directory (CMake's SOCKTAP_WIRESHARK_EXTCAP_DIR: docs/capture.md, "Live capture").
# DESTDIR stages the whole tree (packaging).
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# fuzz smoke first, so the last line of `make test` is CTest's summary
test: deps
	$(MAKE) build asan
	$(MAKE) fuzz-smoke
	./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

test-release: build
	./scripts/run-tests.sh $(BUILD)

test-asan: asan
	./scripts/run-tests.sh $(ASAN_BUILD)

# a .deb of this tree (scripts/make-deb.sh; build-deb/socktap_VERSION_ARCH.deb)
deb: deps
	./scripts/make-deb.sh build-deb

# the two commands in a minimal Debian root (root only; see the script's header)
fresh-check:
	./scripts/fresh-check.sh

demo: deps
	$(MAKE) build
	./scripts/demo.sh $(BUILD)

bench: deps
	$(MAKE) build
	./bench/run.sh $(BUILD)

lint:
	./scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSOCKTAP_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

FUZZ_SECONDS ?= 20
fuzz-smoke: fuzz
	./fuzz/smoke.sh build-fuzz $(FUZZ_SECONDS)

SOAK_BUILD ?= $(ASAN_BUILD)
soak: deps
	$(MAKE) build asan
	./tests/soak/run.sh $(SOAK_BUILD)

# issue 12's retention run: 10 min of bulk capture under a 1 GiB delete_oldest budget
# (tests/soak/retention.py; RETENTION_ARGS="--seconds 60" for a short one)
retention: deps
	$(MAKE) build
	python3 tests/soak/retention.py --build $(BUILD) $(RETENTION_ARGS)

valgrind: deps
	$(MAKE) build
	./scripts/valgrind.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
