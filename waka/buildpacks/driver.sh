#!/usr/bin/env bash
# Runs one build's buildpacks in the build environment (a stack container, or this host), in a
# single run so a build pays for one container start, not one per detect/compile/release.
#
# usage: driver.sh MODE META BUILD_DIR CACHE_DIR ENV_DIR BUILDPACK_DIR...
#   MODE detect: compile only the first buildpack whose bin/detect accepts the app.
#   MODE all:    compile every buildpack in order (the app chose them; detect only names them).
# For waka, in META: "used" (index TAB name per compiled buildpack), "release.yml" (the last
# buildpack's bin/release output) and, when the build fails, "error" saying what failed.
set -u
mode=$1 meta=$2 build=$3 cache=$4 envdir=$5
shift 5
buildpacks=("$@")

fail() {
  printf '%s\n' "$*" > "$meta/error"
  exit 1
}

detect() {  # detect INDEX -> the buildpack's name on stdout (first line), exit status = accepted
  local bp=${buildpacks[$1]} name
  [ -x "$bp/bin/detect" ] || return 1
  name=$("$bp/bin/detect" "$build" </dev/null 2>/dev/null) || return 1
  name=${name%%$'\n'*}
  printf '%s\n' "${name:-$(basename "$bp")}"
}

chosen=()
names=()
if [ "$mode" = detect ]; then
  for i in "${!buildpacks[@]}"; do
    if name=$(detect "$i"); then
      chosen=("$i")
      names=("$name")
      break
    fi
  done
  [ ${#chosen[@]} -gt 0 ] || fail nodetect
else
  for i in "${!buildpacks[@]}"; do
    chosen+=("$i")
    names+=("$(detect "$i" || true)")
  done
fi

exports=()
for n in "${!chosen[@]}"; do
  i=${chosen[$n]}
  bp=${buildpacks[$i]}
  name=${names[$n]}
  printf '%s\t%s\n' "$i" "$name" >> "$meta/used"
  [ -n "$name" ] && echo "-----> $name app detected"
  # An earlier buildpack's `export` file hands environment to later ones (Heroku multi-buildpack).
  (
    set +u
    for file in "${exports[@]}"; do
      # shellcheck disable=SC1090
      . "$file"
    done
    cd "$build" && exec "$bp/bin/compile" "$build" "$cache" "$envdir" </dev/null
  )
  status=$?
  [ $status -eq 0 ] || fail compile "$i" "$status"
  [ -f "$bp/export" ] && exports+=("$bp/export")
done

last=${buildpacks[${chosen[-1]}]}
if [ -x "$last/bin/release" ]; then
  (cd "$build" && exec "$last/bin/release" "$build" </dev/null > "$meta/release.yml")
  status=$?
  [ $status -eq 0 ] || fail release "${chosen[-1]}" "$status"
fi
exit 0
