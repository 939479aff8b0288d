# shellcheck shell=sh
# Steps of the Python buildpack's bin/compile that run the app's own code, sourced by it (with
# `set -eu`; the steps run with the app dir as the working directory, config vars exported).

# error_block: a message on stdin, printed as Heroku prints a build error: each line behind
# " !     ", a bare " !" between paragraphs, a blank line around. The first paragraph is what
# the push's summary line says.
error_block() {
  echo
  while IFS= read -r line; do
    if [ -n "$line" ]; then
      echo " !     $line"
    else
      echo " !"
    fi
  done
  echo
}

# provide_python_command DIR: hooks and manage.py commands say `python`, as on Heroku. A link
# in DIR, first on PATH, makes that the python3 the dependencies were installed for (the stack
# may have no `python` at all).
provide_python_command() {
  mkdir -p "$1"
  ln -s "$(command -v python3)" "$1/python"
  export PATH="$1:$PATH"
}

# run_hook NAME: the app's bin/NAME (pre_compile, post_compile), when it has one. Its output is
# part of the build's; a hook that fails fails the build.
run_hook() {
  hook="bin/$1"
  [ -f "$hook" ] || return 0
  echo "-----> Running $hook hook"
  chmod +x "$hook" 2>/dev/null || true
  status=0
  "./$hook" </dev/null 2>&1 || status=$?
  [ "$status" -eq 0 ] && return 0
  error_block <<MESSAGE
Error: the app's $hook script failed (exit status $status).

This app has a $hook script, so the build ran it; it exited with a
non-zero status. Fix what its output above shows, or remove or rename it
so the build no longer runs it.
MESSAGE
  exit 1
}

# collectstatic SCRATCH_DIR: Django's `manage.py collectstatic --noinput` for an app that has Django
# installed and a manage.py (the shallowest, up to 3 levels down), as Heroku runs it. Any
# DISABLE_COLLECTSTATIC but 0 skips it; a failure fails the build.
collectstatic() {
  if [ "${DISABLE_COLLECTSTATIC:-0}" != 0 ]; then
    echo "-----> Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set."
    return 0
  fi
  python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("django") is None)' \
    >/dev/null 2>&1 || return 0
  manage=$(find . -maxdepth 3 -type f -name manage.py -printf '%d\t%P\n' | sort -n |
    head -n 1 | cut -f 2)
  if [ -z "$manage" ]; then
    echo "-----> Skipping Django collectstatic since no manage.py file found."
    return 0
  fi
  # An app without django.contrib.staticfiles has no collectstatic command: nothing to do.
  if ! python "$manage" help collectstatic </dev/null >/dev/null 2>&1; then
    echo "-----> Skipping Django collectstatic since the app has no collectstatic command" \
      "(django.contrib.staticfiles is not in INSTALLED_APPS)."
    return 0
  fi
  echo "-----> \$ python $manage collectstatic --noinput"
  # One line per copied file is noise in a build log; the summary line stays.
  {
    status=0
    python "$manage" collectstatic --noinput --traceback </dev/null 2>&1 || status=$?
    echo "$status" >"$1/collectstatic.status"
  } |
    grep --line-buffered -v -e '^Post-processed' -e '^Copying' -e '^$' || true
  status=$(cat "$1/collectstatic.status")
  [ "$status" = 0 ] && return 0
  error_block <<MESSAGE
Error: could not collect the app's Django static files.

\`python $manage collectstatic --noinput\` failed (exit status $status);
its traceback is above. Fix the app (a missing STATIC_ROOT setting is a
common cause), or turn the step off for this app:

   \$ heroku config:set DISABLE_COLLECTSTATIC=1

https://devcenter.heroku.com/articles/django-assets
MESSAGE
  exit 1
}
