# Shared by tools/*.sh: build directories and the cmake invocation (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/dosql-ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
# Paths relative to the checkout in ccache's keys: a fresh clone elsewhere (CI) hits the cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}

# configure_build DIR [cmake args...]: configure once (again only if the args change), then build
# (only BUILD_TARGETS, when set).
configure_build() {
  local dir=$1; shift
  local stamp="$dir/.dosql-args"
  if [ ! -f "$dir/CMakeCache.txt" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    cmake -S "$ROOT" -B "$dir" -G Ninja "$@"
    echo "$*" > "$stamp"
  fi
  cmake --build "$dir" -j "$JOBS" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
}
