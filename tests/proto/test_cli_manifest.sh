#!/bin/sh
# CLI test for `batchdet manifest validate`: exit codes 0 (valid), 1 (invalid or
# unreadable), 2 (usage), and error lines that name the field.
# Usage: test_cli_manifest.sh DATA_DIR   (env BATCHDET: the binary under test)
set -u
data=$1
bin=${BATCHDET:?BATCHDET must name the batchdet binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# check NAME WANT_RC PATTERN -- ARGS...: runs batchdet ARGS, checks the exit code and
# that stdout+stderr contain PATTERN (a fixed string; empty = no check).
check() {
  name=$1 want=$2 pat=$3
  shift 4
  "$bin" "$@" >"$tmp/out" 2>&1 </dev/null
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL $name: exit $rc, want $want"; cat "$tmp/out"; fails=$((fails + 1)); return
  fi
  if [ -n "$pat" ] && ! grep -qF -- "$pat" "$tmp/out"; then
    echo "FAIL $name: output lacks: $pat"; cat "$tmp/out"; fails=$((fails + 1)); return
  fi
  echo "ok   $name"
}

check valid 0 "ok: 3 images" -- manifest validate "$data/valid.json"
check scheme 1 'images[3].url: unsupported scheme "ftp"' -- manifest validate "$data/bad_scheme.json"
check multi_job 1 'job: must be 1..128 chars of [A-Za-z0-9._-]' -- manifest validate "$data/bad_multi.json"
check multi_dup 1 'images[1].id: duplicate id "img-1" (first at images[0])' -- manifest validate "$data/bad_multi.json"
check multi_s3 1 'images[1].url: s3 URL needs a key' -- manifest validate "$data/bad_multi.json"
check multi_count 1 'invalid: 3 errors' -- manifest validate "$data/bad_multi.json"
check version 1 'v: unsupported version 2 (this build reads 1)' -- manifest validate "$data/bad_version.json"
check truncated 1 'json: line 1 column' -- manifest validate "$data/truncated.json"
check missing_file 1 'cannot open' -- manifest validate "$tmp/no-such-file.json"
check no_subcommand 2 'usage: batchdet manifest validate' -- manifest
check bad_subcommand 2 "unknown subcommand 'check'" -- manifest check "$data/valid.json"
check no_file 2 'expected exactly one FILE' -- manifest validate
check two_files 2 'expected exactly one FILE' -- manifest validate "$data/valid.json" "$data/valid.json"
check help 0 'Exit status: 0 valid, 1 invalid' -- manifest --help

# one error per line: the multi-error file gives exactly 3 field lines + the summary
"$bin" manifest validate "$data/bad_multi.json" 2>"$tmp/err" >/dev/null
n=$(wc -l <"$tmp/err")
if [ "$n" -ne 4 ]; then echo "FAIL lines: $n lines on stderr, want 4"; cat "$tmp/err"; fails=$((fails + 1)); else echo "ok   lines"; fi

# standard input, and errors on stderr only
"$bin" manifest validate - <"$data/valid.json" >"$tmp/out" 2>"$tmp/err"
if [ $? -ne 0 ] || [ "$(cat "$tmp/out")" != "ok: 3 images" ] || [ -s "$tmp/err" ]; then
  echo "FAIL stdin"; fails=$((fails + 1)); else echo "ok   stdin"; fi
"$bin" manifest validate - <"$data/bad_scheme.json" >"$tmp/out" 2>"$tmp/err"
if [ $? -ne 1 ] || [ -s "$tmp/out" ] || ! grep -qF 'images[3].url' "$tmp/err"; then
  echo "FAIL stdin_bad"; fails=$((fails + 1)); else echo "ok   stdin_bad"; fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
