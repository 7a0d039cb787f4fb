// Package guests is join links ("Meet Now → Invite Using Email") and the
// guests who come with them: joining, the lobby, the guest's own session
// and event stream. Calls are placed and hung up by the engine.
//
// A participant makes a link; its token (256 random bits) is shown once, in
// the URL of the answer, and stored only as its SHA-256. Whoever opens the
// URL gives a name and a number and becomes a guest of that one
// conversation: a guest session (a second token, also stored only hashed),
// and — unless the link asks for admission — a call placed at once. With
// admission the guest waits in a lobby until a participant admits (then the
// call is placed) or refuses them (never dialed).
//
// Expired, revoked, used-up and unknown tokens give one and the same
// answer; join attempts are counted per client address in the database.
package guests
