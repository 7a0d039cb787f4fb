#!/usr/bin/env bash
# Checks the lab without running it (no Docker engine needed):
#   1. docker-compose.yml is valid for the default profile and for the
#      "scale-out" and "freeswitch" profiles (docker-compose config -q);
#   2. lab/check_lab.py: every path, Dockerfile COPY source and secret the
#      file refers to exists, the Asterisk configuration in asterisk-conf/
#      has a shape Asterisk accepts and hangs together, and the lab agrees
#      with itself (ARI password vs. its hash, dial routes vs. endpoints, ...).
#
#   bash lab/check-compose.sh          from anywhere; exit status 0 = good
#   CHECK_STRICT=1 bash lab/check-compose.sh
#                                      also fail on paths written elsewhere
#                                      (./cmd/convoice, freeswitch-conf/)
#
# Uses Debian's docker-compose package (1.29, the Python one), installing it
# when missing and running as root. Any later Compose reads the same file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "check-compose: installing docker-compose (Debian package)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
	else
		echo "check-compose: docker-compose is missing: apt-get install docker-compose" >&2
		exit 1
	fi
fi

# Compose must not pick up a developer's own settings.
unset COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME
export COMPOSE_PROJECT_NAME=convoice-lab-check

fail=0
for profile in "" scale-out freeswitch; do
	label=${profile:-default}
	args=(-f docker-compose.yml)
	[ -n "$profile" ] && args+=(--profile "$profile")
	if out=$(docker-compose "${args[@]}" config -q 2>&1); then
		echo "ok    docker-compose config -q (profile $label)"
		# Warnings (e.g. unset variables) are printed even on success.
		[ -n "$out" ] && echo "$out" | sed 's/^/      /'
	else
		echo "FAIL  docker-compose config -q (profile $label)"
		echo "$out" | sed 's/^/      /'
		fail=1
	fi
done

# The lab's shell scripts at least parse.
for script in lab/*.sh lab/*/*.sh; do
	[ -f "$script" ] || continue
	shell=sh
	head -n 1 "$script" | grep -q bash && shell=bash
	if "$shell" -n "$script"; then
		echo "ok    $shell -n $script"
	else
		echo "FAIL  $shell -n $script"
		fail=1
	fi
done

# Prefer the system Python, where Debian's docker-compose put PyYAML.
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
	py=/usr/bin/python3
fi
if "$py" lab/check_lab.py; then
	echo "ok    lab/check_lab.py"
else
	echo "FAIL  lab/check_lab.py"
	fail=1
fi

if [ "$fail" = 0 ]; then
	echo "check-compose: all good"
else
	echo "check-compose: FAILED" >&2
fi
exit "$fail"
