#!/bin/sh
# Runs once while the lab image is built (lab/asterisk/Dockerfile): starts
# Asterisk with convoice's configuration and checks that what convoice needs
# is really loaded. Any failure fails the image build, with the log shown.
set -u

fail() {
	echo "asterisk smoke test: FAIL: $*" >&2
	tail -n 60 /var/log/asterisk/messages.log 2>/dev/null >&2
	asterisk -rx 'core stop now' >/dev/null 2>&1
	exit 1
}
cli() { asterisk -rx "$1" 2>&1; }

asterisk -U asterisk -G asterisk || fail "asterisk did not start"

i=0
until asterisk -rx 'core waitfullybooted' >/dev/null 2>&1; do
	i=$((i + 1))
	[ "$i" -ge 60 ] && fail "not fully booted after 30 s (a 'require'd module missing?)"
	sleep 0.5
done

cli 'core show version'
# ARI: the HTTP server, the user convoice, the resources.
cli 'http show status' | grep -q 'Enabled and Bound' || fail "HTTP server not listening (http.conf)"
cli 'ari show users' | grep -q 'convoice' || fail "ARI user convoice missing (ari.conf)"
cli 'module show like res_ari_channels' | grep -q 'res_ari_channels' || fail "res_ari_channels not loaded"
# Talking indicators need TALK_DETECT.
cli 'core show function TALK_DETECT' | grep -q 'No function by that name' && fail "TALK_DETECT missing: func_talkdetect.so not loaded"
cli 'module show like func_talkdetect' | grep -q 'func_talkdetect' || fail "func_talkdetect not loaded"
cli 'module show like bridge_softmix' | grep -q 'bridge_softmix' || fail "bridge_softmix not loaded"
# PJSIP objects.
endpoints=$(cli 'pjsip show endpoints')
for e in trunk lab 1001 1002 1003; do
	echo "$endpoints" | grep -q "Endpoint:  *$e[ /]" || fail "PJSIP endpoint $e missing (pjsip.conf)"
done
cli 'pjsip show transports' | grep -q 'transport-udp' || fail "PJSIP transport missing"
# The lab dialplan.
cli 'dialplan show lab-carrier' | grep -q "'+12025550486'" || fail "context lab-carrier incomplete (extensions.conf)"
cli 'dialplan show lab-phones' | grep -q "'_100\[1-3\]'" || fail "context lab-phones incomplete (extensions.conf)"
# The old SIP driver must not hold port 5060.
cli 'module show like chan_sip.so' | grep -q 'chan_sip.so' && fail "chan_sip is loaded (modules.conf)"

asterisk -rx 'core stop now' >/dev/null 2>&1
i=0
while [ -S /run/asterisk/asterisk.ctl ] || [ -S /var/run/asterisk/asterisk.ctl ]; do
	i=$((i + 1))
	[ "$i" -ge 20 ] && break
	sleep 0.5
done
# Leave no run-time state in the image.
rm -f /var/log/asterisk/messages.log /var/log/asterisk/security.log /run/asterisk/*
echo "asterisk smoke test: OK"
