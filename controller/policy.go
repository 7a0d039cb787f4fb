package controller

import "context"

// DialCheck is what the dial policy is asked before any leg is written or
// dialed.
type DialCheck struct {
	Actor          Actor
	ConversationID string
	UserID         *string
	GuestID        *string
	// Number is validated E.164 (or a configured extension).
	Number string
	// Source: "published", "new_number", "redirect" or "guest".
	Source string
}

// PolicyConfig is the dial policy's configuration (issue 6 fills it in).
type PolicyConfig struct{}

// checkDial applies the dial policy (issue 6 fills it in); nil allows.
func (c *Controller) checkDial(ctx context.Context, d DialCheck) error { return nil }
