// Package link is the supervision both drivers share: reconnect loop, link state, read watchdog, tombstone sweep.
// It knows no protocol and no PBX — never ARI, the event socket, emulators, storage or the controller.
package link
