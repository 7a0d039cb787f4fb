#!/usr/bin/env bash
# Compares a benchmark at two revisions on a machine whose load moves: it
# builds the test binary of each, then runs them alternately, pair by
# pair, so that both see the same hour; each run prints one line. The
# figures in the README's "alternated pairs" were taken this way.
#
#   bash lab/bench-pairs.sh OLD NEW PAIRS BENCH [PACKAGE]
#   bash lab/bench-pairs.sh HEAD~1 . 4 'DialOutReplicas$' ./api/
#   BENCHTIME=4000x bash lab/bench-pairs.sh HEAD . 3 'LegChange' ./storage/
#
#   OLD_ENV= NEW_ENV=GOGC=400 bash lab/bench-pairs.sh . . 5 'DialOut$/emulator=process'
#
# OLD and NEW are git revisions; "." is the working tree as it is. The
# environment goes through (CONVOICE_TEST_POSTGRES for the PostgreSQL
# variants); BENCHTIME is -test.benchtime (default 1x). OLD_ENV and
# NEW_ENV add settings to one side's runs (space-separated NAME=value),
# to compare a setting on the same code.
set -euo pipefail
old=${1:?old revision}
new=${2:?new revision}
pairs=${3:?number of pairs}
bench=${4:?benchmark regex}
pkg=${5:-./api/}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
cleanup() {
	for side in old new; do
		[ -d "$work/$side" ] && git -C "$root" worktree remove --force "$work/$side" >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
# tree SIDE REV: the source tree a side is built and run in.
tree() {
	if [ "$2" = "." ]; then
		echo "$root"
	else
		git -C "$root" worktree add --detach -q "$work/$1" "$2"
		echo "$work/$1"
	fi
}
old_tree=$(tree old "$old")
new_tree=$(tree new "$new")
(cd "$old_tree" && go test -c -o "$work/old.test" "$pkg")
(cd "$new_tree" && go test -c -o "$work/new.test" "$pkg")
# The side that runs first in a pair has an edge: the run before it
# leaves the disk writing back its dirty pages into the next one (in
# BenchmarkDialOut the first side had fewer joins over 5 ms in 13 of 15
# pairs, whichever revision it was). So every run starts after a sync,
# and the order flips from pair to pair (old new, new old, ...).
for i in $(seq 1 "$pairs"); do
	order="old new"
	[ $((i % 2)) = 0 ] && order="new old"
	for side in $order; do
		if [ "$side" = old ]; then src=$old_tree sets=${OLD_ENV:-}; else src=$new_tree sets=${NEW_ENV:-}; fi
		sync
		# In the package's directory, as go test runs it.
		# shellcheck disable=SC2086 # sets is a list of NAME=value words
		(cd "$src/$pkg" && env $sets "$work/$side.test" -test.run '^$' -test.bench "$bench" \
			-test.benchtime "${BENCHTIME:-1x}" -test.count 1 >"$work/out" 2>&1) || true
		line=$(grep '^Benchmark' "$work/out" | tr -s ' \t' ' ' || true)
		printf '%s %s %s\n' "$i" "$side" "${line:-no result}"
		# A run without a result failed: say why.
		[ -n "$line" ] || tail -n 15 "$work/out" | sed 's/^/    /'
	done
done
