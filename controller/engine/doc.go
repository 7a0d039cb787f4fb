// Package engine is the call engine: dialing (after the dial policy and its
// counters), the PBX's events applied to legs and conferences
// (transitions.go), hang-up, mute and room ends on the PBX, resync and the
// watchdog, and the nodes' leases and ownership. Who may ask for a call and
// what people see of it is not here: that is audio's and guests'.
package engine
