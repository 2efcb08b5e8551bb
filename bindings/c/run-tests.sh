#!/usr/bin/env bash
# Builds the C example and test suite against include/roost.h and the
# release library with a real compiler (warnings are errors), runs them,
# then runs them again under valgrind: any invalid access, or any memory
# definitely or indirectly lost, fails the run.
#
# Needs `cargo build --release` first (target/release/libroost.so).
# Env: ROOST_LIB_DIR (default target/release), CC (default cc),
#      ROOST_VALGRIND=0 to skip the valgrind pass.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lib_dir="${ROOST_LIB_DIR:-$root/target/release}"
cc="${CC:-cc}"
build="$root/target/bindings-c"

if [ ! -f "$lib_dir/libroost.so" ]; then
  echo "missing $lib_dir/libroost.so: run 'cargo build --release' first" >&2
  exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)"
mkdir -p "$build"

cflags=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g -I"$root/include")
link=(-L"$lib_dir" -lroost -Wl,-rpath,"$lib_dir" -pthread)

echo "== compile (C11 and C++ see the same header)"
"$cc" "${cflags[@]}" "$here/example.c" "${link[@]}" -o "$build/example"
"$cc" "${cflags[@]}" -DROOST_EXPECTED_VERSION="\"$version\"" "$here/test_roost.c" "${link[@]}" \
  -o "$build/test_roost"
if command -v c++ >/dev/null 2>&1; then
  printf '#include "roost.h"\nint main(void) { return roost_version() == nullptr; }\n' \
    | c++ -std=c++17 -Wall -Wextra -Werror -pedantic -I"$root/include" -x c++ -fsyntax-only -
fi

echo "== example"
example_dir="$(mktemp -d)"
trap 'rm -rf "$example_dir"' EXIT
"$build/example" "$example_dir/data"

echo "== tests"
"$build/test_roost"

if [ "${ROOST_VALGRIND:-1}" = "0" ]; then
  echo "== valgrind skipped (ROOST_VALGRIND=0)"
  exit 0
fi
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is not installed (bindings/run-ci.sh installs it)" >&2
  exit 1
fi

# Threads that roost parks for reuse and process-wide statics (thread
# locals, the metrics recorder) are still reachable at exit; they are not
# leaks. Only definitely and indirectly lost blocks are errors.
vg=(valgrind --quiet --error-exitcode=1 --leak-check=full
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect
  --track-origins=yes)

echo "== valgrind: example"
"${vg[@]}" "$build/example" "$example_dir/data-vg"
echo "== valgrind: tests"
"${vg[@]}" "$build/test_roost"
echo "== C bindings: all passed, also under valgrind"
