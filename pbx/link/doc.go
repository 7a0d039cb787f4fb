// Package link is the supervision both drivers share: the reconnect loop, the link state behind pbx.Status, the read watchdog of a live connection and the sweep of tombstones.
// It knows no protocol and no PBX: never ARI, the event socket, the emulators, storage or the controller — the drivers bring those.
package link
