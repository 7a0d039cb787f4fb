// Package conversations is the IM side of convoice: conversations and
// their participants, the presenter, messages and the stored event log.
// Calls are not here: leaving hangs one's call up through the engine.
package conversations
