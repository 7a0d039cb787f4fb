// Package core is the vocabulary every part of the controller shares: the
// Error a request fails with, the Actor who makes it, ids and secrets, the
// event log and its hub, the views of calls that several parts show, and
// the membership check. It holds no behaviour of the product: no dialing,
// no rule, no PBX; it imports storage only.
package core
