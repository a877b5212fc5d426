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

# npm_deps DIR: installs DIR's npm packages (DIR/package.json, locked by DIR/package-lock.json)
# into DIR/node_modules, only when they are missing or the lock file changed since.
npm_deps() {
  local dir=$1
  [ -f "$dir/package.json" ] || return 0
  local stamp="$dir/node_modules/.dosql-lock"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then return 0; fi
  (cd "$dir" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi) || return 1
  cp "$dir/package-lock.json" "$stamp" 2>/dev/null || true
}
