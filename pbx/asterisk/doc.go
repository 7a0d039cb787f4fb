// Package asterisk is the pbx.Driver for Asterisk over ARI: REST, the events websocket, their mapping onto the contract.
// Never the FreeSWITCH driver, an emulator or the controller; supervision shared with FreeSWITCH is in pbx/link.
//
// # What comes from github.com/CyCoreSystems/ari/v5 and what does not
//
// The library's value types (ari.ChannelData, ari.BridgeData,
// ari.ApplicationData, ari.OriginateRequest, ari.DateTime) are used as they
// are: they match what Asterisk 22 sends. Its event decoder
// (ari.DecodeEvent) is not on the event path any more: it parses every
// frame three times (plus once more per channel object), which was the
// largest CPU cost of handling events; the driver reads each frame once into
// a struct of the fields it acts on (events.go), named as in Asterisk's
// events.json. Its connection handling (client/native, v5.3.1) is not used,
// because it cannot give the guarantees a telephony control plane needs:
//
//   - native.Connect blocks until the first websocket connection succeeds, so
//     a service started while Asterisk is down would hang in start-up;
//   - later websocket drops are redialed silently every second, so the caller
//     never learns that events were missed and cannot resync;
//   - REST calls go through a zero-value http.Client: no timeout, so a stalled
//     Asterisk hangs the caller (our Dial would hang an HTTP request);
//   - a non-2xx answer becomes "Non-2XX response: <status>" with the body
//     ({"error":"Allocation failed"}) dropped, and some calls wrap the error
//     with eris so even the status is lost;
//   - its event bus gives each subscription a 100-slot buffer that drops
//     silently when full, and an empty key matches every event.
//
// So this package owns the websocket (golang.org/x/net/websocket, the same
// package ari uses) with its own supervision — reconnect with capped backoff,
// a link-up/link-down event on every change, ping-based half-open detection,
// resync after every reconnect — and a small REST client with a timeout on
// every request and errors that keep the HTTP status and Asterisk's message.
// Every import of the ari module stays inside this package, so moving to
// another major version is a change here only.
//
// # Events
//
// Channel ids and bridge ids are ours (leg id, conference id), so every
// event maps to a leg without a lookup. Frames are decoded and handed to a
// few worker goroutines, sharded by channel id, each with a bounded queue:
// the events of one channel are handled in order, a slow channel does not
// block the others, and an overflow (or an undecodable frame) is counted in
// Status().LostEvents and reported as pbx.EventLost after the driver has
// resynced — never dropped silently.
//
// # Half-open detection
//
// Every PingInterval (default 2 s) the driver sends a websocket ping frame and
// a REST GET /asterisk/ping (bounded by PingInterval). A round is answered
// when a frame (the pong or any event) arrived on the websocket and the REST
// ping got an answer from a booted Asterisk before the next round: the first
// proves the websocket's TCP connection is alive (x/net/websocket swallows
// pongs, so the driver watches the bytes read on the connection), the second
// that Asterisk is not wedged behind a live socket (an answer to any other
// REST request during the round counts too: a busy Asterisk may answer the
// ping itself late, and it is not wedged). After one missed round
// Status is not Ready (Dial fails fast with pbx.ErrUnavailable); after two
// consecutive missed rounds the websocket is closed, pbx.EventLinkDown is
// emitted and the driver reconnects. A peer that stops answering is
// therefore reported not ready within 2×PingInterval and link-down within
// 3×PingInterval (4 s and 6 s by default).
package asterisk
